"""CompressorTraining's optional data synthesis: accepted on stage I only, by the pydantic
models (naming the field) and by the CRD's CEL rule (evaluated as the API server would)."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest

from mendel.api import CompressorTrainingSpec
from mendel.api.crd import crds
from mendel.api.kinds import KINDS
from mendel.api.validation import validate_resource

LLM = {"endpoint": {"url": "http://vllm.team.svc:8000/v1", "model": "qwen"}, "maxTokens": 512}
STAGE = {"dataset": {"uri": "builtin:facts", "split": "train"}, "learningRate": 1e-4,
         "batchSize": 8}


def resource(**stages: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mendel.dev/v1alpha1", "kind": "CompressorTraining",
            "metadata": {"name": "synth"},
            "spec": {"baseModel": {"uri": "org/base"},
                     "stages": {"pretraining": STAGE, **stages}}}


def with_synthesis(stage: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {**copy.deepcopy(stage), "synthesis": {"llm": LLM, **options}}


def test_pretraining_synthesis_defaults_follow_the_paper() -> None:
    document = resource(pretraining=with_synthesis(STAGE))
    assert validate_resource(document) == []
    spec = CompressorTrainingSpec.model_validate(document["spec"])
    synthesis = spec.stages.pretraining.synthesis
    assert synthesis is not None
    assert (synthesis.rounds, synthesis.complex_questions, synthesis.paraphrase) == (10, True, True)
    assert synthesis.llm.endpoint is not None and synthesis.llm.max_tokens == 512
    wire = spec.to_wire()["stages"]["pretraining"]["synthesis"]
    assert {"complexQuestions", "maxFailedCallFraction", "concurrency"} <= set(wire)


@pytest.mark.parametrize("stage", ["instructionTuning", "endToEnd"])
def test_synthesis_on_a_later_stage_is_refused_at_its_field(stage: str) -> None:
    errors = validate_resource(resource(**{stage: with_synthesis(STAGE)}))
    assert [error.path for error in errors] == [f"spec.stages.{stage}.synthesis"]
    assert "pretraining" in errors[0].message


@pytest.mark.parametrize("rounds", [0, 11])
def test_rounds_are_bounded_by_the_papers_ten(rounds: int) -> None:
    errors = validate_resource(resource(pretraining=with_synthesis(STAGE, rounds=rounds)))
    assert "spec.stages.pretraining.synthesis.rounds" in [error.path for error in errors]


def _stages_rule() -> str:
    crd = crds()[f"{KINDS['CompressorTraining'].crd_name}.yaml"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = schema["properties"]["spec"]["properties"]["stages"]["x-kubernetes-validations"]
    return str(rule["rule"])


@pytest.mark.parametrize(("stages", "allowed"), [
    ({"pretraining": with_synthesis(STAGE)}, True),
    ({"pretraining": STAGE, "instructionTuning": STAGE, "endToEnd": STAGE}, True),
    ({"pretraining": STAGE, "instructionTuning": with_synthesis(STAGE)}, False),
    ({"pretraining": STAGE, "endToEnd": with_synthesis(STAGE)}, False),
])
def test_crd_rule_allows_synthesis_on_pretraining_only(stages: dict[str, Any],
                                                        allowed: bool) -> None:
    env = celpy.Environment()
    program = env.program(env.compile(_stages_rule()))
    assert bool(program.evaluate({"self": celpy.json_to_cel(stages)})) is allowed
