"""Procedural skills with exact answers: `builtin:skills-<task>`.

CycleQD needs experts that each master one skill and a way to score every merged child
on every skill. Pretrained LLM experts cannot be downloaded in CI or on an air-gapped
laptop, so these generators give a small-scale stand-in: tasks that a tiny character-level
transformer learns in CPU minutes, that share one prompt format ("<operation>=" followed by
the answer) yet need different circuits, and whose answers are computed, not labelled.

Splits are disjoint by construction: every problem instance is hashed, and the hash alone
decides which split may contain it (10% test, 10% validation, 80% train). Each split is
drawn from its own seeded generator, so a split's records are the same on every machine.
Train records are drawn with replacement (small tasks such as `add` have fewer distinct
instances than records); validation and test records are distinct.
"""

from __future__ import annotations

import hashlib
import random
import string
import zlib
from collections.abc import Callable
from typing import Literal

from mendel.datasets import Record, register_builtin

__all__ = [
    "DEFAULT_SIZES",
    "SKILLS",
    "Split",
    "generate",
    "solve",
    "split_of",
]

Split = Literal["train", "validation", "test"]
DEFAULT_SIZES: dict[str, int] = {"train": 20_000, "validation": 512, "test": 512}
"""Records per split when a skill is loaded as `builtin:skills-<task>`."""

_BUCKETS = 10
"""Instances hash into ten buckets: bucket 0 is test, 1 is validation, the rest train."""
_SPLITS: tuple[Split, ...] = ("train", "validation", "test")
_MAX_ATTEMPTS_PER_RECORD = 50


def _draw_add(rng: random.Random) -> str:
    return f"{rng.randint(10, 99)}+{rng.randint(10, 99)}="


def _draw_sort(rng: random.Random) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(4, 6)))
    return f"sort {digits}="


def _draw_reverse(rng: random.Random) -> str:
    letters = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 6)))
    return f"rev {letters}="


def _draw_copy(rng: random.Random) -> str:
    alphabet = string.ascii_lowercase + string.digits
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 6)))
    return f"copy {text}="


def _operand(prompt: str, prefix: str) -> str:
    """The text between an operation's prefix and the final '='."""
    if not prompt.startswith(prefix) or not prompt.endswith("="):
        raise ValueError(f"prompt {prompt!r} is not of the form '{prefix}...='")
    return prompt[len(prefix) : -1]


def _solve_add(prompt: str) -> str:
    left, plus, right = _operand(prompt, "").partition("+")
    if not plus or not left.isdigit() or not right.isdigit():
        raise ValueError(f"prompt {prompt!r} is not of the form 'a+b='")
    return str(int(left) + int(right))


def _solve_sort(prompt: str) -> str:
    return "".join(sorted(_operand(prompt, "sort ")))


def _solve_reverse(prompt: str) -> str:
    return _operand(prompt, "rev ")[::-1]


def _solve_copy(prompt: str) -> str:
    return _operand(prompt, "copy ")


_Drawer = Callable[[random.Random], str]
_Solver = Callable[[str], str]
_TASKS: dict[str, tuple[_Drawer, _Solver]] = {
    "add": (_draw_add, _solve_add),
    "sort": (_draw_sort, _solve_sort),
    "reverse": (_draw_reverse, _solve_reverse),
    "copy": (_draw_copy, _solve_copy),
}
SKILLS: tuple[str, ...] = tuple(_TASKS)
"""Every task; `add`, `sort` and `reverse` are the expert skills, `copy` is a generic
skill meant for pretraining mixtures (it teaches the format without any target skill)."""


def solve(task: str, prompt: str) -> str:
    """The exact answer to a prompt, recomputed from the prompt alone.

    Raises:
        ValueError: unknown task, or a prompt that is not of that task's form.
    """
    return _task(task)[1](prompt)


def split_of(task: str, prompt: str) -> Split:
    """The only split that may hold this problem instance (a pure function of its text)."""
    digest = hashlib.blake2b(f"{task}|{prompt}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % _BUCKETS
    if bucket == 0:
        return "test"
    return "validation" if bucket == 1 else "train"


def generate(task: str, split: str, size: int | None = None) -> list[Record]:
    """Deterministic records of one task's split.

    Args:
        task: One of `SKILLS`.
        split: 'train', 'validation' or 'test'; it also picks the random seed.
        size: Number of records (default: `DEFAULT_SIZES[split]`).

    Returns:
        Records {"prompt", "answer"}; validation and test prompts are distinct.

    Raises:
        ValueError: unknown task or split, a negative size, or a size the split cannot
            supply without repeats.
    """
    draw, solve_one = _task(task)
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(_SPLITS)}")
    size = DEFAULT_SIZES[split] if size is None else size
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    rng = random.Random(zlib.crc32(f"mendel-skills/{task}/{split}".encode()))
    distinct = split != "train"
    seen: set[str] = set()
    records: list[Record] = []
    attempts = 0
    while len(records) < size:
        attempts += 1
        if attempts > _MAX_ATTEMPTS_PER_RECORD * (size + 1):
            raise ValueError(f"{task}/{split} cannot supply {size} distinct records")
        prompt = draw(rng)
        if split_of(task, prompt) != split or (distinct and prompt in seen):
            continue
        seen.add(prompt)
        records.append({"prompt": prompt, "answer": solve_one(prompt)})
    return records


def _task(task: str) -> tuple[_Drawer, _Solver]:
    if task not in _TASKS:
        raise ValueError(f"unknown skill {task!r}; expected one of {list(_TASKS)}")
    return _TASKS[task]


def _register(task: str) -> None:
    # One function per task, so each builtin keeps the (split) -> records signature.
    @register_builtin(f"skills-{task}")
    def load(split: str) -> list[Record]:
        return generate(task, split)

    load.__doc__ = f"`builtin:skills-{task}`: {DEFAULT_SIZES} records per split."


for _name in SKILLS:
    _register(_name)
