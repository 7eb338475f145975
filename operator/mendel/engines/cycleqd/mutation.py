"""Mutation: pushing a child beyond its parents.

SVD mutation (paper) adds U diag(w * S) V^T along every singular direction of the
quality task's expert task vector, w ~ U[0, rate]; as a recipe that is just adding w to
that expert's direction weights. Norms and 1-D tensors are never SVD-mutated.

Gaussian mutation adds N(0, std^2) to every element. A fresh seed per generation would make
every descendant replay one noise tensor per distinct ancestor, a list that grows without
bound. Instead each run has a fixed basis of `NOISE_BASIS_SIZE` seeded noise tensors
N_1..N_P, and a mutation adds std * sum_p u_p N_p with u drawn uniformly on the unit
sphere: given u, every element is still exactly N(0, std^2) (a unit-norm combination of
independent standard normals), mutations of different generations are uncorrelated on
average, and inherited noise folds by seed into at most P terms. What changes is that all
noise lies in a P-dimensional random subspace, as SVD mutation lies in the experts' bases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from mendel.engines.cycleqd.recipe import NoiseTerm, Recipe
from mendel.engines.cycleqd.seeds import derive_seed

__all__ = [
    "NOISE_BASIS_SIZE",
    "MutationMethod",
    "gaussian_mutation_terms",
    "mutate",
    "noise_basis",
    "svd_mutation_weights",
]

MutationMethod = Literal["svd", "gaussian", "none"]

NOISE_BASIS_SIZE = 8
"""Noise tensors per run: the most noise terms any recipe holds, and so the cost of
replaying noise (one seeded normal draw per basis tensor and parameter)."""


def noise_basis(run_seed: int, size: int = NOISE_BASIS_SIZE) -> tuple[int, ...]:
    """The seeds of a run's noise basis (the same in every process and after a resume).

    Raises:
        ValueError: If size is below 1.
    """
    if size < 1:
        raise ValueError(f"the noise basis needs at least one seed, got {size}")
    return tuple(derive_seed(run_seed, "noise-basis", index) for index in range(size))


def gaussian_mutation_terms(
    basis: Sequence[int], std: float, rng: torch.Generator
) -> tuple[NoiseTerm, ...]:
    """`std * sum_p u_p N_p` with u uniform on the unit sphere: per element N(0, std^2).

    Raises:
        ValueError: If the basis is empty or std is negative.
    """
    if not basis:
        raise ValueError("the noise basis is empty")
    if std < 0:
        raise ValueError(f"mutation std must be non-negative, got {std}")
    draw = torch.randn(len(basis), generator=rng, dtype=torch.float64)
    length = float(draw.norm())
    if length == 0.0:  # probability zero; keep the variance with the first tensor alone
        return (NoiseTerm(basis[0], std),)
    return tuple(
        NoiseTerm(seed, std * v / length) for seed, v in zip(basis, draw.tolist(), strict=True)
    )


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
    noise: Sequence[int] = (),
) -> Recipe:
    """Apply one mutation to a child recipe.

    Args:
        recipe: The crossover child.
        method: svd, gaussian or none.
        expert: The quality task's expert (svd only).
        ranks: Directions per matrix of that expert (svd only).
        rate: Upper bound of the svd weights.
        std: Gaussian standard deviation.
        rng: Generator for the svd weights and the Gaussian basis coefficients.
        noise: Seeds of the run's noise basis (gaussian only; see `noise_basis`).

    Returns:
        The mutated recipe (the input itself for "none").

    Raises:
        ValueError: On an unknown method.
    """
    if method == "svd":
        return recipe.with_directions(expert, svd_mutation_weights(ranks, rate, rng))
    if method == "gaussian":
        return recipe.with_noise(*gaussian_mutation_terms(noise, std, rng)) if std > 0 else recipe
    if method == "none":
        return recipe
    raise ValueError(f"unknown mutation method '{method}'; known: svd, gaussian, none")
