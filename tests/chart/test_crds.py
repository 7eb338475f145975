"""The chart's CRD templates: generated from the same models as crds/, current, and rendering
back to exactly the CRDs in crds/ plus the chart's labels and keep annotation."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mendel.api.crd import crds, render_chart_template
from tests.chart.conftest import Render
from tests.chart.support import CHART, REPO, find

GENERATED = crds()
TEMPLATES = CHART / "templates" / "crds"


@pytest.mark.parametrize("filename", sorted(GENERATED), ids=str)
def test_chart_crd_template_matches_models(filename: str) -> None:
    committed = (TEMPLATES / filename).read_text()
    assert committed == render_chart_template(GENERATED[filename]), (
        f"charts/mendel/templates/crds/{filename} is stale: run hack/generate-crds.sh")


def test_no_stray_chart_crd_templates() -> None:
    assert sorted(p.name for p in TEMPLATES.glob("*")) == sorted(GENERATED)


def without_chart_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    crd = dict(crd, metadata=dict(crd["metadata"]))
    crd["metadata"].pop("annotations", None)
    crd["metadata"]["labels"] = {k: v for k, v in crd["metadata"]["labels"].items()
                                 if k.startswith("app.kubernetes.io/") and k not in (
                                     "app.kubernetes.io/instance", "app.kubernetes.io/version",
                                     "app.kubernetes.io/managed-by")}
    return crd


def test_rendered_chart_crds_equal_crds_directory(render: Render) -> None:
    rendered = {c["metadata"]["name"]: c for c in find(render(), "CustomResourceDefinition")}
    for filename in GENERATED:
        plain = yaml.safe_load((REPO / "crds" / filename).read_text())
        assert without_chart_metadata(rendered[plain["metadata"]["name"]]) == plain


def test_template_escapes_go_template_braces() -> None:
    document = dict(GENERATED["qdevolutions.mendel.dev.yaml"])
    document["spec"] = dict(document["spec"], group="{{ .Values.evil }}")
    text = render_chart_template(document)
    assert '{{ "{{" }} .Values.evil {{ "}}" }}' in text
