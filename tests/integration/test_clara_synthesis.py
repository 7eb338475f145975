"""CompressorTraining's data synthesis end to end: a spec's synthesis block, documents from
a dataset, the workload function, and an LLM behind a real HTTP server.

SmolLM2-135M behind llama.cpp shows the path works on a real server (schemas sent and
honoured, replies parsed, records written); its records are checked for shape, not for
quality. The scripted server checks what a real model cannot be made to do: the exact
calls, the API key read from the Secret's environment variable, documents named twice
asked once, and a rerun that sends nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.chat_server import ScriptedChatServer
from tests.unit.engines.clara.test_synthesis import OTHER, THREE, ScriptedLLM, kind_of

from mendel.api import CompressorTrainingSpec
from mendel.engines.clara import stage_one_examples
from mendel.tracking import contract
from mendel.workloads.compressor_synthesis import synthesize_stage_one
from mendel.workloads.context import WorkloadError

pytestmark = pytest.mark.slow
API_KEY = "sk-test-never-log-this-0123456789"
KEY_VARIABLE = contract.secret_env("spec.stages.pretraining.synthesis.llm.endpoint.apiKey")


def spec_for(endpoint: dict[str, Any], dataset: dict[str, Any], **synthesis: Any) -> Any:
    llm = {"endpoint": {"maxRetries": 0, "timeoutSeconds": 120, **endpoint},
           "temperature": 0.0, "maxTokens": 96}
    return CompressorTrainingSpec.model_validate({
        "baseModel": {"uri": "org/base"}, "seed": 5,
        "stages": {"pretraining": {"dataset": dataset, "learningRate": 1e-4, "batchSize": 2,
                                   "synthesis": {"llm": llm, **synthesis}}}})


def synthesize(spec: Any, tmp_path: Path) -> Path:
    return synthesize_stage_one(spec, tmp_path / "state", data_dir=tmp_path / "data",
                                models_dir=tmp_path / "models")


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_smollm2_writes_well_formed_stage_one_records(llama_server, tmp_path: Path) -> None:
    endpoint = {"url": llama_server.base_url, "model": llama_server.model}
    spec = spec_for(endpoint, {"uri": "builtin:facts", "split": "train", "limit": 2},
                    rounds=1, maxQuestions=1, complexQuestions=False, concurrency=2,
                    maxFailedCallFraction=1.0)
    try:
        path = synthesize(spec, tmp_path)
    except WorkloadError as error:  # every document left out: show what happened
        pytest.fail(f"SmolLM2 gave no records: {error}")

    records = read_lines(path)
    documents = {doc for record in records for doc in record["docs"]}
    assert records and len(documents) <= 2
    for record in records:
        assert record["data_type"] in ("qa", "paraphrase") and len(record["docs"]) == 1
        assert all(isinstance(text, str) and text.strip() for text in record["answers"])
        if record["data_type"] == "qa":
            assert len(record["question"]) == len(record["answers"]) == 1
        else:
            assert len(record["answers"]) == 1
    assert len(stage_one_examples(records)) >= len(records)


def scripted(request: dict[str, Any]) -> str:
    prompt = str(request["messages"][-1]["content"])
    kind = kind_of(prompt)
    assert ("response_format" in request) == (kind != "paraphrase")
    return str(getattr(ScriptedLLM(), kind)(prompt))


def test_the_workload_reads_documents_and_resumes_from_its_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "documents.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (
        {"docs": [THREE]}, {"text": THREE}, {"docs": [OTHER, THREE]})))
    monkeypatch.setenv(KEY_VARIABLE, API_KEY)
    with ScriptedChatServer(scripted) as server:
        endpoint = {"url": server.base_url, "model": "scripted",
                    "apiKey": {"name": "llm", "key": "key"}}
        spec = spec_for(endpoint, {"uri": str(data)}, concurrency=2)
        path = synthesize(spec, tmp_path)
        asked = server.count
        again = synthesize(spec, tmp_path)

        assert again == path and server.count == asked == 2 * 14  # nothing asked twice
        assert server.max_in_flight <= 2
        assert {h["authorization"] for h in server.request_headers} == {f"Bearer {API_KEY}"}
        records = read_lines(path)
        assert [(r["data_type"], r["docs"]) for r in records] == [
            ("qa", [THREE]), ("paraphrase", [THREE]), ("qa", [OTHER]), ("paraphrase", [OTHER])]
        assert records[0]["answers"] == ["Velora", "Brisa", "Kestrel"]

        other = synthesize(spec_for(endpoint, {"uri": str(data)}, rounds=4), tmp_path)
        assert other != path and server.count == 2 * asked  # other settings, other journal


def test_the_workload_refuses_what_it_cannot_synthesise_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "documents.jsonl"
    data.write_text(json.dumps({"docs": [THREE]}) + "\n" + json.dumps({"question": "q"}) + "\n")
    endpoint = {"url": "http://127.0.0.1:9/v1", "model": "m",
                "apiKey": {"name": "llm", "key": "key"}}
    with pytest.raises(WorkloadError, match="record 1 needs 'docs'"):
        synthesize(spec_for(endpoint, {"uri": str(data)}), tmp_path)

    data.write_text(json.dumps({"text": THREE}) + "\n")
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    with pytest.raises(WorkloadError, match=KEY_VARIABLE):
        synthesize(spec_for(endpoint, {"uri": str(data)}), tmp_path)
