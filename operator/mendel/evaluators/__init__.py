"""Scoring a model on one task, as a number in [0, 1]: the pluggable evaluators of QDEvolution.

`build_evaluator(spec, task_name)` turns an `Evaluator` spec into a `TaskEvaluator`;
`evaluator.evaluate(backend)` scores whatever model the backend currently holds, so one
evaluator scores every CycleQD child. Evaluators talk to models only through
`mendel.llm.TextGenerator` and import no torch.
"""

from __future__ import annotations

from mendel.evaluators.base import (
    CommandError,
    EvaluationError,
    SandboxUnavailable,
    TaskDataError,
    TaskEvaluator,
)
from mendel.evaluators.code import CodeEvaluator
from mendel.evaluators.command import CommandEvaluator
from mendel.evaluators.generation import GenerationEvaluator
from mendel.evaluators.multiple_choice import MultipleChoiceEvaluator
from mendel.evaluators.registry import EVALUATORS, build_evaluator
from mendel.evaluators.sandbox import Sandbox, SandboxLimits

__all__ = [
    "CodeEvaluator",
    "CommandError",
    "CommandEvaluator",
    "EVALUATORS",
    "EvaluationError",
    "GenerationEvaluator",
    "MultipleChoiceEvaluator",
    "Sandbox",
    "SandboxLimits",
    "SandboxUnavailable",
    "TaskDataError",
    "TaskEvaluator",
    "build_evaluator",
]
