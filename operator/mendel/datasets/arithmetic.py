"""One-digit arithmetic questions for small-scale ExperienceLibrary runs: `builtin:arithmetic`.

Training-Free GRPO learns only from groups whose rollouts disagree, so a fidelity check on
a CPU needs a task that a tiny agent gets right about half the time. Two one-digit operands
(0-9) joined by +, - or *, with no parentheses, is such a task: SmolLM2-135M-Instruct
answered 0.44-0.57 of them, with most groups of five sampled answers mixed (measured in the
project's research notes). Questions are short and plain ("What is 7 * 3?") because any
added instruction drops a 135M model's accuracy sharply; answers are integers as text.

All 300 instances exist. A stable hash of each question alone decides its split (about
50% train, 25% validation, 25% test), so the splits are disjoint on every machine, and each
split is shuffled with its own fixed seed, so its order is the same everywhere too.
"""

from __future__ import annotations

import hashlib
import operator
import random
from collections.abc import Callable

from mendel.datasets import DatasetError, Record, register_builtin

__all__ = ["OPERATORS", "SPLITS", "arithmetic", "question", "split_of"]

OPERATORS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
SPLITS = ("train", "validation", "test")
_BUCKETS = ("train", "train", "validation", "test")
"""A question's hash picks one of four buckets: two train, one validation, one test."""


def question(left: int, symbol: str, right: int) -> str:
    """The question text of one instance, e.g. "What is 7 * 3?"."""
    return f"What is {left} {symbol} {right}?"


def split_of(text: str) -> str:
    """The only split that holds this question (a pure function of its text)."""
    digest = hashlib.blake2b(f"arithmetic|{text}".encode(), digest_size=8).digest()
    return _BUCKETS[int.from_bytes(digest, "big") % len(_BUCKETS)]


@register_builtin("arithmetic")
def arithmetic(split: str) -> list[Record]:
    """Every instance of one split, in that split's fixed shuffled order.

    Args:
        split: 'train', 'validation' or 'test'.

    Returns:
        Records {"question", "answer"}, the answer an integer as text ("21", "-4").

    Raises:
        DatasetError: the split is unknown.
    """
    if split not in SPLITS:
        raise DatasetError(f"builtin:arithmetic has no split {split!r}; use train, validation "
                           "or test")
    every = [
        {"question": question(left, symbol, right), "answer": str(compute(left, right))}
        for left in range(10)
        for symbol, compute in OPERATORS.items()
        for right in range(10)
    ]
    records = [record for record in every if split_of(record["question"]) == split]
    random.Random(f"mendel-arithmetic/{split}").shuffle(records)
    return records
