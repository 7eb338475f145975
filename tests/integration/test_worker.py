"""`mendel worker` as a driver Pod runs it: configured by environment, reporting through
the termination message, exit code 2 for a spec that can never run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.support.tiny_models import save_family, write_jsonl

pytestmark = pytest.mark.slow


def run_worker(tmp_path: Path, resource: dict, **env: str) -> tuple[int, dict]:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(resource))
    log = tmp_path / "termination-log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MENDEL_")}
    environment.update({
        "MENDEL_SPEC_PATH": str(spec_path), "MENDEL_TERMINATION_LOG": str(log),
        "MENDEL_WORK_DIR": str(tmp_path / "work"), "MENDEL_UID": "uid-1234",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", **env,
    })
    result = subprocess.run([sys.executable, "-m", "mendel.cli", "worker"], env=environment,
                            capture_output=True, text=True, timeout=600)
    return result.returncode, json.loads(log.read_text())


def test_worker_runs_qdevolution_and_writes_summary(tmp_path: Path) -> None:
    paths = save_family(tmp_path / "models", ["a", "b"])
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1=", "answer": "1"}])
    tasks = [{"name": n, "expert": n, "evaluator": {
        "type": "generation", "maxNewTokens": 1, "dataset": {"uri": str(data)}}} for n in "ab"]
    resource = {"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolution",
                "metadata": {"name": "w", "namespace": "team"},
                "spec": {"baseModel": {"uri": str(paths["base"])},
                         "experts": [{"name": n, "uri": str(paths[n])} for n in "ab"],
                         "tasks": tasks, "precision": "float32", "budget": {"generations": 2}}}
    code, summary = run_worker(tmp_path, resource)
    assert code == 0, summary
    assert summary["generations"] == 2 and summary["runId"]


def test_worker_exits_2_naming_the_field(tmp_path: Path) -> None:
    resource = {"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolution",
                "metadata": {"name": "w"}, "spec": {"baseModel": {"uri": "org/base"}}}
    code, summary = run_worker(tmp_path, resource)
    assert code == 2
    assert any(field.startswith("spec.experts") for field in summary["fields"])
