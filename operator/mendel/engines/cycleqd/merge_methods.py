"""Crossover merge methods: pure tensor functions in one registry.

Semantics follow mergekit's generalized task arithmetic: each parent's delta is optionally
sparsified (TIES: keep the largest-magnitude entries; DARE: keep entries at random and
rescale by 1/density), weighted, optionally reduced to the entries agreeing with the
elected sign (TIES), summed, and divided by the sum of the weights that contributed.
The search reads each method's declared parameters from here and never re-lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "MERGE_METHODS",
    "MergeMethod",
    "ParameterDef",
    "dare_mask",
    "get_method",
    "magnitude_mask",
    "method_parameters",
    "sign_consensus_mask",
    "weighted_merge",
]

MergeFn = Callable[
    [Sequence[torch.Tensor], Sequence[float], Mapping[str, float], torch.Generator], torch.Tensor
]
_ZERO_DIVISOR = 1e-8


@dataclass(frozen=True)
class ParameterDef:
    """A scalar parameter a merge method reads from `spec.algorithm.crossover`."""

    name: str
    description: str


@dataclass(frozen=True)
class MergeMethod:
    """One crossover method.

    Attributes:
        name: The spec's `crossover.method` value.
        description: One line for model cards and logs.
        parameters: Scalars it needs, by their crossover-spec field name.
        reference_url: The paper that defines it (used as a lineage tag).
        linear: True if the child is a linear combination of the parents (a pure recipe);
            False if it must be replayed from the parents' deltas.
        merge: (deltas, weights, params, generator) -> merged delta.
    """

    name: str
    description: str
    parameters: tuple[ParameterDef, ...]
    reference_url: str
    linear: bool
    merge: MergeFn


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `int(density * numel)` entries of largest magnitude (at least one).

    Raises:
        ValueError: If density is outside (0, 1].
    """
    _check_density(density)
    if density >= 1.0:
        return torch.ones_like(delta, dtype=torch.bool)
    keep = max(1, int(density * delta.numel()))
    index = torch.topk(delta.abs().flatten(), keep, largest=True, sorted=False).indices
    mask = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    mask[index] = True
    return mask.view_as(delta)


def dare_mask(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry independently with probability `density` (drawn on the CPU).

    Raises:
        ValueError: If density is outside (0, 1].
    """
    _check_density(density)
    draw = torch.rand(delta.shape, generator=generator, dtype=torch.float32)
    return (draw < density).to(delta.device)


def sign_consensus_mask(weighted: torch.Tensor) -> torch.Tensor:
    """TIES sign election over stacked weighted deltas (dim 0 = parent).

    The elected sign is that of the sum (ties go to +); an entry survives if its sign
    equals it, so zeros never count.
    """
    majority = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return weighted.sign() == majority


def weighted_merge(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    consensus: bool,
) -> torch.Tensor:
    """Weighted sum of (already sparsified) deltas, normalised by contributing weights.

    Args:
        deltas: One tensor per parent, same shape.
        weights: One weight per parent.
        consensus: Apply TIES sign election first (the "disjoint mean").

    Returns:
        The merged delta in float32.

    Raises:
        ValueError: If the counts differ or no delta is given.
    """
    if not deltas or len(deltas) != len(weights):
        raise ValueError(f"need one weight per delta, got {len(deltas)} and {len(weights)}")
    stacked = torch.stack([d.to(torch.float32) for d in deltas])
    w = torch.tensor(list(weights), dtype=torch.float32, device=stacked.device)
    w = w.view(-1, *([1] * (stacked.ndim - 1)))
    weighted = stacked * w
    if consensus:
        mask = sign_consensus_mask(weighted)
        mixed = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0).expand_as(mixed)
    divisor = torch.where(divisor.abs() < _ZERO_DIVISOR, torch.ones_like(divisor), divisor)
    return mixed / divisor


def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")


def _linear(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    _: Mapping[str, float],
    __: torch.Generator,
) -> torch.Tensor:
    return weighted_merge(deltas, weights, consensus=False)


def _ties(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    params: Mapping[str, float],
    _: torch.Generator,
) -> torch.Tensor:
    density = params["density"]
    trimmed = [d * magnitude_mask(d, density) for d in deltas]
    return weighted_merge(trimmed, weights, consensus=True)


def _dare(consensus: bool) -> MergeFn:
    def merge(
        deltas: Sequence[torch.Tensor],
        weights: Sequence[float],
        params: Mapping[str, float],
        generator: torch.Generator,
    ) -> torch.Tensor:
        density = params["density"]
        dropped = [d * dare_mask(d, density, generator) / density for d in deltas]
        return weighted_merge(dropped, weights, consensus=consensus)

    return merge


_DENSITY = ParameterDef("density", "Fraction of each parent delta's entries kept.")
_TASK_ARITHMETIC = "https://arxiv.org/abs/2212.04089"
_TIES = "https://arxiv.org/abs/2306.01708"
_DARE = "https://arxiv.org/abs/2311.03099"

MERGE_METHODS: Mapping[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod(
            "linear",
            "Normalised linear merge of task vectors (CycleQD crossover).",
            (),
            _TASK_ARITHMETIC,
            True,
            _linear,
        ),
        MergeMethod(
            "ties",
            "TIES: trim by magnitude, elect sign, disjoint mean.",
            (_DENSITY,),
            _TIES,
            False,
            _ties,
        ),
        MergeMethod(
            "dareLinear",
            "DARE: random drop with 1/density rescale, linear sum.",
            (_DENSITY,),
            _DARE,
            False,
            _dare(consensus=False),
        ),
        MergeMethod(
            "dareTies",
            "DARE drop and rescale, then TIES sign election.",
            (_DENSITY,),
            _DARE,
            False,
            _dare(consensus=True),
        ),
    )
}


def get_method(name: str) -> MergeMethod:
    """The registered method called `name`.

    Raises:
        ValueError: Listing the known methods if the name is unknown.
    """
    method = MERGE_METHODS.get(name)
    if method is None:
        raise ValueError(f"unknown merge method '{name}'; known: {sorted(MERGE_METHODS)}")
    return method


def method_parameters(method: MergeMethod, source: object) -> dict[str, float]:
    """Read the method's declared parameters from an object (the crossover spec) by name.

    Raises:
        ValueError: If the source lacks a declared parameter.
    """
    values: dict[str, float] = {}
    for param in method.parameters:
        if not hasattr(source, param.name):
            raise ValueError(f"merge method '{method.name}' needs parameter '{param.name}'")
        values[param.name] = float(getattr(source, param.name))
    return values
