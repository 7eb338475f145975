"""Mutation: pushing a child beyond its parents.

SVD mutation (paper) adds U diag(w * S) V^T along every singular direction of the
quality task's expert task vector, w ~ U[0, rate]; as a recipe that is just adding w to
that expert's direction weights. Gaussian mutation adds N(0, std^2) to every element and
is kept as a replayed (seed, std) term. Norms and 1-D tensors are never SVD-mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from mendel.engines.cycleqd.recipe import NoiseTerm, Recipe

__all__ = ["MutationMethod", "mutate", "svd_mutation_weights"]

MutationMethod = Literal["svd", "gaussian", "none"]


def svd_mutation_weights(
    ranks: Mapping[str, int], rate: float, rng: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw w ~ U[0, rate] for every singular direction, matrices in name order.

    Args:
        ranks: Matrix name -> number of directions of the expert's basis.
        rate: Upper bound of each weight.
        rng: Generator for the draws.

    Returns:
        Matrix name -> float32 weights.

    Raises:
        ValueError: If rate is negative.
    """
    if rate < 0:
        raise ValueError(f"mutation rate must be non-negative, got {rate}")
    return {
        name: torch.rand(ranks[name], generator=rng, dtype=torch.float32) * rate
        for name in sorted(ranks)
    }


def mutate(
    recipe: Recipe,
    method: MutationMethod,
    *,
    expert: str,
    ranks: Mapping[str, int],
    rate: float,
    std: float,
    rng: torch.Generator,
    seed: int,
) -> Recipe:
    """Apply one mutation to a child recipe.

    Args:
        recipe: The crossover child.
        method: svd, gaussian or none.
        expert: The quality task's expert (svd only).
        ranks: Directions per matrix of that expert (svd only).
        rate: Upper bound of the svd weights.
        std: Gaussian standard deviation.
        rng: Generator for the svd weights.
        seed: Seed of the replayed Gaussian noise.

    Returns:
        The mutated recipe (the input itself for "none").

    Raises:
        ValueError: On an unknown method.
    """
    if method == "svd":
        return recipe.with_directions(expert, svd_mutation_weights(ranks, rate, rng))
    if method == "gaussian":
        return recipe.with_noise(NoiseTerm(seed=seed, scale=std)) if std > 0 else recipe
    if method == "none":
        return recipe
    raise ValueError(f"unknown mutation method '{method}'; known: svd, gaussian, none")
