"""From dataset records (JSON Lines rows) to the examples each CLaRa stage trains on.

The record shapes are the reference's (seed-algorithms §3.2):

- stage I: `{"data_type": "qa", "question": [q...], "answers": [a...], "docs": [d...]}` gives
  one example per question; `{"data_type": "paraphrase", "answers": [...], "docs": [...]}`
  asks the generator to restate the documents (its target is the answers joined);
- instruction tuning and evaluation: `{"question": q, "docs": [d...], "answer": a}` (or
  `"answers": [a...]` for several accepted answers);
- stage II: the same with `"docs"` as the candidates and `"pos_index": [i...]`.

A record that does not fit is refused with its number and the field to fix, before any
model is loaded: a shape error found after an hour of training loses the hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mendel.engines.clara.batches import MEMORY_SLOT, StageOneExample
from mendel.engines.clara.inference import build_prompt
from mendel.engines.clara.stage_two import StageTwoExample

__all__ = [
    "PARAPHRASE_PROMPT",
    "QAExample",
    "RecordError",
    "instruction_examples",
    "qa_examples",
    "stage_one_examples",
    "stage_two_examples",
]

PARAPHRASE_PROMPT = "Background:\n{documents}\n\nRestate the background in other words:"
"""Stage I's paraphrase prompt; one MEMORY_SLOT per document replaces `{documents}`."""


class RecordError(ValueError):
    """A record lacks a field or has one of the wrong type; the message names both."""


@dataclass(frozen=True)
class QAExample:
    """A held-out question with its documents and every accepted answer."""

    question: str
    documents: tuple[str, ...]
    answers: tuple[str, ...]


def _strings(record: Mapping[str, Any], key: str, number: int, *,
             allow_empty: bool = False) -> list[str]:
    value = record.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RecordError(f"record {number}: '{key}' must be a string or a list of strings")
    if not value and not allow_empty:
        raise RecordError(f"record {number}: '{key}' is empty")
    for item in value:
        if MEMORY_SLOT in item:
            raise RecordError(f"record {number}: '{key}' holds the memory-slot marker "
                              f"{MEMORY_SLOT}")
    return value


def _answers(record: Mapping[str, Any], number: int) -> list[str]:
    key = "answers" if "answers" in record else "answer"
    return _strings(record, key, number)


def stage_one_examples(records: Sequence[Mapping[str, Any]]) -> list[StageOneExample]:
    """Stage I examples: one per (question, answer) of a QA record, one per paraphrase record.

    A record without `data_type` is a QA record.

    Raises:
        RecordError: a record of another shape, or questions and answers of unequal length.
    """
    examples: list[StageOneExample] = []
    for number, record in enumerate(records):
        documents = tuple(_strings(record, "docs", number))
        kind = record.get("data_type", "qa")
        if kind == "paraphrase":
            target = " ".join(_strings(record, "answers", number))
            prompt = PARAPHRASE_PROMPT.replace(
                "{documents}", "\n".join([MEMORY_SLOT] * len(documents)))
            examples.append(StageOneExample(prompt, documents, " " + target))
            continue
        if kind != "qa":
            raise RecordError(f"record {number}: data_type {kind!r} is neither 'qa' nor "
                              "'paraphrase'")
        questions = _strings(record, "question", number)
        answers = _answers(record, number)
        if len(questions) != len(answers):
            raise RecordError(f"record {number}: {len(questions)} questions but "
                              f"{len(answers)} answers; give one answer per question")
        examples += [StageOneExample(build_prompt(question, len(documents)), documents,
                                     " " + answer)
                     for question, answer in zip(questions, answers, strict=True)]
    return examples


def qa_examples(records: Sequence[Mapping[str, Any]]) -> list[QAExample]:
    """Held-out QA: `{"question", "docs", "answer" | "answers"}` per record.

    Raises:
        RecordError: a record of another shape.
    """
    examples = []
    for number, record in enumerate(records):
        question = record.get("question")
        if not isinstance(question, str) or not question:
            raise RecordError(f"record {number}: 'question' must be a non-empty string")
        examples.append(QAExample(question, tuple(_strings(record, "docs", number)),
                                  tuple(_answers(record, number))))
    return examples


def instruction_examples(records: Sequence[Mapping[str, Any]]) -> list[StageOneExample]:
    """Instruction tuning: the question over its compressed documents, the first answer as
    the target.

    Raises:
        RecordError: a record of another shape.
    """
    return [StageOneExample(build_prompt(qa.question, len(qa.documents)), qa.documents,
                            " " + qa.answers[0])
            for qa in qa_examples(records)]


def stage_two_examples(records: Sequence[Mapping[str, Any]], top_k: int) -> list[StageTwoExample]:
    """Stage II examples; every record needs at least `top_k` candidate documents.

    Raises:
        RecordError: a record of another shape, too few candidates, or a positive index
            outside the candidates.
    """
    examples = []
    for number, (record, qa) in enumerate(zip(records, qa_examples(records), strict=True)):
        if len(qa.documents) < top_k:
            raise RecordError(f"record {number}: {len(qa.documents)} candidate documents, "
                              f"fewer than topK {top_k}")
        positives = record.get("pos_index")
        if isinstance(positives, int):
            positives = [positives]
        if positives is not None and (
                not isinstance(positives, list)
                or not all(isinstance(i, int) and 0 <= i < len(qa.documents)
                           for i in positives)):
            raise RecordError(f"record {number}: 'pos_index' must list indices into 'docs' "
                              f"(0 to {len(qa.documents) - 1})")
        examples.append(StageTwoExample(qa.question, qa.documents, " " + qa.answers[0],
                                        tuple(positives) if positives else None))
    return examples
