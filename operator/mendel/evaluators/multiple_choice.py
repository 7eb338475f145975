"""Multiple-choice tasks: the choice the model finds most likely is its answer.

Each choice is scored as the summed log-likelihood of " " + choice after the (templated)
question, the usual zero-shot setup, and the argmax (first on ties) is compared with the
record's answer index. Scoring is one forward pass per choice and needs no generation.
"""

from __future__ import annotations

from pathlib import Path

from mendel.evaluators.base import Record, TaskDataError, TaskEvaluator
from mendel.llm.protocol import TextGenerator

__all__ = ["MultipleChoiceEvaluator"]


class MultipleChoiceEvaluator(TaskEvaluator):
    """Accuracy of the highest-likelihood choice against each record's answer index."""

    type_name = "multipleChoice"
    required_fields = ("question", "choices", "answer")

    def evaluate(self, model: TextGenerator, *, model_dir: Path | None = None) -> float:
        """Fraction of records whose most likely choice is the answer."""
        records = self.records
        pairs = [
            (self._render(str(record["question"])), f" {choice}")
            for record in records
            for choice in record["choices"]
        ]
        scores = self._loglikelihood(model, pairs)
        correct, offset = 0, 0
        for record in records:
            count = len(record["choices"])
            options = scores[offset : offset + count]
            offset += count
            correct += options.index(max(options)) == record["answer"]
        return correct / len(records)

    def _check_record(self, index: int, record: Record) -> None:
        super()._check_record(index, record)
        choices, answer = record["choices"], record["answer"]
        if not isinstance(choices, list) or len(choices) < 2:
            raise TaskDataError(self.task_name, f"record {index}: choices must list 2 or more")
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise TaskDataError(self.task_name, f"record {index}: answer must be a choice index")
        if not 0 <= answer < len(choices):
            raise TaskDataError(
                self.task_name, f"record {index}: answer {answer} is not in 0..{len(choices) - 1}"
            )
