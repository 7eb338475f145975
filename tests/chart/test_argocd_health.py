"""The Argo CD health checks in charts/mendel/resource_customizations, run offline.

Argo CD runs a check from argocd-cm in gopher-lua (Lua 5.1 plus goto) with only the base,
table, package and a safe os library: no string or math library. LuaJIT (lupa.luajit21) is
the same language; the sandbox below takes the rest away, decodes the object the way Argo CD
does (null dropped, every number a float) and treats the result as Argo CD does (an unknown
status becomes Unknown). Each kind's health_test.yaml is Argo CD's upstream test layout, so the
same directories also run under `go test ./util/lua/` in a checkout of argo-cd.

Also here: the chart renders exactly these scripts for argocd-cm, the documented ways to merge
them work with the real kubectl and Helm, and the GitOps examples are valid.
"""

from __future__ import annotations

import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from mendel.api.kinds import API_VERSION, KINDS
from mendel.api.status import Phase
from tests.chart.support import CHART, REPO, find, one, template, tool_path
from tests.chart.test_schema import error_paths

try:
    from lupa import luajit21
except ImportError:  # pragma: no cover - depends on the environment
    pytest.fail("the Argo CD health tests need lupa: pip install 'lupa>=2.4' (the dev extra)",
                pytrace=False)

CHECKS = CHART / "resource_customizations" / "mendel.dev"
KIND_DIRS = sorted(p.name for p in CHECKS.iterdir() if p.is_dir())
VALID_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
INVALID_STATUS = "Lua returned an invalid health status"  # argo-cd util/lua/lua.go
CONFIG_KEY = "resource.customizations.health.mendel.dev_{}"

# Lua side of the sandbox: argocd-cm scripts get base, table, package and os.time/os.date;
# `string`, `math`, `io` and `debug` do not exist. This sandbox is a little stricter (no file or
# code loading, no require), so a script that passes here also runs there.
SANDBOX = """
local source, obj = ...
local env = {obj = obj, _VERSION = _VERSION,
  os = {time = os.time, date = os.date},
  table = {concat = table.concat, insert = table.insert, maxn = table.maxn,
           remove = table.remove, sort = table.sort}}
for _, name in ipairs({"assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
    "print", "rawequal", "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring",
    "type", "unpack", "xpcall"}) do
  env[name] = _G[name]
end
env._G = env
local fn, err = loadstring(source, "=health.lua")
if fn == nil then error(err, 0) end
setfenv(fn, env)
return fn()
"""


def argo_decode(value: Any) -> Any:
    """JSON to what Argo CD's decodeValue hands Lua: nulls dropped, every number a float."""
    if isinstance(value, dict):
        return {k: argo_decode(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [argo_decode(v) for v in value if v is not None]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def run_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run a health script on an object as Argo CD does; {status, message} ("" when unset)."""
    runtime = luajit21.LuaRuntime(unpack_returned_tuples=True)
    # Before the sandbox is compiled: no string library, and no string methods (`s:find`).
    runtime.execute("getmetatable('').__index = nil; string = nil; math = nil; io = nil; "
                    "debug = nil")
    sandbox = runtime.eval("function(...) " + SANDBOX + " end")
    result = sandbox(script, runtime.table_from(argo_decode(obj), recursive=True))
    if result is None:
        return {"status": "", "message": ""}  # Argo CD: an empty HealthStatus
    if luajit21.lua_type(result) != "table":
        raise TypeError(f"health.lua returned a {luajit21.lua_type(result) or type(result)}, "
                        "Argo CD expects a table")
    status, message = result["status"] or "", result["message"] or ""
    if not isinstance(status, str) or not isinstance(message, str):
        raise TypeError(f"status and message must be strings, got {status!r}, {message!r}")
    if status not in VALID_STATUSES:
        return {"status": "Unknown", "message": INVALID_STATUS}
    return {"status": status, "message": message}


def health_tests(kind: str) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(
        (CHECKS / kind / "health_test.yaml").read_text())["tests"]
    return tests


def cases() -> list[Any]:
    return [pytest.param(kind, test, id=f"{kind}-{Path(test['inputPath']).stem}")
            for kind in KIND_DIRS for test in health_tests(kind)]


def test_argocd_health_has_a_check_per_kind() -> None:
    assert sorted(KINDS) == KIND_DIRS, "a kind without an Argo CD health check (or a stray one)"
    for kind in KIND_DIRS:
        for name in ("health.lua", "health_test.yaml", "testdata"):
            assert (CHECKS / kind / name).exists(), f"{kind}/{name} is missing"


def test_argocd_health_scripts_are_identical_copies() -> None:
    # One status shape, one script: QDEvolution's copy is the one to edit.
    reference = (CHECKS / "QDEvolution" / "health.lua").read_text()
    for kind in KIND_DIRS:
        assert (CHECKS / kind / "health.lua").read_text() == reference, (
            f"{kind}/health.lua differs from QDEvolution/health.lua; edit QDEvolution's and "
            f"copy it: cp {CHECKS.relative_to(REPO)}/QDEvolution/health.lua "
            f"{CHECKS.relative_to(REPO)}/{kind}/")


def test_argocd_health_cases_are_the_same_for_every_kind() -> None:
    def shape(kind: str) -> list[tuple[str, str]]:
        return [(t["inputPath"], t["healthStatus"]["status"]) for t in health_tests(kind)]

    for kind in KIND_DIRS:
        assert shape(kind) == shape("QDEvolution"), f"{kind} tests other cases"
        listed = {t["inputPath"] for t in health_tests(kind)}
        on_disk = {f"testdata/{p.name}" for p in (CHECKS / kind / "testdata").glob("*.yaml")}
        assert listed == on_disk, f"{kind}: testdata not listed, or listed but missing"
        for path in on_disk:
            obj = yaml.safe_load((CHECKS / kind / path).read_text())
            assert (obj["apiVersion"], obj["kind"]) == (API_VERSION, kind), f"{kind}/{path}"


def test_argocd_health_cases_cover_every_phase_and_situation() -> None:
    objects = {Path(t["inputPath"]).stem: yaml.safe_load(
        (CHECKS / "QDEvolution" / t["inputPath"]).read_text()) for t in health_tests("QDEvolution")}
    phases = {o["status"].get("phase") for o in objects.values() if "status" in o}
    assert set(typing.get_args(Phase)) <= phases
    assert {"no-status", "stale-generation", "refused-change", "running-mlflow-unavailable",
            "pending-unschedulable", "running-progress", "running-progress-no-total",
            "unknown-phase"} <= set(objects)


@pytest.mark.parametrize(("kind", "test"), cases())
def test_argocd_health_script_gives_the_expected_health(kind: str, test: dict[str, Any]) -> None:
    script = (CHECKS / kind / "health.lua").read_text()
    obj = yaml.safe_load((CHECKS / kind / test["inputPath"]).read_text())
    expected = {"status": test["healthStatus"]["status"],
                "message": test["healthStatus"].get("message", "")}
    assert run_health(script, obj) == expected


# The sandbox must refuse what Argo CD refuses, or the tests above prove nothing.
@pytest.mark.parametrize(("code", "error"), [
    pytest.param('string.find(obj.metadata.name, "a")', "global 'string'", id="string-library"),
    pytest.param('obj.metadata.name:find("a")', "attempt to index", id="string-method"),
    pytest.param("math.floor(1.5)", "global 'math'", id="math-library"),
    pytest.param('os.getenv("HOME")', "field 'getenv'", id="os-getenv"),
    pytest.param('os.execute("true")', "field 'execute'", id="os-execute"),
    pytest.param('io.open("/etc/hostname")', "global 'io'", id="io-library"),
])
def test_argocd_sandbox_refuses_what_argocd_cm_scripts_cannot_use(code: str, error: str) -> None:
    script = f"local x = {code}\nreturn {{status = 'Healthy'}}"
    with pytest.raises(luajit21.LuaError, match=error):
        run_health(script, {"metadata": {"name": "a"}})


@pytest.mark.parametrize(("script", "expected"), [
    pytest.param('return {status = "Good", message = "fine"}',
                 {"status": "Unknown", "message": INVALID_STATUS}, id="invalid-status"),
    pytest.param("return {}", {"status": "Unknown", "message": INVALID_STATUS}, id="no-status"),
    pytest.param("return nil", {"status": "", "message": ""}, id="nil"),
    pytest.param('return {status = "Healthy", message = tostring(obj.n) .. "/" .. obj.n}',
                 {"status": "Healthy", "message": "120/120"}, id="whole-numbers-print-whole"),
    pytest.param('return {status = "Healthy", message = tostring(obj.gone)}',
                 {"status": "Healthy", "message": "nil"}, id="null-is-nil"),
    pytest.param('local t = {}; table.insert(t, os.date("!%Y", 0))\n'
                 'return {status = "Degraded", message = table.concat(t) .. #obj.list}',
                 {"status": "Degraded", "message": "19702"}, id="table-and-safe-os"),
])
def test_argocd_sandbox_treats_results_as_argocd_does(script: str,
                                                      expected: dict[str, str]) -> None:
    obj = {"n": 120, "gone": None, "list": ["a", "b"]}
    assert run_health(script, obj) == expected


def test_argocd_health_script_prints_whole_numbers_from_floats() -> None:
    script = (CHECKS / "QDEvolution" / "health.lua").read_text()
    obj = {"metadata": {"generation": 2}, "status": {
        "observedGeneration": 2, "phase": "Running",
        "progress": {"step": 7, "total": 300, "percent": 2.4}}}
    assert run_health(script, obj)["message"] == "Step 7/300 (2%)"


# The chart renders the scripts for argocd-cm.
def rendered(helm: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    result = template(helm, values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_chart_renders_no_argocd_health_by_default(helm: Path) -> None:
    assert not [o for o in find(rendered(helm, {}), "ConfigMap")
                if o["metadata"]["name"].endswith("-argocd-health")]


@pytest.mark.parametrize("namespace", ["argocd", "gitops"])
def test_chart_renders_argocd_health_scripts_as_argocd_cm_keys(helm: Path,
                                                               namespace: str) -> None:
    values = {"argocd.healthChecks.enabled": True, "argocd.namespace": namespace}
    config = one(rendered(helm, values), "ConfigMap", "r1-mendel-argocd-health", namespace)
    assert config["data"] == {CONFIG_KEY.format(kind): (CHECKS / kind / "health.lua").read_text()
                              for kind in KIND_DIRS}


@pytest.mark.parametrize(("values", "path"), [
    pytest.param({"argocd.healthChecks.enable": True}, ("argocd", "healthChecks"), id="typo"),
    pytest.param({"argocd.healthChecks.enabled": "yes"}, ("argocd", "healthChecks", "enabled"),
                 id="not-a-bool"),
    pytest.param({"argocd.namespace": "Argo_CD"}, ("argocd", "namespace"), id="bad-namespace"),
])
def test_schema_rejects_bad_argocd_values(helm: Path, values: dict[str, Any],
                                          path: tuple[str, ...]) -> None:
    result = template(helm, values)
    assert result.returncode != 0, f"accepted {values}"
    assert path in [found for found, _ in error_paths(result.stderr)], result.stderr


# The ways docs/gitops.md gives to get the scripts into argocd-cm, with the real tools.
def test_docs_kustomize_patch_merges_the_scripts_into_argocd_cm(tmp_path: Path) -> None:
    kubectl = str(tool_path("kubectl"))
    argocd_cm = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "argocd-cm", "namespace": "argocd",
                              "labels": {"app.kubernetes.io/part-of": "argocd"}},
                 "data": {"url": "https://argocd.example.com"}}
    (tmp_path / "argocd-cm.yaml").write_text(yaml.safe_dump(argocd_cm))
    patch = subprocess.run(
        [kubectl, "create", "configmap", "argocd-cm", "--namespace", "argocd",
         "--dry-run=client", "-o", "yaml",
         *[f"--from-file={CONFIG_KEY.format(kind)}={CHECKS / kind / 'health.lua'}"
           for kind in KIND_DIRS]],
        capture_output=True, text=True, check=True, timeout=60).stdout
    (tmp_path / "mendel-health.yaml").write_text(patch)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["argocd-cm.yaml"], "patches": [{"path": "mendel-health.yaml"}]}))
    built = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    merged = yaml.safe_load(built.stdout)
    assert merged["metadata"]["labels"] == {"app.kubernetes.io/part-of": "argocd"}
    assert merged["data"] == {"url": "https://argocd.example.com", **{
        CONFIG_KEY.format(kind): (CHECKS / kind / "health.lua").read_text()
        for kind in KIND_DIRS}}


def test_docs_argo_cd_chart_values_take_the_scripts_with_set_file(helm3: Path,
                                                                  tmp_path: Path) -> None:
    # Stand-in for Argo CD's chart: what `--set-file configs.cm.<escaped key>=…` produces.
    chart = tmp_path / "argo-cd"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: argo-cd\nversion: 0.0.1\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argocd-cm}\n"
        "data: {{- toYaml .Values.configs.cm | nindent 2 }}\n")
    flags = [arg for kind in KIND_DIRS for arg in (
        "--set-file", "configs.cm." + CONFIG_KEY.format(kind).replace(".", "\\.")
        + f"={CHECKS / kind / 'health.lua'}")]
    result = subprocess.run([str(helm3), "template", "argocd", str(chart), *flags],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["data"] == {
        CONFIG_KEY.format(kind): (CHECKS / kind / "health.lua").read_text() for kind in KIND_DIRS}
