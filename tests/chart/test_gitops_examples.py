"""examples/gitops: the Argo CD Applications and the Flux objects that install Mendel from
the chart and sync a folder of experiments, and the experiments themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mendel.api.kinds import API_VERSION
from mendel.api.validation import load_documents, validate_resource
from tests.chart.support import REPO, one
from tests.chart.test_argocd_health import rendered

EXAMPLES = REPO / "examples" / "gitops"


# examples/gitops: the Argo CD and Flux objects, and experiments the operator accepts.
def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(str(path.relative_to(REPO)), doc) for path in sorted(EXAMPLES.rglob("*.yaml"))
            for doc in load_documents(path.read_text())]


GITOPS_KINDS = {
    ("argoproj.io/v1alpha1", "Application"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
}


def test_gitops_examples_use_current_apis() -> None:
    found = {(doc["apiVersion"], doc["kind"]) for _, doc in example_documents()}
    assert found >= GITOPS_KINDS
    for path, doc in example_documents():
        if doc["apiVersion"] != API_VERSION:
            assert (doc["apiVersion"], doc["kind"]) in GITOPS_KINDS, f"{path}: {doc['kind']}"
            assert doc["metadata"]["namespace"] in ("argocd", "flux-system"), path


def test_gitops_examples_point_at_the_chart_and_the_experiments() -> None:
    docs = [doc for _, doc in example_documents()]
    apps = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Application"}
    assert sorted(source["source"]["path"] for source in apps.values()) == [
        "charts/mendel", "examples/gitops/experiments"]
    assert all(a["source"]["repoURL"] == "https://github.com/example/mendel.git"
               for a in apps.values())
    release = next(d["spec"] for d in docs if d["kind"] == "HelmRelease")
    assert release["chart"]["spec"]["chart"] == "./charts/mendel"
    assert release["chart"]["spec"]["sourceRef"]["kind"] == "GitRepository"
    kustomization = next(d["spec"] for d in docs if d["kind"] == "Kustomization")
    assert kustomization["path"] == "./examples/gitops/experiments"
    assert kustomization["wait"] is True
    for path in ("charts/mendel", "examples/gitops/experiments"):
        assert (REPO / path).is_dir()


def test_gitops_example_chart_values_are_accepted(helm3: Path) -> None:
    app = next(d for _, d in example_documents() if d["kind"] == "Application"
               and d["spec"]["source"]["path"] == "charts/mendel")
    values = app["spec"]["source"]["helm"]["valuesObject"]
    one(rendered(helm3, values), "ConfigMap", "r1-mendel-argocd-health", "argocd")


def test_gitops_example_experiments_are_valid() -> None:
    experiments = [(path, doc) for path, doc in example_documents()
                   if doc["apiVersion"] == API_VERSION]
    assert experiments, "examples/gitops/experiments/ holds no Mendel resource"
    for path, doc in experiments:
        assert path.startswith("examples/gitops/experiments/"), path
        errors = validate_resource(doc)
        assert errors == [], f"{path}: " + "; ".join(str(e) for e in errors)
