"""Stage II's differentiable top-k: hard selection forward, soft selection backward.

Seed-algorithms §3.1.6 (eqs. 3.3-3.5): scores are cosine similarities divided by a
temperature tau; for each of k slots, the hard choice is the best candidate not yet taken
and the soft choice is a softmax over the same candidates; Z = Z_hard + (Z_soft - SG(Z_soft))
equals Z_hard exactly in the forward pass while its gradient is the soft one. A taken
candidate is excluded from later softmaxes with -inf: the reference adds log(1e-8) = -18.4,
which does not exclude anything when scores / 0.02 span +-50 (engines-offline §3.2.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_scores", "select_memories", "soft_topk", "straight_through_topk"]

MIN_TAU = 1e-6


def cosine_scores(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each query [batch, dim] with its candidates [batch, n, dim]."""
    return F.cosine_similarity(queries.unsqueeze(1).float(), candidates.float(), dim=-1)


def soft_topk(scores: torch.Tensor, k: int, tau: float,
              valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The hard and the soft selections, each [batch, k, n].

    Slot j's hard choice is the best valid candidate not taken by slots before it; its soft
    choice is softmax(scores / tau) over the same candidates, taken ones at -inf.

    Args:
        scores: [batch, n] similarity scores.
        k: Candidates to select per row, in decreasing score order.
        tau: Softmax temperature (clamped below at 1e-6).
        valid: Optional [batch, n] bool; False candidates are never selected.

    Raises:
        ValueError: k is not positive or a row has fewer than k valid candidates.
    """
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    fewest = int(valid.sum(dim=1).min())
    if k < 1 or fewest < k:
        raise ValueError(f"cannot select {k} of {fewest} valid candidates")
    scaled = scores / max(tau, MIN_TAU)
    available = valid.clone()
    hard_slots, soft_slots = [], []
    for _ in range(k):
        masked = scaled.masked_fill(~available, float("-inf"))
        soft = torch.softmax(masked, dim=-1)
        hard = F.one_hot(masked.argmax(dim=-1), scores.shape[-1]).to(soft.dtype)
        hard_slots.append(hard)
        soft_slots.append(soft)
        available = available & ~hard.bool()
    return torch.stack(hard_slots, dim=1), torch.stack(soft_slots, dim=1)


def straight_through_topk(scores: torch.Tensor, k: int, tau: float,
                          valid: torch.Tensor | None = None) -> torch.Tensor:
    """Selection matrices Z [batch, k, n]: exactly one-hot forward, softmax gradient backward.

    Arguments and errors as `soft_topk`.
    """
    hard, soft = soft_topk(scores, k, tau, valid)
    return hard + (soft - soft.detach())


def select_memories(selection: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The selected candidates [batch, k, dim] = Z [batch, k, n] @ candidates [batch, n, dim].

    With a one-hot Z the forward values are exactly the chosen candidates.
    """
    return torch.bmm(selection.to(candidates.dtype), candidates)
