"""Lineage in a real MLflow store: children name their parents, the tree walks back to the
experts, and a restarted recorder does not log a genome twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mendel.tracking.lineage import ModelLineage, resolve_model_id, walk_lineage


@dataclass(frozen=True)
class FakeGenome:
    id: str
    operator: str = "expert"
    generation: int = -1
    parents: tuple[str, ...] = ()
    parent_weights: tuple[float, ...] = ()
    seed: int | None = None
    quality_task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "parents": list(self.parents)}


@pytest.fixture()
def mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The registry resolves model ids through the configured tracking server, as in a Pod.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("lineage", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment)
    return client, run.info.run_id, experiment


def record_family(lineage: ModelLineage) -> dict[str, str]:
    ids = {}
    ids["a"] = lineage.record(FakeGenome("expert-a"), {"add": 0.9, "sort": 0.1}, {"add": (3,)})
    ids["b"] = lineage.record(FakeGenome("expert-b"), {"add": 0.2, "sort": 0.8}, {"sort": (1,)})
    child = FakeGenome("g000001", "linear+svd", 1, ("expert-a", "expert-b"), (0.6, 0.4), 17,
                       "add")
    ids["child"] = lineage.record(child, {"add": 0.7, "sort": 0.6}, {"add": (5,)})
    grandchild = FakeGenome("g000002", "linear+svd", 2, ("g000001", "expert-b"), (0.5, 0.5),
                            18, "sort")
    ids["grandchild"] = lineage.record(grandchild, {"add": 0.6, "sort": 0.9}, {"sort": (4,)})
    return ids


def test_walk_lineage_reaches_the_experts(mlflow_run: tuple[MlflowClient, str, str]) -> None:
    client, run_id, experiment = mlflow_run
    ids = record_family(ModelLineage(client, run_id, experiment))
    tree = walk_lineage(client, ids["grandchild"])
    assert tree.genome_id == "g000002"
    assert tree.scores == {"add": pytest.approx(0.6), "sort": pytest.approx(0.9)}
    assert [p.genome_id for p in tree.parents] == ["g000001", "expert-b"]
    child = tree.parents[0]
    assert child.operator == "linear+svd" and child.generation == 1
    assert [p.genome_id for p in child.parents] == ["expert-a", "expert-b"]
    assert all(not p.parents for p in child.parents)


def test_recorder_reload_prevents_duplicates(mlflow_run: tuple[MlflowClient, str, str]) -> None:
    client, run_id, experiment = mlflow_run
    ids = record_family(ModelLineage(client, run_id, experiment))
    restarted = ModelLineage(client, run_id, experiment)
    restarted.reload()
    assert restarted.model_ids == {"expert-a": ids["a"], "expert-b": ids["b"],
                                   "g000001": ids["child"], "g000002": ids["grandchild"]}
    assert restarted.record(FakeGenome("g000001"), {}) == ids["child"]
    models = client.search_logged_models([experiment])
    assert len(models) == 4


def test_registered_final_model_resolves_to_its_lineage(
    mlflow_run: tuple[MlflowClient, str, str], tmp_path: Path
) -> None:
    client, run_id, experiment = mlflow_run
    lineage = ModelLineage(client, run_id, experiment)
    ids = record_family(lineage)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"not really weights")
    lineage.attach_weights("g000002", weights)
    client.create_registered_model("merged")
    version = client.create_model_version("merged", f"models:/{ids['grandchild']}",
                                          model_id=ids["grandchild"])
    client.set_registered_model_alias("merged", "candidate", version.version)
    model_id = resolve_model_id(client, "models:/merged@candidate")
    assert model_id == ids["grandchild"]
    assert walk_lineage(client, model_id).has_weights
    assert resolve_model_id(client, f"models:/merged/{version.version}") == model_id
