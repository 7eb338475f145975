"""The ExperienceLibrary workload as a driver Pod runs it: `mendel worker` against an
OpenAI-compatible HTTP server, MLflow and the output location.

The server is scripted (tests/support/chat_server.py) so that failures can be injected
and every request counted: a run that fails mid-way and is retried must not send again any
request whose answer it had already received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from tests.support.chat_server import Reply, ScriptedChatServer
from tests.unit.engines.tfgrpo.fakes import RECORDS, default_script, kind_of

from mendel.llm.chat import Sampling
from mendel.tracking import contract

pytestmark = pytest.mark.slow
API_KEY = "sk-test-never-log-this-0123456789"


class Script:
    """The fake agent and learner of the engine tests, over HTTP; fails after `healthy`
    answered requests when set (HTTP 500, which the client does not retry here)."""

    def __init__(self, healthy: int | None = None) -> None:
        self.healthy = healthy
        self.answered = 0
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply | str:
        with self.lock:
            if self.healthy is not None and self.answered >= self.healthy:
                return Reply.http(500)
            self.answered += 1
        messages = request["messages"]
        sampling = Sampling(request.get("temperature", 0.0), seed=request.get("seed"))
        return default_script(kind_of(messages), messages, sampling)


def resource(data: Path, url: str) -> dict[str, Any]:
    endpoint = {"url": url, "model": "scripted", "maxRetries": 0,
                "apiKey": {"name": "llm", "key": "key"}}
    return {
        "apiVersion": "mendel.dev/v1alpha1", "kind": "ExperienceLibrary",
        "metadata": {"name": "practice", "namespace": "team"},
        "spec": {
            "agent": {"endpoint": endpoint, "maxTokens": 64},
            "dataset": {"uri": str(data)},
            "practice": {"epochs": 2, "batchSize": 3, "groupSize": 4, "rolloutConcurrency": 4,
                         "maxFailedCallFraction": 0.0},
            "verifier": {"type": "exact"},
            "evaluation": {"dataset": {"uri": str(data), "split": "validation"},
                           "samplesPerQuestion": 2},
            "library": {"maxExperiences": 4, "configMapName": "practice-lib"},
            "seed": 3,
        },
    }


def run_worker(tmp_path: Path, manifest: dict[str, Any], work: str,
               output: Path | None = None) -> tuple[int, dict[str, Any], str]:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(manifest))
    log = tmp_path / f"termination-{work}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MENDEL_")}
    environment.update({
        "MENDEL_SPEC_PATH": str(spec_path), "MENDEL_TERMINATION_LOG": str(log),
        "MENDEL_WORK_DIR": str(tmp_path / work), "MENDEL_UID": "uid-el",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        contract.secret_env("spec.agent.endpoint.apiKey"): API_KEY,
    })
    if output is not None:
        environment[contract.ENV_OUTPUT_URI] = str(output)
    result = subprocess.run([sys.executable, "-m", "mendel.cli", "worker"], env=environment,
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    return result.returncode, json.loads(log.read_text()), result.stdout + result.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "practice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def test_worker_learns_registers_and_never_logs_the_key(tmp_path: Path, data: Path) -> None:
    with ScriptedChatServer(Script()) as server:
        code, summary, output = run_worker(tmp_path, resource(data, server.base_url), "work")
    assert code == 0, output
    assert summary["kind"] == "ExperienceLibrary" and summary["steps"] == 4
    assert 0 < summary["library"] <= 4 == summary["libraryVersion"]
    assert summary["before"]["questions"] == 6 and summary["after"]["samples"] == 2
    assert all(h.get("authorization") == f"Bearer {API_KEY}" for h in server.request_headers)
    assert API_KEY not in output and API_KEY not in json.dumps(summary)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["runId"])
    assert API_KEY not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    assert run.data.tags[contract.TAG_LIBRARY_PROMPT_URI] == summary["prompt"]["uri"]
    assert run.data.tags[contract.TAG_LIBRARY_SIZE] == str(summary["library"])
    history = client.get_metric_history(run.info.run_id, "groups/skipped_uniform")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert run.data.metrics[contract.METRIC_LIBRARY_SIZE] == summary["library"]
    assert contract.METRIC_SCORE_BEFORE in run.data.metrics
    prompt = client.load_prompt(summary["prompt"]["alias"])
    assert contract.parse_experiences(prompt.template) == [
        (e["id"], e["text"]) for e in summary["experiences"]]
    assert prompt.tags["mendel.run_id"] == summary["runId"] and prompt.tags["mendel.step"] == "4"
    steps = [a.path for a in client.list_artifacts(summary["runId"], "library")]
    assert "library/step-00001.json" in steps and "library/final.json" in steps


@pytest.mark.parametrize(("healthy", "volume"), [(7, True), (40, True), (40, False),
                                                  (95, False)])
def test_a_failed_run_resumes_without_repeating_answered_calls(
        tmp_path: Path, data: Path, healthy: int, volume: bool) -> None:
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    with ScriptedChatServer(Script()) as reference:
        code, expected, output = run_worker(reference_dir, resource(data, reference.base_url),
                                            "work")
    assert code == 0, output

    output_dir = tmp_path / "volume" if volume else None
    with ScriptedChatServer(Script(healthy=healthy)) as failing:
        code, failure, output = run_worker(tmp_path, resource(data, failing.base_url), "pod-1",
                                           output_dir)
    assert code == 1 and "maxFailedCallFraction" in failure["error"], output
    # A new Pod: a fresh work directory; the store comes back from the volume or MLflow.
    with ScriptedChatServer(Script()) as healthy_server:
        code, summary, output = run_worker(tmp_path, resource(data, healthy_server.base_url),
                                           "pod-2", output_dir)
    assert code == 0, output
    assert summary["experiences"] == expected["experiences"]
    assert summary["before"] == expected["before"] and summary["after"] == expected["after"]
    assert healthy + healthy_server.count == reference.count


def test_practice_against_a_real_llm_server(tmp_path: Path, llama_server: Any) -> None:
    """SmolLM2-135M behind llama.cpp as agent and learner: the whole loop over real HTTP,
    real sampling and real JSON-schema decoding, ending with a bounded, registered library."""
    manifest = {
        "apiVersion": "mendel.dev/v1alpha1", "kind": "ExperienceLibrary",
        "metadata": {"name": "real", "namespace": "team"},
        "spec": {
            "agent": {"endpoint": {"url": llama_server.base_url, "model": llama_server.model},
                      "maxTokens": 96},
            "dataset": {"uri": "builtin:arithmetic", "split": "train", "limit": 6},
            "practice": {"epochs": 1, "batchSize": 6, "groupSize": 3, "rolloutConcurrency": 4,
                         "maxOperationsPerGroup": 1},
            "evaluation": {"dataset": {"uri": "builtin:arithmetic", "split": "validation",
                                       "limit": 6}, "samplesPerQuestion": 1},
            "library": {"maxExperiences": 2},
        },
    }
    code, summary, output = run_worker(tmp_path, manifest, "work")
    assert code == 0, output
    assert summary["steps"] == 1 and summary["library"] <= 2
    assert summary["usage"]["calls"] >= 6 * 3 + 2 * 6  # rollouts and both evaluations
    assert summary["usage"]["completion_tokens"] > 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["runId"])
    # 6 questions x 3 rollouts; a failed call (counted, possibly in another phase) drops at
    # most one rollout.
    failed = run.data.metrics.get("calls/failed", 0)
    assert 18 - failed <= run.data.metrics["practice/rollouts"] <= 18
    assert client.load_prompt(summary["prompt"]["uri"]) is not None
