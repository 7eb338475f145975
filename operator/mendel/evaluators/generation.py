"""Generation tasks: greedy answers to {prompt, answer} records, scored by a match rule.

The score is the fraction of records whose output matches (see `mendel.evaluators.matching`
for the rules). Answers are checked when the records are read, so a dataset whose answers
cannot match fails the task up front instead of scoring every model zero.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mendel.api.evaluator import Evaluator
from mendel.evaluators.base import Record, TaskDataError, TaskEvaluator
from mendel.evaluators.matching import first_number, match_exact, match_numeric, match_regex
from mendel.llm.protocol import TextGenerator

__all__ = ["GenerationEvaluator"]


class GenerationEvaluator(TaskEvaluator):
    """Exact, numeric or regex match of greedy outputs against each record's answer."""

    type_name = "generation"
    required_fields = ("prompt", "answer")

    def __init__(self, spec: Evaluator, task_name: str, **options: Any) -> None:
        self.pattern = _compile(spec, task_name)
        super().__init__(spec, task_name, **options)

    def evaluate(self, model: TextGenerator, *, model_dir: Path | None = None) -> float:
        """Fraction of records whose greedy output matches the answer."""
        records = self.records
        outputs = self._generate(model, [self._render(str(r["prompt"])) for r in records])
        hits = sum(
            self.matches(output, r["answer"]) for output, r in zip(outputs, records, strict=True)
        )
        return hits / len(records)

    def matches(self, output: str, answer: object) -> bool:
        """Whether one output matches one answer under this task's rule."""
        if self.spec.match == "numeric":
            return match_numeric(output, answer)
        if self.pattern is not None:
            return match_regex(output, answer, self.pattern)
        return match_exact(output, answer)

    def _check_record(self, index: int, record: Record) -> None:
        super()._check_record(index, record)
        if self.spec.match == "numeric" and first_number(str(record["answer"])) is None:
            raise TaskDataError(
                self.task_name, f"record {index}: answer {record['answer']!r} is not a number"
            )


def _compile(spec: Evaluator, task_name: str) -> re.Pattern[str] | None:
    if spec.match != "regex" or spec.pattern is None:
        return None
    try:
        return re.compile(spec.pattern)
    except re.error as error:
        raise TaskDataError(task_name, f"pattern does not compile: {error}") from None
