"""How a model is scored on one task: the pluggable evaluators of QDEvolution.

One flat object with a `type` discriminator (rather than a oneOf) keeps the CRD schema
structural and `kubectl explain` readable; rules say which fields each type needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mendel.api.base import ApiModel, cel
from mendel.api.references import DatasetRef

__all__ = ["Evaluator", "EvaluatorType", "MatchMode"]

EvaluatorType = Literal["generation", "code", "multipleChoice", "command"]
MatchMode = Literal["exact", "numeric", "regex"]


class Evaluator(ApiModel):
    """Scores a model on one task, as a number in [0, 1]."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.type == 'command' || has(self.dataset)",
                    "dataset is required unless type is command",
                ),
                cel(
                    "self.type != 'command' || has(self.command)",
                    "command is required when type is command",
                ),
                cel(
                    "self.match != 'regex' || has(self.pattern)",
                    "pattern is required when match is regex",
                ),
            ]
        }
    }

    type: EvaluatorType = Field(
        description="generation: greedy generation scored by match against 'answer'; code: "
        "HumanEval-format pass@1, run in a sandbox; multipleChoice: choice with the highest "
        "log-likelihood; command: an external program that receives the model path and "
        "prints JSON scores."
    )
    dataset: DatasetRef | None = Field(
        default=None,
        description="JSON Lines records. generation: {prompt, answer}; code: HumanEval fields "
        "{task_id, prompt, test, entry_point}; multipleChoice: {question, choices, answer "
        "(index)}. Optional for command.",
    )
    match: MatchMode = Field(
        default="exact",
        description="generation only: exact (after trimming), numeric (first number in the "
        "output equals the answer) or regex (pattern's first group equals the answer).",
    )
    pattern: str | None = Field(
        default=None,
        description="Regular expression whose first group is the answer (match: regex).",
        max_length=512,
    )
    prompt_template: str | None = Field(
        default=None,
        description="Template around each record's prompt; '{prompt}' marks where it goes. "
        "Default: the prompt as it is.",
        max_length=4096,
    )
    max_new_tokens: int = Field(
        default=256, description="Generation budget per record.", ge=1, le=32768
    )
    batch_size: int = Field(
        default=64, description="Records generated or scored together.", ge=1, le=4096
    )
    timeout_seconds: int = Field(
        default=10,
        description="code: time limit per program; command: time limit for the whole command.",
        ge=1,
        le=86400,
    )
    memory_mb: int = Field(
        default=1024,
        description="code: address-space limit per sandboxed program, in MiB.",
        ge=64,
        le=65536,
    )
    command: list[str] | None = Field(
        default=None,
        description="command only: argv; '{model}' is replaced by the model directory and "
        "'{task}' by the task name. It must print a JSON object with a 'score' in [0, 1].",
        min_length=1,
        max_length=64,
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> Evaluator:
        if self.type != "command" and self.dataset is None:
            raise ValueError(f"dataset is required for a {self.type} evaluator")
        if self.type == "command" and not self.command:
            raise ValueError("command is required when type is command")
        if self.match == "regex" and not self.pattern:
            raise ValueError("pattern is required when match is regex")
        if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
            raise ValueError("promptTemplate must contain '{prompt}'")
        return self
