"""What every evaluator shares: the error tree, record loading and batched model queries.

An evaluator is built once per task from its `Evaluator` spec and then scores many models
(every CycleQD child), so the records are read once and kept. Errors name the task, since
a QDEvolution run scores each child on several tasks.

Errors::

    EvaluationError           base; carries the task name
    ├── TaskDataError         permanent: records missing, malformed, or a bad pattern
    ├── CommandError          permanent: the external command failed or printed no score
    └── SandboxUnavailable    temporary: the code sandbox could not start a program
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from mendel.api.evaluator import Evaluator, EvaluatorType
from mendel.datasets import DatasetError, load_records
from mendel.llm.protocol import TextGenerator

__all__ = [
    "CommandError",
    "EvaluationError",
    "Record",
    "SandboxUnavailable",
    "TaskDataError",
    "TaskEvaluator",
]

Record = dict[str, Any]


class EvaluationError(Exception):
    """A task could not be scored; `task` names it."""

    def __init__(self, task: str, message: str) -> None:
        super().__init__(f"task {task!r}: {message}")
        self.task = task


class TaskDataError(EvaluationError):
    """The task's data or spec cannot be used; retrying will not help."""


class CommandError(EvaluationError):
    """The external scoring command failed, timed out or printed no valid score."""


class SandboxUnavailable(EvaluationError):
    """The code sandbox could not run a program at all; the machine, not the model, failed."""


class TaskEvaluator(ABC):
    """Scores models on one task, as a number in [0, 1].

    Args:
        spec: The task's evaluator spec.
        task_name: Used in errors and substituted for '{task}' in commands.
        records: Records to use instead of reading `spec.dataset` (tests, callers that
            already hold the data).
        cache_dir: Where remote datasets are downloaded to.
    """

    type_name: ClassVar[EvaluatorType]
    required_fields: ClassVar[tuple[str, ...]] = ()
    needs_model_dir: ClassVar[bool] = False
    """True if `evaluate` needs the model saved on disk (`model_dir`), not just the backend."""

    def __init__(
        self,
        spec: Evaluator,
        task_name: str,
        *,
        records: Sequence[Record] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.task_name = task_name
        self._cache_dir = cache_dir
        self._records = self._checked(list(records)) if records is not None else None

    @property
    def split(self) -> str | None:
        """The dataset split this evaluator reads ('train', 'validation', 'test'), if any."""
        return self.spec.dataset.split if self.spec.dataset is not None else None

    @property
    def records(self) -> list[Record]:
        """The task's records, read and checked on first use, then kept."""
        if self._records is None:
            if self.spec.dataset is None:
                raise TaskDataError(self.task_name, "this evaluator has no dataset")
            try:
                loaded = load_records(self.spec.dataset, cache_dir=self._cache_dir)
            except DatasetError as error:
                raise TaskDataError(self.task_name, str(error)) from error
            self._records = self._checked(loaded)
        return self._records

    @abstractmethod
    def evaluate(self, model: TextGenerator, *, model_dir: Path | None = None) -> float:
        """Score a model on the task.

        Args:
            model: The backend to query.
            model_dir: Where the same model is saved; required when `needs_model_dir`.

        Returns:
            The score, in [0, 1].

        Raises:
            EvaluationError: the task could not be scored (see the module's error tree).
        """

    def _check_record(self, index: int, record: Record) -> None:
        """Raise TaskDataError if one record cannot be scored; subclasses extend the check."""
        missing = [name for name in self.required_fields if name not in record]
        if missing:
            raise TaskDataError(
                self.task_name, f"record {index} lacks field(s) {', '.join(missing)}"
            )

    def _checked(self, records: list[Record]) -> list[Record]:
        if not records:
            raise TaskDataError(self.task_name, "the dataset has no records")
        for index, record in enumerate(records):
            self._check_record(index, record)
        return records

    def _render(self, prompt: str) -> str:
        # str.replace, not str.format: prompts (code above all) are full of braces.
        template = self.spec.prompt_template
        return template.replace("{prompt}", prompt) if template else prompt

    def _generate(
        self, model: TextGenerator, prompts: Sequence[str], stop: Sequence[str] = ()
    ) -> list[str]:
        """Greedy outputs for all prompts, `batchSize` at a time, longest prompts first.

        Sorting by length keeps padding low within a batch; outputs come back in input order.
        """
        order = sorted(range(len(prompts)), key=lambda index: -len(prompts[index]))
        outputs = [""] * len(prompts)
        for start in range(0, len(order), self.spec.batch_size):
            chunk = order[start : start + self.spec.batch_size]
            texts = model.generate([prompts[i] for i in chunk], self.spec.max_new_tokens, stop)
            self._check_count(len(chunk), len(texts))
            for index, text in zip(chunk, texts, strict=True):
                outputs[index] = text
        return outputs

    def _loglikelihood(self, model: TextGenerator, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Log-likelihoods of all pairs, `batchSize` pairs at a time, in input order."""
        scores: list[float] = []
        for start in range(0, len(pairs), self.spec.batch_size):
            chunk = pairs[start : start + self.spec.batch_size]
            values = model.loglikelihood(chunk)
            self._check_count(len(chunk), len(values))
            scores.extend(values)
        return scores

    def _check_count(self, asked: int, got: int) -> None:
        if asked != got:
            raise EvaluationError(self.task_name, f"the backend answered {got} of {asked} queries")
