"""Static checks of the container images' Dockerfiles (images/*.Dockerfile).

Why: an image setting MLflow's client timeouts in ENV silently overrode the operator's own
outage settings (20 Jobs with MLflow hung took 71 s instead of 13.6 s), and an image running as
root, or pinned to a registry the user cannot reach, only shows up in a cluster. These checks
read the Dockerfiles in milliseconds; hack/build-images.sh builds and smoke-tests the images.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from mendel.controller.runtime.operator import MLFLOW_CLIENT_ENV

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
ENTRYPOINTS = {
    "operator.Dockerfile": ["mendel", "operator"],
    "worker.Dockerfile": ["mendel", "worker"],
    "worker-cpu.Dockerfile": ["mendel", "worker"],
}
# Cache locations that must follow HOME (/tmp, the writable emptyDir), never the image's root.
CACHE_VARS = {"HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME",
              "TRITON_CACHE_DIR", "MPLCONFIGDIR", "PIP_CACHE_DIR"}


@dataclass
class Stage:
    """One FROM ... block: its base, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Every variable the stage's ENV lines set (later lines win)."""
        out: dict[str, str] = {}
        for op, args in self.instructions:
            if op == "ENV":
                out.update(parse_env(args))
        return out


@dataclass
class Dockerfile:
    """A parsed Dockerfile: global ARGs (before the first FROM) and stages."""

    global_args: dict[str, str]
    stages: list[Stage]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            op, _, args = full.partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def parse_env(args: str) -> dict[str, str]:
    """Variables of one ENV instruction, in both the `K=V K2=V2` and the legacy `K V` form."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def parse(text: str) -> Dockerfile:
    """Split a Dockerfile into global ARGs and stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for op, args in instructions(text):
        if op == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if op == "ARG":
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append((op, args))
    return Dockerfile(global_args, stages)


def forbidden_env(dockerfile: Dockerfile) -> list[str]:
    """MLflow client settings set by ENV in any stage (they would override the operator's)."""
    keys = set(MLFLOW_CLIENT_ENV)
    return sorted(key for stage in dockerfile.stages for key in stage.env()
                  if key in keys or key.startswith("MLFLOW_HTTP_REQUEST_"))


def final_user(dockerfile: Dockerfile) -> str | None:
    """The USER in effect at the end of the final stage, if any."""
    users = [args for op, args in dockerfile.stages[-1].instructions if op == "USER"]
    return users[-1] if users else None


def bases_not_from_args(dockerfile: Dockerfile) -> list[str]:
    """FROM lines that name an image directly instead of a global ARG or an earlier stage."""
    seen: set[str] = set()
    bad = []
    for stage in dockerfile.stages:
        match = re.fullmatch(r"\$\{?(\w+)\}?", stage.base)
        if not ((match and match[1] in dockerfile.global_args) or stage.base in seen):
            bad.append(stage.base)
        if stage.name:
            seen.add(stage.name)
    return bad


def load_requirements_module() -> ModuleType:
    """images/requirements.py, which is a script, not part of the package."""
    spec = importlib.util.spec_from_file_location("image_requirements", IMAGES / "requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_dockerfiles_exist() -> None:
    assert sorted(p.name for p in DOCKERFILES) == sorted(ENTRYPOINTS)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_sets_no_mlflow_client_env(path: Path) -> None:
    assert forbidden_env(parse(path.read_text())) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_final_stage_runs_as_numeric_non_root_user(path: Path) -> None:
    user = final_user(parse(path.read_text()))
    assert user is not None, "the final stage has no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER {user!r} is not numeric (Kubernetes runAsNonRoot needs a UID)"
    assert int(match[1]) != 0 and (match[2] is None or int(match[2]) != 0)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_bases_come_from_args(path: Path) -> None:
    assert bases_not_from_args(parse(path.read_text())) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_final_stage_is_built_elsewhere(path: Path) -> None:
    """Multi-stage: the final stage copies a finished venv and never runs pip."""
    final = parse(path.read_text()).stages[-1]
    assert any(op == "COPY" and args.startswith("--from=") for op, args in final.instructions)
    assert not any(op == "RUN" and "pip" in args for op, args in final.instructions)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_final_stage_suits_a_read_only_root(path: Path) -> None:
    final = parse(path.read_text())
    env = final.stages[-1].env()
    assert env.get("HOME") == "/tmp"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    outside = {k: v for k, v in env.items() if k in CACHE_VARS and not v.startswith("/tmp")}
    assert outside == {}, f"caches inside the read-only image: {outside}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_entrypoint_runs_mendel(path: Path) -> None:
    final = parse(path.read_text()).stages[-1]
    entrypoints = [args for op, args in final.instructions if op == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ENTRYPOINTS[path.name]  # the exec form


DEFECTIVE = """\
FROM python:3.11-slim AS build
RUN pip wheel --wheel-dir /wheels .
FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl
USER mendel
ENV MLFLOW_HTTP_REQUEST_TIMEOUT=10 \\
    MLFLOW_HTTP_REQUEST_MAX_RETRIES=2
"""


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        pytest.param(forbidden_env, ["MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                     "MLFLOW_HTTP_REQUEST_TIMEOUT"], id="mlflow-env"),
        pytest.param(final_user, "mendel", id="user-by-name"),
        pytest.param(bases_not_from_args, ["python:3.11-slim", "python:3.11-slim"],
                     id="literal-bases"),
    ],
)
def test_checks_catch_the_old_defects(check: Callable[[Dockerfile], object],
                                      expected: object) -> None:
    """The checks above flag what the first operator Dockerfile did wrong."""
    assert check(parse(DEFECTIVE)) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param("A=1 B='two words'", {"A": "1", "B": "two words"}, id="key-value"),
        pytest.param("MLFLOW_HTTP_REQUEST_TIMEOUT 10", {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10"},
                     id="legacy"),
    ],
)
def test_parse_env_reads_both_forms(args: str, expected: dict[str, str]) -> None:
    assert parse_env(args) == expected


def test_requirements_expand_self_referencing_extras() -> None:
    module = load_requirements_module()
    pyproject = {"project": {"name": "mendel", "dependencies": ["pydantic"],
                             "optional-dependencies": {"a": ["kopf"], "b": ["mendel[a]", "x"]}}}
    assert module.requirements(pyproject, ["b"]) == ["pydantic", "x", "kopf"]
    with pytest.raises(ValueError, match="unknown extra 'c'"):
        module.requirements(pyproject, ["c"])


def test_requirements_of_the_operator_image_have_no_gpu_stack() -> None:
    module = load_requirements_module()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower()
             for r in module.requirements(pyproject, ["operator"])}
    assert {"kopf", "kubernetes", "mlflow-skinny", "prometheus-client"} <= names
    assert not names & {"torch", "transformers", "peft"}


def test_build_script_tags_images_with_the_project_version() -> None:
    script = ROOT / "hack" / "build-images.sh"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    refs = subprocess.run(["bash", str(script), "refs", "operator", "worker-cpu", "worker"],
                          capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert refs == [f"localhost/mendel-operator:{version}",
                    f"localhost/mendel-worker:{version}-cpu", f"localhost/mendel-worker:{version}"]


def test_build_script_rejects_an_unknown_target() -> None:
    result = subprocess.run(["bash", str(ROOT / "hack" / "build-images.sh"), "refs", "gpu"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "unknown target 'gpu'" in result.stderr
