"""Turning a recipe into weights, in place, in one resident model.

Evaluation dominates CycleQD's cost, so one model stays resident and each child is
written into its existing parameter storage: per tensor, `copy_` the base and `add_` the
recipe's delta. No parameter is reallocated, so compiled graphs and caches keyed on
storage stay valid between children. Non-linear (TIES/DARE) terms are replayed from their
parents' recipes in dependency order, memoised per tensor, without recursion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from mendel.engines.cycleqd.merge_methods import get_method
from mendel.engines.cycleqd.recipe import MergeTerm, Recipe
from mendel.engines.cycleqd.seeds import generator
from mendel.engines.cycleqd.svd import add_direction_term, direction_term
from mendel.engines.cycleqd.taskvectors import TaskVectorBank

__all__ = ["Resolver", "materialize", "replay_order", "tensor_delta"]

Resolver = Callable[[str], Recipe]
"""Genome id -> recipe; needed only for recipes with merge terms."""

_Memo = dict[str, "torch.Tensor | None"]


def replay_order(recipe: Recipe, resolve: Resolver | None) -> list[tuple[str, Recipe]]:
    """Every ancestor a recipe's merge terms replay from, parents before children.

    Raises:
        ValueError: If a merge term exists but no resolver is given, or on a cycle.
    """
    if recipe.merges and resolve is None:
        raise ValueError("this recipe replays merges from its parents; pass a resolver")
    order: list[tuple[str, Recipe]] = []
    done: set[str] = set()
    for root in recipe.parents_needed:
        stack: list[tuple[str, bool]] = [(root, False)]
        active: set[str] = set()
        while stack:
            gid, expanded = stack.pop()
            if expanded:
                active.discard(gid)
                if gid not in done:
                    done.add(gid)
                    order.append((gid, _resolve(resolve, gid)))
                continue
            if gid in done:
                continue
            if gid in active:
                raise ValueError(f"genome '{gid}' is its own ancestor")
            active.add(gid)
            stack.append((gid, True))
            stack.extend((p, False) for p in _resolve(resolve, gid).parents_needed)
    return order


def _resolve(resolve: Resolver | None, gid: str) -> Recipe:
    if resolve is None:
        raise ValueError(f"no resolver for genome '{gid}'")
    return resolve(gid)


def tensor_delta(
    recipe: Recipe, name: str, bank: TaskVectorBank, memo: Mapping[str, torch.Tensor | None]
) -> torch.Tensor | None:
    """The recipe's delta for one tensor, in float32 on the bank's device; None if zero.

    Args:
        recipe: What to materialise.
        name: Tensor name.
        bank: Base, task vectors and SVD bases.
        memo: Deltas of this tensor for every genome a merge term names.
    """
    acc: torch.Tensor | None = None
    for expert, c in recipe.coefficients.items():
        if c != 0.0:
            acc = _accumulate(acc, bank.task_vectors[expert][name], c)
    for expert, per in recipe.directions.items():
        weights = per.get(name)
        if weights is None:
            continue
        factors = bank.svd[expert][name]
        if acc is None:
            acc = direction_term(factors, weights)
        else:
            add_direction_term(acc, factors, weights)
    base = bank.base[name]
    for term in recipe.noise:
        noise = torch.randn(base.shape, generator=generator(term.seed, name))
        acc = _accumulate(acc, noise.to(base.device), term.scale)
    for merge in recipe.merges:
        acc = _accumulate(acc, _merge_delta(merge, name, base, memo), merge.scale)
    return acc


def _merge_delta(
    term: MergeTerm, name: str, base: torch.Tensor, memo: Mapping[str, torch.Tensor | None]
) -> torch.Tensor:
    zeros = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    deltas = [d if (d := memo[p]) is not None else zeros for p in term.parents]
    method = get_method(term.method)
    return method.merge(deltas, term.weights, term.params, generator(term.seed, name))


def _accumulate(acc: torch.Tensor | None, term: torch.Tensor, scale: float) -> torch.Tensor:
    if acc is None:
        return term.to(torch.float32) * scale
    return acc.add_(term.to(torch.float32), alpha=scale)


def materialize(
    recipe: Recipe, model: nn.Module, bank: TaskVectorBank, resolve: Resolver | None = None
) -> None:
    """Write `base + delta(recipe)` into the model's parameters, in place.

    Args:
        recipe: What to materialise.
        model: The resident model; its parameter names must be the bank's tensor names.
        bank: Base, task vectors and SVD bases.
        resolve: Genome id -> recipe, for recipes with merge terms.

    Raises:
        ValueError: If a parameter has no base tensor, or a shape differs.
    """
    order = replay_order(recipe, resolve)
    params = dict(model.named_parameters())
    for name, param in params.items():
        base = bank.base.get(name)
        if base is None:
            raise ValueError(f"model parameter '{name}' has no tensor in the base model")
        if base.shape != param.shape:
            raise ValueError(
                f"model parameter '{name}' has shape {tuple(param.shape)}, base {tuple(base.shape)}"
            )
    with torch.no_grad():
        for name, param in params.items():
            memo: _Memo = {}
            for gid, ancestor in order:
                memo[gid] = tensor_delta(ancestor, name, bank, memo)
            delta = tensor_delta(recipe, name, bank, memo)
            if delta is None:
                param.copy_(bank.base[name])
            else:  # one pass: read base and delta, write the parameter in its own dtype
                torch.add(bank.base[name], delta.to(param.device), out=param.data)
