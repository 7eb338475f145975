"""The evaluator types, by the name a spec's `type` gives them, and the factory.

One static table is the only place a type is registered, so the set of types never
depends on which modules happen to be imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mendel.api.evaluator import Evaluator, EvaluatorType
from mendel.evaluators.base import Record, TaskEvaluator
from mendel.evaluators.code import CodeEvaluator
from mendel.evaluators.command import CommandEvaluator
from mendel.evaluators.generation import GenerationEvaluator
from mendel.evaluators.multiple_choice import MultipleChoiceEvaluator

__all__ = ["EVALUATORS", "build_evaluator"]

EVALUATORS: dict[EvaluatorType, type[TaskEvaluator]] = {
    "generation": GenerationEvaluator,
    "code": CodeEvaluator,
    "multipleChoice": MultipleChoiceEvaluator,
    "command": CommandEvaluator,
}


def build_evaluator(
    spec: Evaluator,
    task_name: str,
    *,
    records: list[Record] | None = None,
    cache_dir: Path | None = None,
    **options: Any,
) -> TaskEvaluator:
    """The evaluator for one task, ready to score any number of models.

    Args:
        spec: The task's evaluator spec.
        task_name: The task's name (errors, '{task}' in commands).
        records: Records to use instead of reading `spec.dataset`.
        cache_dir: Where remote datasets are downloaded to.
        **options: Type-specific extras, e.g. `sandbox=` for code evaluators.

    Raises:
        ValueError: the spec's type has no evaluator.
        TaskDataError: given records, or the spec's pattern, cannot be used.
    """
    if spec.type not in EVALUATORS:
        raise ValueError(f"no evaluator for type {spec.type!r}; known: {', '.join(EVALUATORS)}")
    return EVALUATORS[spec.type](spec, task_name, records=records, cache_dir=cache_dir, **options)
