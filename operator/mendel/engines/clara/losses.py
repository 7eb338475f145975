"""CLaRa's training losses as pure functions of tensors.

Stage I and instruction tuning minimise CE + mse_weight * MSE (seed-algorithms §3.1.3):
CE is the generator's next-token cross-entropy on the answer tokens only; MSE compares, per
chunk, the mean final hidden state over the chunk's real tokens with the mean over its
memory tokens, both from the same compressor forward, so that the memory states stay in
the space the generator reads documents in. Stage II uses the CE alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from mendel.engines.clara.batches import IGNORE_INDEX

__all__ = [
    "StageOneLoss",
    "answer_cross_entropy",
    "masked_mean",
    "memory_mse",
    "stage_one_loss",
]


class StageOneLoss(NamedTuple):
    """The total to back-propagate and its two parts (for logging)."""

    total: torch.Tensor
    cross_entropy: torch.Tensor
    mse: torch.Tensor


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens.

    Args:
        logits: [rows, width, vocab]; position t predicts label t+1.
        labels: [rows, width], IGNORE_INDEX where nothing is learned.

    Raises:
        ValueError: the shapes disagree, or no token is labelled.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels "
                         f"{tuple(labels.shape)}")
    targets = labels[:, 1:]
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError("no answer token is labelled")
    predictions = logits[:, :-1].float()
    return F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]),
                           targets.reshape(-1), ignore_index=IGNORE_INDEX)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `states` [rows, width, hidden] over positions where `mask` [rows, width] is True.

    A row with no such position gives zeros.
    """
    weights = mask.to(states.dtype).unsqueeze(-1)
    total = (states * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1.0)


def memory_mse(document_mean: torch.Tensor, memory_mean: torch.Tensor) -> torch.Tensor:
    """MSE between mean document states and mean memory states [chunks, hidden], averaged
    over chunks and hidden units (the reference's `F.mse_loss` reduction)."""
    return F.mse_loss(memory_mean.float(), document_mean.float())


def stage_one_loss(cross_entropy: torch.Tensor, mse: torch.Tensor,
                   mse_weight: float) -> StageOneLoss:
    """CE + mse_weight * MSE; with mse_weight 0 the MSE is reported but left out of the total."""
    total = cross_entropy if mse_weight == 0 else cross_entropy + mse_weight * mse
    return StageOneLoss(total, cross_entropy, mse)
