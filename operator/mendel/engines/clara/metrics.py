"""Answer metrics for CLaRa's evaluation: Cover-EM, exact match and token F1.

Pure functions of strings. Both sides are normalised the SQuAD way (lowercase, punctuation
and the articles a/an/the removed, whitespace collapsed) before comparing, and a prediction
scores the best value over its gold answers. Cover-EM is the paper's headline metric: a
compressed-context generator often wraps a right answer in a sentence, which exact match
counts as wrong.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["QAScores", "cover_em", "exact_match", "f1", "normalize_answer", "score_answers"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    lowered = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def _golds(answers: Sequence[str]) -> list[str]:
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not one string")
    if not answers:
        raise ValueError("a prediction needs at least one gold answer to be scored")
    return [normalize_answer(answer) for answer in answers]


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0.

    Raises:
        ValueError: no gold answers.
        TypeError: `answers` is a single string (a common slip that would score characters).
    """
    predicted = normalize_answer(prediction)
    return float(any(predicted == gold for gold in _golds(answers)))


def cover_em(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when a normalised gold answer occurs in the normalised prediction as whole words.

    Whole words, not raw substrings: "1" must not be found in "1984", nor "cat" in
    "concatenate". A gold answer that normalises to nothing covers only an empty prediction.

    Raises:
        ValueError: no gold answers.
        TypeError: `answers` is a single string.
    """
    predicted = f" {normalize_answer(prediction)} "
    for gold in _golds(answers):
        if (f" {gold} " in predicted) if gold else not predicted.strip():
            return 1.0
    return 0.0


def _token_f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token-overlap F1 between the normalised prediction and a gold answer.

    Two empty token lists score 1.0; one empty against a non-empty one scores 0.0.

    Raises:
        ValueError: no gold answers.
        TypeError: `answers` is a single string.
    """
    predicted = normalize_answer(prediction).split()
    return max(_token_f1(predicted, gold.split()) for gold in _golds(answers))


@dataclass(frozen=True)
class QAScores:
    """Mean metrics over a set of predictions.

    Attributes:
        cover_em: Mean Cover-EM.
        exact_match: Mean exact match.
        f1: Mean token F1.
        count: Predictions scored.
    """

    cover_em: float
    exact_match: float
    f1: float
    count: int

    def to_json(self) -> dict[str, float | int]:
        """A flat dict for MLflow metrics and status summaries."""
        return {"cover_em": self.cover_em, "exact_match": self.exact_match, "f1": self.f1,
                "count": self.count}


def score_answers(records: Iterable[tuple[str, Sequence[str]]]) -> QAScores:
    """Average the three metrics over (prediction, gold answers) records.

    Raises:
        ValueError: no records, or a record without gold answers.
        TypeError: a record's answers are a single string.
    """
    totals = [0.0, 0.0, 0.0]
    count = 0
    for prediction, answers in records:
        totals[0] += cover_em(prediction, answers)
        totals[1] += exact_match(prediction, answers)
        totals[2] += f1(prediction, answers)
        count += 1
    if count == 0:
        raise ValueError("no records to score")
    return QAScores(totals[0] / count, totals[1] / count, totals[2] / count, count)
