"""Helpers for the chart tests: the Helm binaries from hack/helm.sh, `helm template` and
lookups in the rendered objects. Shared by tests/chart and tests/cluster/test_chart.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mendel"
HELM_SH = REPO / "hack" / "helm.sh"
HELM_VERSIONS = ("3", "4")


def tool_path(name: str) -> Path:
    """The path `hack/helm.sh path NAME` prints (3, 4 or kubectl), installing first if needed."""
    found = subprocess.run(["bash", str(HELM_SH), "path", name], capture_output=True, text=True)
    if found.returncode != 0:
        installed = subprocess.run(["bash", str(HELM_SH), "install"], capture_output=True,
                                   text=True, timeout=600)
        if installed.returncode != 0:
            pytest.fail(f"hack/helm.sh install failed:\n{installed.stderr}", pytrace=False)
        found = subprocess.run(["bash", str(HELM_SH), "path", name], capture_output=True,
                               text=True, check=True)
    return Path(found.stdout.strip())


def set_args(values: dict[str, Any] | None) -> list[str]:
    """Values as --set-json flags: exact JSON types, none of --set's type guessing."""
    return [arg for key, value in (values or {}).items()
            for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def template(helm: Path, values: dict[str, Any] | None = None, *,
             namespace: str = "mendel-system", release: str = "r1",
             chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    """Run `helm template` (never fails by itself: check returncode)."""
    return subprocess.run(
        [str(helm), "template", release, str(chart), "--namespace", namespace,
         *set_args(values)],
        capture_output=True, text=True, timeout=60,
    )


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    """The objects of a kind, optionally with this name and namespace."""
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None,
        namespace: str | None = None) -> dict[str, Any]:
    """The single object of a kind (and name, namespace); fails when there are 0 or 2+."""
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


class Helm:
    """One Helm binary against a cluster (the plane), with its own config/cache dirs."""

    def __init__(self, version: str, kubeconfig: Path, home: Path, server_minor: int) -> None:
        self.version = version
        self.binary = tool_path(version)
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                    "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}
        # Only for servers whose OpenAPI lacks x-kubernetes-validations (< 1.25): Helm checks
        # rendered templates against it, and Helm 4's server-side apply fails on it too.
        self.old_server_flags = [] if server_minor >= 25 else (
            ["--disable-openapi-validation"] if version == "3"
            else ["--disable-openapi-validation", "--server-side=false"])

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binary), *args], env=self.env, capture_output=True,
                                text=True, timeout=120)
        if check:
            assert result.returncode == 0, f"helm{self.version} {' '.join(args)}:\n{result.stderr}"
        return result

    def install(self, release: str, namespace: str, chart: Path = CHART,
                values: dict[str, Any] | None = None, verb: str = "install") -> str:
        return self(verb, release, str(chart), "--namespace", namespace,
                    *self.old_server_flags, *set_args(values)).stdout
