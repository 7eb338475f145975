"""Supervised training of the tiny models: loss on the answer and EOS only.

The prompt is given, not learned, exactly as in instruction tuning: masking it keeps the
gradient on the skill itself, so an expert's task vector is about its skill and not about
modelling random operands. Batches are drawn with a seeded generator, so a run is
reproducible on the same machine and thread count.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

__all__ = ["Batchable", "Schedule", "encode", "mixture", "train"]

Record = dict[str, Any]
IGNORE = -100


@dataclass(frozen=True)
class Batchable:
    """Right-padded training sequences and their answer-only labels."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Schedule:
    """How long and how hard to train: linear warm-up, then cosine decay to `final` * lr.

    `final=1.0` keeps the rate constant after warm-up, which suits runs that stop early
    on a target rather than at a planned step.
    """

    steps: int
    lr: float
    batch_size: int = 64
    warmup: int = 50
    final: float = 0.1
    weight_decay: float = 0.0

    def lr_at(self, step: int) -> float:
        """The learning rate for a 0-based step."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * (self.final + (1 - self.final) * cosine)


def encode(tokenizer: PreTrainedTokenizerBase, records: Sequence[Record]) -> Batchable:
    """Tokenise records as BOS + prompt + answer + EOS, labelling only answer and EOS.

    Raises:
        ValueError: no records.
    """
    if not records:
        raise ValueError("no records to encode")
    prompts = tokenizer([r["prompt"] for r in records])["input_ids"]
    answers = tokenizer([r["answer"] for r in records], add_special_tokens=False)["input_ids"]
    rows = [(p, a + [tokenizer.eos_token_id]) for p, a in zip(prompts, answers, strict=True)]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for row, (prompt, answer) in enumerate(rows):
        end = len(prompt) + len(answer)
        ids[row, :end] = torch.tensor(prompt + answer)
        mask[row, :end] = 1
        labels[row, len(prompt) : end] = torch.tensor(answer)
    return Batchable(ids, mask, labels)


def mixture(
    parts: dict[str, list[Record]], shares: dict[str, float], size: int, seed: int
) -> list[Record]:
    """`size` records drawn from several tasks in the given proportions (shuffled).

    Raises:
        ValueError: shares that name a task without records, or that are not positive.
    """
    if not shares or any(s <= 0 for s in shares.values()) or set(shares) - set(parts):
        raise ValueError(f"shares {shares} must be positive and name tasks in {list(parts)}")
    rng = random.Random(seed)
    total = sum(shares.values())
    out: list[Record] = []
    for task, share in shares.items():
        out.extend(rng.choices(parts[task], k=round(size * share / total)))
    rng.shuffle(out)
    return out


def train(
    model: LlamaForCausalLM,
    data: Batchable,
    schedule: Schedule,
    seed: int,
    stop: Callable[[], bool] | None = None,
    check_every: int = 50,
) -> list[float]:
    """Train in place with AdamW; returns the mean loss of each 50-step window.

    Args:
        stop: Asked every `check_every` steps (model in eval mode); True ends training.
    """
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    model.train()
    window: list[float] = []
    curve: list[float] = []
    started = time.perf_counter()
    for step in range(schedule.steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        index = torch.randint(len(data), (schedule.batch_size,), generator=generator)
        width = int(data.attention_mask[index].sum(dim=1).max())
        loss = model(
            input_ids=data.input_ids[index, :width],
            attention_mask=data.attention_mask[index, :width],
            labels=data.labels[index, :width],
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        window.append(loss.item())
        if len(window) == 50:
            curve.append(sum(window) / len(window))
            window = []
        if stop is not None and (step + 1) % check_every == 0 and _asked(model, stop):
            print(f"  target reached after {step + 1} steps")
            break
    if window:
        curve.append(sum(window) / len(window))
    model.eval()
    elapsed = time.perf_counter() - started
    print(f"  {elapsed:.1f}s, loss {curve[0]:.3f} -> {curve[-1]:.3f}")
    return curve


def _asked(model: LlamaForCausalLM, stop: Callable[[], bool]) -> bool:
    model.eval()
    try:
        return stop()
    finally:
        model.train()
