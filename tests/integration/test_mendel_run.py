"""`mendel run` end to end on micro models: a QDEvolution runs to its budget against a
local MLflow store, registers its final model, the lineage walks back to the experts, and
raising the budget resumes from the checkpoint instead of starting over."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from tests.support.tiny_models import save_family, write_jsonl
from typer.testing import CliRunner

from mendel.cli import app
from mendel.tracking.lineage import resolve_model_id, walk_lineage

pytestmark = pytest.mark.slow


def manifest(root: Path, paths: dict[str, Path], generations: int) -> Path:
    data = write_jsonl(root / "data" / "echo.jsonl",
                       [{"prompt": f"{i}=", "answer": str(i)} for i in range(8)])
    tasks = [
        {"name": name, "expert": name,
         "evaluator": {"type": "generation", "match": "exact", "maxNewTokens": 2,
                       "dataset": {"uri": str(data), "split": "validation"}}}
        for name in ("left", "right")
    ]
    resource = {
        "apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolution",
        "metadata": {"name": "micro"},
        "spec": {
            "baseModel": {"uri": str(paths["base"])},
            "experts": [{"name": n, "uri": str(paths[n])} for n in ("left", "right")],
            "tasks": tasks, "precision": "float32",
            "budget": {"generations": generations}, "checkpoint": {"everyGenerations": 2},
            "tracking": {"mlflow": {"registeredModel": {"name": "micro-merged"}}},
        },
    }
    path = root / f"micro-{generations}.yaml"
    path.write_text(yaml.safe_dump(resource))
    return path


def test_mendel_run_registers_a_final_model_with_lineage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = save_family(tmp_path / "models", ["left", "right"])
    runner = CliRunner()
    result = runner.invoke(app, ["run", "-f", str(manifest(tmp_path, paths, 4))])
    assert result.exit_code == 0, result.output
    assert '"generations": 4' in result.output

    uri = f"sqlite:///{tmp_path / '.mendel' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    model_id = resolve_model_id(client, "models:/micro-merged@candidate")
    root = walk_lineage(client, model_id)
    assert root.genome_id == "final" and root.has_weights

    def leaves(node):  # type: ignore[no-untyped-def]
        return [node] if not node.parents else [x for p in node.parents for x in leaves(p)]

    assert {leaf.genome_id for leaf in leaves(root)} <= {"expert-left", "expert-right"}
    printed = runner.invoke(app, ["lineage", "models:/micro-merged@candidate",
                                  "--tracking-uri", uri])
    assert printed.exit_code == 0, printed.output
    assert "final" in printed.output and "expert-" in printed.output

    runs = client.search_runs([client.get_experiment_by_name("mendel/local/QDEvolution")
                               .experiment_id])
    (run,) = runs
    assert run.data.metrics["progress/step"] == 4
    assert run.data.tags["mendel.checkpoint.step"] == "4"
    heatmaps = [a.path for d in client.list_artifacts(run.info.run_id, "archives")
                for a in client.list_artifacts(run.info.run_id, d.path)]
    assert any(path.endswith("/left.png") for path in heatmaps), heatmaps
    with_weights = [m for m in client.search_logged_models([run.info.experiment_id])
                    if m.tags.get("mendel.has_weights") == "true"]
    assert len(with_weights) >= 2  # the final model and at least one task's elite

    # A larger budget is a new spec: it resumes only within the same run identity, so
    # re-running the same manifest must not start a second run.
    again = runner.invoke(app, ["run", "-f", str(manifest(tmp_path, paths, 4))])
    assert again.exit_code == 0, again.output
    assert len(client.search_runs([run.info.experiment_id])) == 1
