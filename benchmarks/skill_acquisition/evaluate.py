"""Exact-match accuracy of model directories on the held-out skills, as a table.

Scoring mirrors Mendel's `generation` evaluator with `match: exact`: greedy decoding of
a left-padded batch, the generated text trimmed and compared with the record's answer.
It loads every model with `from_pretrained`, so it checks the saved directories
themselves, not objects still in memory.

    python benchmarks/skill_acquisition/evaluate.py /tmp/mendel-tiny/{base,expert-*}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from mendel.datasets.skills import generate

__all__ = ["TASKS", "accuracy", "evaluate_dirs", "format_table"]

TASKS = ("add", "sort", "reverse")
MAX_NEW_TOKENS = 12


@torch.no_grad()
def accuracy(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict[str, Any]],
    batch_size: int = 256,
) -> float:
    """Share of records whose greedy completion, trimmed, equals the answer exactly."""
    if not records:
        raise ValueError("no records to score")
    correct = 0
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        inputs = tokenizer([r["prompt"] for r in batch], return_tensors="pt", padding=True)
        output = model.generate(
            **inputs,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        correct += sum(t.strip() == r["answer"] for t, r in zip(texts, batch, strict=True))
    return correct / len(records)


def evaluate_dirs(
    dirs: Sequence[Path], split: str = "test", limit: int | None = None
) -> dict[str, dict[str, float]]:
    """Per-model, per-task accuracy on one split (`limit` records per task)."""
    records = {task: generate(task, split)[:limit] for task in TASKS}
    scores: dict[str, dict[str, float]] = {}
    for path in dirs:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        scores[path.name] = {task: accuracy(model, tokenizer, records[task]) for task in TASKS}
    return scores


def format_table(scores: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per task, then the mean."""
    lines = ["| model | " + " | ".join(TASKS) + " | mean |", "|---" * (len(TASKS) + 2) + "|"]
    for name, per_task in scores.items():
        values = [per_task[t] for t in TASKS]
        cells = " | ".join(f"{v:.3f}" for v in values + [sum(values) / len(values)])
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model directories")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--limit", type=int, default=None, help="records per task")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(format_table(evaluate_dirs(args.models, args.split, args.limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
