"""Held-out QA: the compressor's memories against raw text and against no context.

The question a CLaRa run has to answer is whether the answer travels through the memory
tokens. So each held-out question is answered three ways by the same backbone:

- `compressed`: the generator adapter reading the documents' memory states, served from a
  `CompressedStore` (the path a deployment takes, version check included);
- `raw_text`: the base model without adapters reading the documents' text (uncompressed RAG);
- `no_context`: the base model without adapters and without documents (what it knows).

On documents whose answers exist nowhere else (builtin:facts) `no_context` is the floor and
`raw_text` what a reader of the full text gets; `compressed` between them measures the
compressor. Scores are Cover-EM, EM and token F1 (`metrics.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mendel.engines.clara.inference import DEFAULT_PROMPT, answer_from_store, greedy_ids
from mendel.engines.clara.metrics import QAScores, score_answers
from mendel.engines.clara.model import ClaraModel
from mendel.engines.clara.records import QAExample
from mendel.engines.clara.store import CompressedStore

__all__ = ["CONDITIONS", "EvaluationReport", "corpus_of", "document_id", "evaluate_qa",
           "text_prompt"]

CONDITIONS = ("compressed", "raw_text", "no_context")
NO_CONTEXT_PROMPT = "Question: {question}\nAnswer:"


def document_id(text: str) -> str:
    """A document's id in the evaluation store: a digest of its text."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def corpus_of(examples: Sequence[QAExample]) -> list[dict[str, str]]:
    """Every distinct document of `examples`, as `compress_corpus` takes them."""
    seen: dict[str, str] = {}
    for example in examples:
        for text in example.documents:
            seen.setdefault(document_id(text), text)
    return [{"id": key, "text": text} for key, text in seen.items()]


def text_prompt(question: str, documents: Sequence[str]) -> str:
    """The raw-text prompt: DEFAULT_PROMPT with the documents' text in place of the slots,
    or the question alone when there are none."""
    if not documents:
        return NO_CONTEXT_PROMPT.replace("{question}", question)
    return DEFAULT_PROMPT.replace("{documents}", "\n".join(documents)).replace(
        "{question}", question)


@dataclass(frozen=True)
class EvaluationReport:
    """Scores per condition, and the first predictions for people to read.

    Attributes:
        scores: Condition name -> QAScores.
        samples: Up to `keep_samples` rows of question, gold answers and each prediction.
    """

    scores: dict[str, QAScores]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"scores": {name: score.to_json() for name, score in self.scores.items()},
                "samples": self.samples}


def _base_answer(model: ClaraModel, prompt: str, max_new_tokens: int) -> str:
    ids = greedy_ids(model, prompt, [], max_new_tokens=max_new_tokens, adapter=None)
    text: str = model.tokenizer.decode(ids, skip_special_tokens=True)
    return text.strip()


def _first_line(text: str) -> str:
    """Greedy decoding of a small model runs on after the answer; score its first line."""
    return text.strip().split("\n", 1)[0].strip()


def evaluate_qa(model: ClaraModel, examples: Sequence[QAExample], store: CompressedStore, *,
                max_new_tokens: int = 24, conditions: Sequence[str] = CONDITIONS,
                keep_samples: int = 5,
                on_example: Callable[[int, int], None] | None = None) -> EvaluationReport:
    """Answer every example under each condition and score the answers.

    Args:
        model: The trained model (its generator answers the compressed condition).
        examples: Held-out questions with their documents and accepted answers.
        store: The documents compressed by this model (`compress_corpus(model,
            corpus_of(examples), ...)`); checked against the model's compressor.
        max_new_tokens: Longest answer.
        conditions: Which of CONDITIONS to run.
        keep_samples: Predictions kept for display.
        on_example: Called with (examples done, total) after each example.

    Raises:
        ValueError: no examples or an unknown condition.
        StoreMismatchError: the store was written by another compressor.
    """
    unknown = set(conditions) - set(CONDITIONS)
    if unknown or not examples:
        raise ValueError(f"nothing to evaluate: {len(examples)} examples, unknown conditions "
                         f"{sorted(unknown)}")
    store.check_model(model)
    predictions: dict[str, list[tuple[str, Sequence[str]]]] = {name: [] for name in conditions}
    samples: list[dict[str, Any]] = []
    for number, example in enumerate(examples):
        row: dict[str, Any] = {"question": example.question, "answers": list(example.answers)}
        for name in conditions:
            if name == "compressed":
                ids = [document_id(text) for text in example.documents]
                text = answer_from_store(model, store, example.question, ids,
                                         max_new_tokens=max_new_tokens)
            else:
                documents = example.documents if name == "raw_text" else ()
                text = _base_answer(model, text_prompt(example.question, documents),
                                    max_new_tokens)
            predicted = _first_line(text)
            predictions[name].append((predicted, example.answers))
            row[name] = predicted
        if len(samples) < keep_samples:
            samples.append(row)
        if on_example is not None:
            on_example(number + 1, len(examples))
    return EvaluationReport({name: score_answers(rows) for name, rows in predictions.items()},
                            samples)
