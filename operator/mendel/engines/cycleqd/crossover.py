"""Crossover: merge coefficients and the child recipe they give.

The paper draws one coefficient per parent, w_i ~ N(mean, std^2), and normalises by their
sum, so the child is base + sum_i w_i / sum(w) * tau_i (negative coefficients allowed).
A linear merge is an exact recipe combination; TIES/DARE become a replayed merge term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mendel.engines.cycleqd.merge_methods import get_method
from mendel.engines.cycleqd.recipe import MergeTerm, Recipe, combine

__all__ = ["crossover", "draw_coefficients"]

_MAX_DRAWS = 16
_MIN_RELATIVE_SUM = 1e-3


def draw_coefficients(
    count: int, mean: float, std: float, rng: torch.Generator
) -> tuple[float, ...]:
    """Draw `count` coefficients from N(mean, std^2) and normalise them to sum to 1.

    A sum near zero would blow the child far outside the parents' span, so a draw whose
    |sum| is below 1e-3 of sum |w| is redrawn (up to 16 times, same generator, so still
    deterministic) and then replaced by equal weights.

    Args:
        count: Number of parents (at least 1).
        mean: Mean of each coefficient.
        std: Standard deviation of each coefficient.
        rng: Generator for the draws.

    Returns:
        Normalised coefficients.

    Raises:
        ValueError: If count < 1 or std < 0.
    """
    if count < 1:
        raise ValueError(f"need at least one parent, got {count}")
    if std < 0:
        raise ValueError(f"std must be non-negative, got {std}")
    for _ in range(_MAX_DRAWS):
        raw = torch.randn(count, generator=rng, dtype=torch.float64) * std + mean
        total = float(raw.sum())
        magnitude = float(raw.abs().sum())
        if magnitude > 0 and abs(total) >= _MIN_RELATIVE_SUM * magnitude:
            return tuple(float(w) / total for w in raw)
    return tuple(1.0 / count for _ in range(count))


def crossover(
    method: str,
    parents: Mapping[str, Recipe],
    weights: Sequence[float],
    params: Mapping[str, float],
    seed: int,
) -> Recipe:
    """The child recipe of merging the parents with the named method.

    Args:
        method: Registry name (linear, ties, dareLinear, dareTies).
        parents: Parent genome id -> recipe, in parent order.
        weights: Normalised coefficient per parent.
        params: The method's declared parameters.
        seed: Seed of the random masks (DARE), mixed with each tensor's name on replay.

    Returns:
        For a linear method, the exact combination of the parents' recipes; otherwise a
        recipe with one merge term that replays the method from the parents.

    Raises:
        ValueError: On an unknown method or a parent/weight count mismatch.
    """
    registered = get_method(method)
    if len(parents) != len(weights):
        raise ValueError(f"{len(parents)} parents but {len(weights)} weights")
    if registered.linear:
        return combine(list(parents.values()), list(weights))
    term = MergeTerm(method, tuple(parents), tuple(weights), dict(params), seed)
    return Recipe(merges=(term,))
