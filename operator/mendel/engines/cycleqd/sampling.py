"""Parent selection from the quality task's archive.

Elite sampling as the paper defines it: gamma_j = prod_i [alpha_low + norm(x_ji) *
(alpha_high - alpha_low)], with x_j = (quality, descriptor scores) min-max normalised over
the archive, so every factor lies in [alpha_low, alpha_high]. (The reference code maps to
[0.5, 1.3] and normalises bin indices; the paper wins.) Random sampling is uniform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from mendel.engines.cycleqd.archive import Archive

__all__ = ["SamplingMethod", "elite_weights", "sample_parents"]

SamplingMethod = Literal["elite", "random"]


def elite_weights(
    points: Sequence[Sequence[float]], alpha_low: float, alpha_high: float
) -> list[float]:
    """Selection probabilities of elites from their (quality, descriptor...) points.

    A column whose values are all equal contributes alpha_low to every elite; if every
    gamma is equal (or their sum is not positive) the result is uniform.

    Args:
        points: One row per elite, same length.
        alpha_low: Factor for the column minimum.
        alpha_high: Factor for the column maximum.

    Returns:
        Probabilities summing to 1, in row order.

    Raises:
        ValueError: If there are no points, rows differ in length, or alpha_low >= alpha_high.
    """
    if not points:
        raise ValueError("need at least one elite to sample from")
    if not alpha_low < alpha_high:
        raise ValueError(f"alpha_low ({alpha_low}) must be below alpha_high ({alpha_high})")
    width = len(points[0])
    if any(len(p) != width for p in points):
        raise ValueError("every elite needs the same number of coordinates")
    gammas = [1.0] * len(points)
    for column in range(width):
        values = [p[column] for p in points]
        low, span = min(values), max(values) - min(values)
        for j, value in enumerate(values):
            norm = (value - low) / span if span > 0 else 0.0
            gammas[j] *= alpha_low + norm * (alpha_high - alpha_low)
    total = sum(gammas)
    if total <= 0 or max(gammas) == min(gammas):
        return [1.0 / len(points)] * len(points)
    return [g / total for g in gammas]


def sample_parents(
    archive: Archive,
    method: SamplingMethod,
    alpha_low: float,
    alpha_high: float,
    rng: torch.Generator,
    pool: Sequence[str] = (),
) -> tuple[str, str]:
    """Two distinct genome ids from the archive, drawn without replacement.

    If the archive holds fewer than two elites, the missing parents are drawn uniformly
    from `pool` (e.g. every elite of every archive), so the first cycles still breed.

    Raises:
        ValueError: If fewer than two distinct genomes are available at all.
    """
    elites = archive.elites()
    if len(elites) >= 2:
        if method == "elite":
            rows = [[e.quality, *(e.scores[d] for d in archive.descriptors)] for e in elites]
            probs = elite_weights(rows, alpha_low, alpha_high)
        else:
            probs = [1.0] * len(elites)
        weights = torch.tensor(probs, dtype=torch.float64)
        picked = torch.multinomial(weights, 2, replacement=False, generator=rng).tolist()
        return elites[picked[0]].genome_id, elites[picked[1]].genome_id
    chosen = [e.genome_id for e in elites]
    others = sorted(set(pool) - set(chosen))
    if len(chosen) + len(others) < 2:
        raise ValueError("need at least two distinct genomes to choose parents from")
    while len(chosen) < 2:
        index = int(torch.randint(len(others), (1,), generator=rng))
        chosen.append(others.pop(index))
    return chosen[0], chosen[1]
