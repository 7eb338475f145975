"""CompressorTraining through `mendel worker`, as a driver Pod runs it: every stage, the
held-out table, the model in MLflow loadable with PEFT, a kill and a resume on a fresh
disk from the run's artifacts, and two torchrun processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from tests.integration.test_worker import run_worker
from tests.support.tiny_models import save_family

from mendel.datasets.facts import facts
from mendel.engines.clara import stage_one_examples
from mendel.tracking import contract

pytestmark = pytest.mark.slow


def resource(base: Path, name: str = "clara", **spec: object) -> dict:
    body = {
        "baseModel": {"uri": str(base)},
        "compression": {"rate": 16, "docMaxTokens": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "stages": {
            "pretraining": {"dataset": {"uri": "builtin:facts", "limit": 8},
                            "learningRate": 1e-3, "batchSize": 4, "microBatchSize": 2},
            "endToEnd": {"dataset": {"uri": "builtin:facts-retrieval", "limit": 4},
                         "learningRate": 1e-3, "batchSize": 2, "microBatchSize": 2,
                         "topK": 2},
        },
        "precision": "float32", "gradientCheckpointing": False, "checkpointEverySteps": 2,
        "evaluation": {"uri": "builtin:facts", "split": "validation", "limit": 3},
        "resources": {"trainer": {"gpus": 0}},
        "tracking": {"mlflow": {"registeredModel": {"name": f"{name}-model"}}},
        **spec,
    }
    return {"apiVersion": "mendel.dev/v1alpha1", "kind": "CompressorTraining",
            "metadata": {"name": name, "namespace": "rag"}, "spec": body}


def stage_one_steps(records: int, batch: int = 4) -> int:
    return -(-len(stage_one_examples(facts("train")[:records])) // batch)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_family(tmp_path_factory.mktemp("models"), [])["base"]


def test_worker_trains_every_stage_evaluates_and_logs_a_peft_model(tmp_path, base):
    code, summary = run_worker(tmp_path, resource(base))
    assert code == 0, summary
    steps = stage_one_steps(8)
    assert summary["stages"]["pretraining"]["steps"] == steps
    assert summary["stages"]["endToEnd"]["steps"] == 2  # 4 records, batch 2
    assert 0.0 <= summary["stages"]["endToEnd"]["recallAtK"] <= 1.0
    scores = summary["evaluation"]["scores"]
    assert set(scores) == {"compressed", "raw_text", "no_context"}
    assert all(s["count"] == 3 for s in scores.values())
    assert summary["evaluation"]["store"]["documents"] == 3
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["runId"])
    assert run.data.tags[contract.TAG_STAGE] == "done"
    assert contract.METRIC_EVAL_SCORE in run.data.metrics
    assert "eval/raw_text/f1" in run.data.metrics
    assert run.data.metrics[contract.METRIC_PROGRESS_STEP] == steps + 2
    version = client.get_model_version_by_alias("clara-model", "candidate")
    assert version.source == summary["model"]["uri"]
    local = Path(client.download_artifacts(summary["runId"], "store", str(tmp_path / "dl")))
    assert (local / "manifest.json").is_file()
    import mlflow.artifacts
    logged = client.get_logged_model(summary["model"]["modelId"])
    assert logged.status == "READY" and logged.source_run_id == summary["runId"]
    model_dir = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=logged.artifact_location, dst_path=str(tmp_path / "model")))
    assert "Held-out QA" in (model_dir / "README.md").read_text()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for adapter in ("compressor", "generator", "query_reasoner"):
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                           str(model_dir / adapter))
        assert adapter == "compressor" or loaded.peft_config["default"].r == 4


def _checkpoint_step(database: Path) -> int:
    try:
        with sqlite3.connect(database) as connection:
            row = connection.execute("SELECT value FROM tags WHERE key = ?",
                                     (contract.TAG_CHECKPOINT_STEP,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def test_a_killed_worker_resumes_on_a_fresh_disk_from_the_runs_artifacts(tmp_path, base):
    spec = resource(base, name="resumed", checkpointEverySteps=1)
    steps = stage_one_steps(8)
    del spec["spec"]["stages"]["endToEnd"]
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    database = tmp_path / "mlflow.db"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MENDEL_")}
    environment.update({
        "MENDEL_SPEC_PATH": str(spec_path), "MENDEL_TERMINATION_LOG": str(tmp_path / "log"),
        "MENDEL_WORK_DIR": str(tmp_path / "pod-1"), "MENDEL_UID": "uid-resume",
        "MLFLOW_TRACKING_URI": f"sqlite:///{database}",
    })
    first = subprocess.Popen([sys.executable, "-m", "mendel.cli", "worker"], env=environment,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _checkpoint_step(database) < 3 and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # the node is lost with its disk
    first.wait()
    killed_at = _checkpoint_step(database)
    assert 3 <= killed_at < steps
    code, summary = run_worker(tmp_path, spec, MENDEL_UID="uid-resume",
                               MENDEL_WORK_DIR=str(tmp_path / "pod-2"))
    assert code == 0, summary
    client = MlflowClient(f"sqlite:///{database}")
    logged = [m.step for m in client.get_metric_history(summary["runId"],
                                                        contract.METRIC_PROGRESS_STEP)]
    assert sorted(set(logged)) == list(range(1, steps + 1))
    assert all(logged.count(step) == 1 for step in range(1, killed_at + 1))  # none redone
    assert (tmp_path / "pod-2" / "clara" / "pretraining" / "checkpoints").is_dir()


def test_two_torchrun_processes_train_together(tmp_path, base):
    spec = resource(base, name="ddp", distribution={"numNodes": 1, "numProcPerNode": 2})
    for stage in spec["spec"]["stages"].values():  # each process takes one example a pass
        stage["microBatchSize"] = 1
    code, summary = run_worker(tmp_path, spec)
    assert code == 0, summary
    assert summary["stages"]["pretraining"]["steps"] == stage_one_steps(8)
    assert summary["stages"]["endToEnd"]["steps"] == 2


def test_synthesised_records_train_through_two_torchrun_processes(tmp_path, base):
    from tests.integration.test_clara_synthesis import scripted
    from tests.support.chat_server import ScriptedChatServer
    from tests.unit.engines.clara.test_synthesis import OTHER, THREE

    documents = tmp_path / "documents.jsonl"
    documents.write_text("".join(json.dumps({"text": text}) + "\n" for text in (THREE, OTHER)))
    with ScriptedChatServer(scripted) as server:
        llm = {"endpoint": {"url": server.base_url, "model": "scripted", "maxRetries": 0},
               "temperature": 0.0, "maxTokens": 96}
        spec = resource(base, name="synthesised",
                        distribution={"numNodes": 1, "numProcPerNode": 2})
        stages = spec["spec"]["stages"]
        del stages["endToEnd"]
        stages["pretraining"].update(microBatchSize=1, dataset={"uri": str(documents)},
                                     synthesis={"llm": llm, "concurrency": 2})
        code, summary = run_worker(tmp_path, spec)
        asked = server.count
    assert code == 0, summary
    # Two documents, three QA pairs and a paraphrase each (the scripted LLM): 8 examples.
    assert summary["stages"]["pretraining"]["steps"] == 2
    assert asked == 2 * 14
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = [a.path for a in client.list_artifacts(summary["runId"], "clara/synthesis")]
    assert any(name.endswith(".jsonl") and "stage-one-" in name for name in names)
