"""Build the skill-acquisition model zoo: base, three experts, multitask and naive merge.

This is the small-scale stand-in for CycleQD's setting (Llama-3-8B-Instruct plus OS,
coding and DB experts). A base model is pretrained from scratch on a mixture in which
each target skill has only a small share, so it knows the prompt format and the alphabet
but masters no skill. Each expert is then fine-tuned from the base on one skill only: it
becomes strong there and, by forgetting, no better (often worse) elsewhere. The two
baselines CycleQD must beat come out of the same run: `multitask`, fine-tuned on all three
skills with the budget of the three experts together, and `naive-merge`, the base plus
the mean of the experts' task vectors.

    python benchmarks/skill_acquisition/prepare.py --out /tmp/mendel-tiny --size tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from model import build_model, build_tokenizer, save
from pretrain import Band, pretrain_to_band
from train import Schedule, encode, mixture, train
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mendel.datasets.skills import generate

__all__ = ["RECIPES", "Recipe", "naive_merge", "prepare", "scaled_sum"]

TASKS = ("add", "sort", "reverse")
SEED = 1234
PROBE_RECORDS = 64


@dataclass(frozen=True)
class Recipe:
    """Budgets for one model size; the experts together get `3 * expert.steps` steps."""

    size: str
    band: Band
    expert: Schedule
    base_shares: dict[str, float] = field(
        default_factory=lambda: {"copy": 0.4, "add": 0.45, "sort": 0.1, "reverse": 0.05}
    )
    train_records: int = 20_000


RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(
        size="tiny",
        band=Band(floor=0.3, ceiling=0.6, round_steps=50, max_steps=2000, lr=2e-3),
        expert=Schedule(steps=200, lr=5e-4, batch_size=64, warmup=20),
    ),
    "small": Recipe(
        size="small",
        band=Band(floor=0.3, ceiling=0.6, round_steps=50, max_steps=3000, lr=1.5e-3),
        expert=Schedule(steps=300, lr=5e-4, batch_size=64, warmup=20),
    ),
}


def naive_merge(
    base: dict[str, torch.Tensor], experts: Sequence[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Task arithmetic with equal weights: base + mean_k (expert_k - base), per tensor.

    Raises:
        ValueError: no experts, or an expert whose tensor names differ from the base's.
    """
    total = _summed_task_vectors(base, experts)
    return {name: tensor + total[name] / len(experts) for name, tensor in base.items()}


def scaled_sum(
    base: dict[str, torch.Tensor], experts: Sequence[dict[str, torch.Tensor]], scale: float
) -> dict[str, torch.Tensor]:
    """Task arithmetic with one shared coefficient: base + scale * sum_k (expert_k - base).

    The naive merge is scale = 1/K. A larger scale keeps more of each expert's skill until
    the task vectors interfere (the plain sum, scale = 1, collapses on the tiny zoo), so a
    well-chosen scale is a stronger training-free baseline than the mean, and the one a
    search over per-expert coefficients such as CycleQD's has to beat.

    Raises:
        ValueError: no experts, or an expert whose tensor names differ from the base's.
    """
    total = _summed_task_vectors(base, experts)
    return {name: tensor + scale * total[name] for name, tensor in base.items()}


def _summed_task_vectors(
    base: dict[str, torch.Tensor], experts: Sequence[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """sum_k (expert_k - base) per tensor, the experts added in the order given."""
    if not experts:
        raise ValueError("a merge needs at least one expert")
    for expert in experts:
        if expert.keys() != base.keys():
            raise ValueError("every expert must have exactly the base's tensor names")
    return {name: sum(e[name] - tensor for e in experts) for name, tensor in base.items()}


def _fine_tune(
    base: LlamaForCausalLM,
    records: list[dict[str, str]],
    tok: PreTrainedTokenizerFast,
    schedule: Schedule,
    seed: int,
) -> LlamaForCausalLM:
    model = copy.deepcopy(base)
    train(model, encode(tok, records), schedule, seed)
    return model


def prepare(out: Path, recipe: Recipe) -> dict[str, Any]:
    """Train and save every model of the zoo under `out`.

    Returns:
        A report: seconds per stage, the base's pretraining steps and its last probe.
    """
    tok = build_tokenizer()
    parts = {t: generate(t, "train", recipe.train_records) for t in recipe.base_shares}
    timings: dict[str, float] = {}

    started = time.perf_counter()
    print(f"base (mixture {recipe.base_shares}, band {recipe.band})")
    base = build_model(recipe.size, tok, SEED)
    probes = {t: generate(t, "validation", PROBE_RECORDS) for t in TASKS}
    steps, probe = pretrain_to_band(base, tok, parts, recipe.base_shares, probes, recipe.band, SEED)
    save(base, tok, out / "base")
    timings["base"] = time.perf_counter() - started

    experts = []
    for number, task in enumerate(TASKS, start=1):
        started = time.perf_counter()
        print(f"expert-{task} ({recipe.expert.steps} steps)")
        expert = _fine_tune(base, parts[task], tok, recipe.expert, SEED + number)
        save(expert, tok, out / f"expert-{task}")
        experts.append(expert)
        timings[f"expert-{task}"] = time.perf_counter() - started

    started = time.perf_counter()
    multi = Schedule(**{**asdict(recipe.expert), "steps": recipe.expert.steps * len(TASKS)})
    print(f"multitask ({multi.steps} steps)")
    records = mixture(parts, dict.fromkeys(TASKS, 1.0), recipe.train_records, SEED)
    save(_fine_tune(base, records, tok, multi, SEED + 10), tok, out / "multitask")
    timings["multitask"] = time.perf_counter() - started

    merged = copy.deepcopy(base)
    merged.load_state_dict(naive_merge(base.state_dict(), [e.state_dict() for e in experts]))
    save(merged, tok, out / "naive-merge")
    return {"seconds": timings, "base_steps": steps, "base_probe": probe}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the models")
    parser.add_argument("--size", choices=sorted(RECIPES), default="tiny")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads while training")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report = prepare(args.out, RECIPES[args.size])
    report["seconds"]["total"] = time.perf_counter() - started
    report |= {"size": args.size, "threads": args.threads}
    (args.out / "prepare.json").write_text(json.dumps(report, indent=2))
    print(" ".join(f"{k}={v:.0f}s" for k, v in report["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
