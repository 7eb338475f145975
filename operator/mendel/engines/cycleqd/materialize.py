"""Turning a recipe into weights, in place, in one resident model.

Evaluation dominates CycleQD's cost, so one model stays resident and each child is
written into its existing parameter storage: per tensor, `copy_` the base and `add_` the
recipe's delta (a base kept in host memory is copied to the device first, one tensor at a
time, see `place_bank`). No parameter is reallocated, so compiled graphs and caches keyed
on storage stay valid between children. Non-linear (TIES/DARE) terms are replayed from their
parents' recipes in dependency order, memoised per tensor, without recursion; a genome
whose replay would reach too many ancestors is pinned to its dense delta instead, so the
chain a descendant replays stays bounded however many generations run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from mendel.engines.cycleqd.merge_methods import get_method
from mendel.engines.cycleqd.recipe import MergeTerm, Recipe
from mendel.engines.cycleqd.seeds import generator
from mendel.engines.cycleqd.svd import add_direction_term, direction_term
from mendel.engines.cycleqd.taskvectors import TaskVectorBank

__all__ = [
    "MAX_REPLAYED_ANCESTORS",
    "Resolver",
    "bounded_recipe",
    "materialize",
    "materialize_bounded",
    "replay_order",
    "tensor_delta",
]

MAX_REPLAYED_ANCESTORS = 8
"""A new genome whose merges replay more ancestors than this is pinned to its deltas."""

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
    """The recipe's delta for one tensor, in float32 on the bank's device (its task
    vectors'); None if zero.

    Terms are summed in a canonical order (experts and noise seeds sorted, merges in
    recipe order) that does not depend on how the recipe's mappings were built or read
    back: float addition is not associative, and a checkpoint's JSON sorts keys, so
    insertion order would make a resumed run differ from the uninterrupted one.

    Args:
        recipe: What to materialise.
        name: Tensor name.
        bank: Base, task vectors and SVD bases.
        memo: Deltas of this tensor for every genome a merge term names.
    """
    shape, device = bank.base[name].shape, bank.device
    acc: torch.Tensor | None = None
    dense = recipe.dense.get(name)
    if dense is not None:  # first, so a pinned recipe adds exactly its stored delta
        acc = _accumulate(acc, dense.to(device), 1.0)
    for expert in sorted(recipe.coefficients):
        c = recipe.coefficients[expert]
        if c != 0.0:
            acc = _accumulate(acc, bank.task_vectors[expert][name], c)
    for expert in sorted(recipe.directions):
        weights = recipe.directions[expert].get(name)
        if weights is None:
            continue
        factors = bank.svd[expert][name]
        if acc is None:
            acc = direction_term(factors, weights)
        else:
            add_direction_term(acc, factors, weights)
    for term in sorted(recipe.noise, key=lambda t: t.seed):
        noise = torch.randn(shape, generator=generator(term.seed, name))
        acc = _accumulate(acc, noise.to(device), term.scale)
    for merge in recipe.merges:
        zeros = torch.zeros(shape, dtype=torch.float32, device=device)
        acc = _accumulate(acc, _merge_delta(merge, name, zeros, memo), merge.scale)
    return acc


def _merge_delta(
    term: MergeTerm, name: str, zeros: torch.Tensor, memo: Mapping[str, torch.Tensor | None]
) -> torch.Tensor:
    deltas = [d if (d := memo[p]) is not None else zeros for p in term.parents]
    method = get_method(term.method)
    return method.merge(deltas, term.weights, term.params, generator(term.seed, name))


def _accumulate(acc: torch.Tensor | None, term: torch.Tensor, scale: float) -> torch.Tensor:
    if acc is None:
        return term.to(torch.float32) * scale
    return acc.add_(term.to(torch.float32), alpha=scale)


def _checked_parameters(model: nn.Module, bank: TaskVectorBank) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    for name, param in params.items():
        base = bank.base.get(name)
        if base is None:
            raise ValueError(f"model parameter '{name}' has no tensor in the base model")
        if base.shape != param.shape:
            raise ValueError(
                f"model parameter '{name}' has shape {tuple(param.shape)}, base {tuple(base.shape)}"
            )
        misplaced = _misplaced_tensor(name, param.device, bank)
        if misplaced is not None:
            raise ValueError(
                f"model parameter '{name}' is on {param.device} but the bank on {misplaced}; "
                "place the bank next to the model first (place_bank)"
            )
    return params


def _misplaced_tensor(name: str, device: torch.device, bank: TaskVectorBank) -> str | None:
    """Where the first of the bank's tensors for `name` that is not on `device` lies, or
    None. The base may also be in host memory (streamed, see `place_bank`); everything a
    delta is computed from must be on the parameter's device."""
    base = bank.base[name].device
    if base != device and base.type != "cpu":
        return str(base)
    placed = [tau[name].device for tau in bank.task_vectors.values() if name in tau]
    placed += [per[name].u.device for per in bank.svd.values() if name in per]
    return next((str(d) for d in placed if d != device), None)


def _deltas(
    recipe: Recipe, names: Iterable[str], bank: TaskVectorBank, order: list[tuple[str, Recipe]]
) -> Iterator[tuple[str, torch.Tensor | None]]:
    """(name, delta) per tensor, replaying ancestors tensor by tensor (memo per tensor)."""
    for name in names:
        memo: _Memo = {}
        for gid, ancestor in order:
            memo[gid] = tensor_delta(ancestor, name, bank, memo)
        yield name, tensor_delta(recipe, name, bank, memo)


def materialize(
    recipe: Recipe,
    model: nn.Module,
    bank: TaskVectorBank,
    resolve: Resolver | None = None,
    *,
    capture: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `base + delta(recipe)` into the model's parameters, in place.

    Args:
        recipe: What to materialise.
        model: The resident model; its parameter names must be the bank's tensor names.
        bank: Base, task vectors and SVD bases.
        resolve: Genome id -> recipe, for recipes with merge terms.
        capture: If given, receives each non-zero float32 delta by tensor name, so the
            genome can be pinned to them (`Recipe.pinned`) with bit-identical weights.

    Raises:
        ValueError: If a parameter has no base tensor, a shape differs, or a tensor of the
            bank is on another device than the parameter (the base may be on the host).
    """
    order = replay_order(recipe, resolve)
    params = _checked_parameters(model, bank)
    with torch.no_grad():
        for name, delta in _deltas(recipe, params, bank, order):
            param = params[name]
            if capture is not None and delta is not None:
                capture[name] = delta
            if delta is None:
                param.copy_(bank.base[name], non_blocking=True)
            else:  # one pass in float32, rounded once to the parameter's dtype
                base = bank.base[name].to(param.device, non_blocking=True)
                torch.add(base, delta, out=param.data)


def materialize_bounded(
    recipe: Recipe,
    model: nn.Module,
    bank: TaskVectorBank,
    resolve: Resolver | None = None,
    limit: int = MAX_REPLAYED_ANCESTORS,
) -> Recipe:
    """Materialise a new genome's recipe and return the recipe to keep for it.

    If its merges replay at most `limit` ancestors, that is the recipe itself; otherwise
    it is the recipe pinned to the deltas just written, which gives the same weights bit
    for bit and replays nothing. Every kept recipe therefore replays at most `limit`
    ancestors, and a child of two kept recipes at most 2 * (limit + 1).
    """
    if len(replay_order(recipe, resolve)) <= limit:
        materialize(recipe, model, bank, resolve)
        return recipe
    deltas: dict[str, torch.Tensor] = {}
    materialize(recipe, model, bank, resolve, capture=deltas)
    return Recipe.pinned(deltas)


def bounded_recipe(
    recipe: Recipe,
    model: nn.Module,
    bank: TaskVectorBank,
    resolve: Resolver | None = None,
    limit: int = MAX_REPLAYED_ANCESTORS,
) -> Recipe:
    """The recipe `materialize_bounded` keeps, computed without touching the model's weights.

    A rank that did not evaluate a child still stores it; this gives it the same recipe,
    pinned deltas included, bit for bit (the deltas are summed by the same code, on the
    same kind of device). Each delta moves to the host as soon as it is computed.
    """
    order = replay_order(recipe, resolve)
    if len(order) <= limit:
        return recipe
    params = _checked_parameters(model, bank)
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, delta in _deltas(recipe, params, bank, order):
            if delta is not None:
                deltas[name] = delta.to("cpu")
    return Recipe.pinned(deltas)
