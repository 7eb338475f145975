"""Defaults from the papers, reference parsing and cross-field rules of the API models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mendel.api import CompressorTrainingSpec, ExperienceLibrarySpec, QDEvolutionSpec
from mendel.api.references import ModelRef, source_of

TASKS = [
    {"name": "a", "expert": "ea",
     "evaluator": {"type": "generation", "dataset": {"uri": "builtin:skills-add"}}},
    {"name": "b", "expert": "eb",
     "evaluator": {"type": "code", "dataset": {"uri": "builtin:humaneval"}}},
]
QDE = {
    "baseModel": {"uri": "org/base"},
    "experts": [{"name": "ea", "uri": "org/a"}, {"name": "eb", "uri": "org/b"}],
    "tasks": TASKS,
}


def test_qdevolution_defaults_follow_the_paper() -> None:
    spec = QDEvolutionSpec.model_validate(QDE)
    assert spec.budget.generations == 1200
    assert spec.tasks[0].descriptor.bins == 15
    assert (spec.algorithm.sampling.method, spec.algorithm.sampling.alpha_low,
            spec.algorithm.sampling.alpha_high) == ("elite", 0.5, 0.8)
    assert spec.algorithm.mutation.method == "svd"
    assert spec.algorithm.cycle_interval == 1


def test_experience_library_defaults_follow_the_paper() -> None:
    spec = ExperienceLibrarySpec.model_validate(
        {"agent": {"endpoint": {"url": "http://llm:8000/v1", "model": "m"}},
         "dataset": {"uri": "builtin:arithmetic"}}
    )
    assert (spec.practice.epochs, spec.practice.group_size, spec.agent.temperature) == (3, 5, 0.7)
    assert spec.library.max_words == 32


def test_compressor_defaults_follow_the_paper() -> None:
    spec = CompressorTrainingSpec.model_validate(
        {"baseModel": {"uri": "org/m"},
         "stages": {"pretraining": {"dataset": {"uri": "builtin:tiny-docs"},
                                    "learningRate": 1e-4, "batchSize": 128}}}
    )
    assert (spec.lora.r, spec.lora.alpha, spec.lora.dropout) == (16, 32, 0.1)
    assert spec.compression.memory_tokens == 256 // 32
    assert spec.stages.pretraining.mse_weight == 0.1


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        pytest.param("meta-llama/Meta-Llama-3-8B-Instruct", "huggingface", id="hf"),
        pytest.param("hf://org/name", "huggingface", id="hf-prefixed"),
        pytest.param("/models/llama", "volume", id="volume"),
        pytest.param("s3://bucket/models/llama", "s3", id="s3"),
        pytest.param("models:/merged/3", "mlflow", id="mlflow-version"),
        pytest.param("models:/merged@champion", "mlflow", id="mlflow-alias"),
        pytest.param("builtin:humaneval", "builtin", id="builtin"),
    ],
)
def test_source_of_classifies_uri(uri: str, source: str) -> None:
    assert source_of(uri) == source


def test_model_ref_refuses_revision_outside_the_hub() -> None:
    with pytest.raises(ValidationError, match="Hugging Face ids only"):
        ModelRef.model_validate({"uri": "s3://bucket/model", "revision": "main"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"experts": [{"name": "ea", "uri": "org/a"}, {"name": "ea", "uri": "org/b"}]},
                     "names must be unique", id="duplicate-expert"),
        pytest.param({"tasks": [TASKS[0], {**TASKS[1], "descriptor": {"min": 0.5}}]},
                     "both min and max", id="half-range"),
        pytest.param({"tasks": [TASKS[0], {**TASKS[1], "descriptor": {"min": 0.5, "max": 0.2}}]},
                     "must be below max", id="inverted-range"),
        pytest.param({"algorithm": {"sampling": {"alphaLow": 0.9, "alphaHigh": 0.8}}},
                     "alphaLow", id="inverted-alphas"),
        pytest.param({"tasks": [TASKS[0], {"name": "b", "expert": "eb",
                                           "evaluator": {"type": "command"}}]},
                     "command is required", id="command-without-argv"),
    ],
)
def test_qdevolution_rejects_inconsistent_spec(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QDEvolutionSpec.model_validate({**QDE, **change})


def test_qdevolution_bounds_archive_size() -> None:
    tasks = [{**TASKS[0], "name": f"t{i}", "descriptor": {"bins": 100}} for i in range(5)]
    with pytest.raises(ValidationError, match="cells"):
        QDEvolutionSpec.model_validate({**QDE, "tasks": tasks})


def test_compressor_requires_one_process_per_gpu() -> None:
    spec = {"baseModel": {"uri": "org/m"},
            "stages": {"pretraining": {"dataset": {"uri": "builtin:tiny-docs"},
                                       "learningRate": 1e-4, "batchSize": 128}},
            "resources": {"trainer": {"gpus": 8}},
            "distribution": {"numProcPerNode": 4}}
    with pytest.raises(ValidationError, match="one process per GPU"):
        CompressorTrainingSpec.model_validate(spec)


def test_spec_round_trips_through_the_wire_form() -> None:
    spec = QDEvolutionSpec.model_validate(QDE)
    assert QDEvolutionSpec.model_validate(spec.to_wire()) == spec
    assert "baseModel" in spec.to_wire()
