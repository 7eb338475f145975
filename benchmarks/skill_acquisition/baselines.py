"""The zoo's baselines on the held-out test split, with the scaled-sum merge, as raw JSON.

Adds `scaled-sum` (base + λ Σ_k τ_k, λ = 0.6 by default: the README's validation probe
found it above the naive mean) to a zoo that `prepare.py` built, then scores base,
experts, naive merge, scaled sum and multitask with `evaluate.py` on the test split.
The scores go to `results/baselines.json` with the zoo's own report (`prepare.json`:
seconds per stage, the base's pretraining steps and probe) and the environment, so the
README's table can be checked against what was recorded.

    python benchmarks/skill_acquisition/baselines.py --zoo /tmp/mendel-tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from environment import environment
from evaluate import evaluate_dirs, format_table
from model import save
from prepare import TASKS, scaled_sum
from transformers import AutoModelForCausalLM, AutoTokenizer

from mendel.datasets.skills import generate

HERE = Path(__file__).resolve().parent
SCALED_SUM = "scaled-sum"
DEFAULT_SCALE = 0.6
MODELS = ("base", *(f"expert-{t}" for t in TASKS), "naive-merge", SCALED_SUM, "multitask")


def write_scaled_sum(zoo: Path, scale: float) -> Path:
    """Save base + scale * Σ (expert - base) as `<zoo>/scaled-sum`, experts in task order."""
    base = AutoModelForCausalLM.from_pretrained(zoo / "base")
    experts = [
        AutoModelForCausalLM.from_pretrained(zoo / f"expert-{task}").state_dict()
        for task in TASKS
    ]
    base.load_state_dict(scaled_sum(base.state_dict(), experts, scale))
    out = zoo / SCALED_SUM
    save(base, AutoTokenizer.from_pretrained(zoo / "base"), out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True, help="what prepare.py --out wrote")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="λ of the sum")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    write_scaled_sum(args.zoo, args.scale)
    started = time.perf_counter()
    scores = evaluate_dirs([args.zoo / name for name in MODELS], split="test")
    seconds = time.perf_counter() - started
    print(format_table(scores))
    record = {
        "split": "test",
        "records_per_task": {task: len(generate(task, "test")) for task in TASKS},
        "scaled_sum_scale": args.scale,
        "scores": scores,
        "means": {name: sum(s.values()) / len(s) for name, s in scores.items()},
        "evaluation_seconds": round(seconds, 1),
        "zoo": json.loads((args.zoo / "prepare.json").read_text()),
        "environment": environment(args.threads),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "baselines.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
