"""Recipes: a child as a small formula over the bank, not as weights.

Linear crossover and SVD mutation are both linear in the task vectors, so any child of
them is exactly `base + sum_k c_k tau_k + sum_{k,m} U_km diag(d_km * S_km) V_km^T`: one
scalar per expert and one weight vector per (expert, matrix). Gaussian noise is kept as
(seed, scale) and replayed; TIES/DARE merges, which are not linear, are kept as a term
naming the method, parents and seed, and replayed from the parents' recipes.

Recipes stay bounded: noise is drawn along a fixed set of seeds (see `mutation`), so noise
terms fold by seed, and a genome whose merges would replay too many ancestors is pinned to
its dense delta (`Recipe.pinned`), which ends the replay chain there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["MergeTerm", "NoiseTerm", "Recipe", "combine"]

_SEP = "/"
_DENSE = "#dense"  # not a valid expert name, so it cannot collide with a direction key


@dataclass(frozen=True)
class NoiseTerm:
    """`scale * N(0, 1)` on every element, drawn from a generator seeded per tensor."""

    seed: int
    scale: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"seed": self.seed, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoiseTerm:
        """Inverse of `to_dict`."""
        return cls(seed=int(data["seed"]), scale=float(data["scale"]))


@dataclass(frozen=True)
class MergeTerm:
    """`scale * method(parents' deltas, weights, params)`, replayed with a seeded generator.

    Attributes:
        method: Name in the merge-method registry (e.g. "ties").
        parents: Genome ids whose recipes give the deltas merged.
        weights: One merge weight per parent.
        params: The method's declared parameters (e.g. density).
        seed: Seeds the random masks (DARE); the tensor name is mixed in per tensor.
        scale: Factor applied when this term is itself combined into later recipes.
    """

    method: str
    parents: tuple[str, ...]
    weights: tuple[float, ...]
    params: Mapping[str, float]
    seed: int
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "method": self.method,
            "parents": list(self.parents),
            "weights": list(self.weights),
            "params": dict(self.params),
            "seed": self.seed,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MergeTerm:
        """Inverse of `to_dict`."""
        return cls(
            method=str(data["method"]),
            parents=tuple(str(p) for p in data["parents"]),
            weights=tuple(float(w) for w in data["weights"]),
            params={str(k): float(v) for k, v in data["params"].items()},
            seed=int(data["seed"]),
            scale=float(data["scale"]),
        )


@dataclass(frozen=True)
class Recipe:
    """A model as `base + delta`, with the delta written as terms over the bank.

    Attributes:
        coefficients: Expert name -> scalar on its whole task vector.
        directions: Expert name -> matrix name -> weights on that matrix's singular
            directions (float32, one per direction).
        noise: Replayed Gaussian terms.
        merges: Replayed non-linear (TIES/DARE) terms.
        dense: Tensor name -> a stored float32 delta added as is (a pinned genome's whole
            delta); tensors it lacks contribute nothing.
    """

    coefficients: Mapping[str, float] = field(default_factory=dict)
    directions: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    noise: tuple[NoiseTerm, ...] = ()
    merges: tuple[MergeTerm, ...] = ()
    dense: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def expert(cls, name: str) -> Recipe:
        """The expert itself: base + 1 * tau_expert."""
        return cls(coefficients={name: 1.0})

    @classmethod
    def pinned(cls, deltas: Mapping[str, torch.Tensor]) -> Recipe:
        """A recipe that is exactly the given per-tensor deltas, kept in host memory.

        Materialising it adds `1.0 * delta`, which is exact, so a genome pinned to the
        deltas its own recipe produced gets bit-identical weights, and needs no ancestor.
        The deltas are as large as the model, so they wait on the host, not the device.
        """
        return cls(dense={name: d.to("cpu", torch.float32) for name, d in deltas.items()})

    @property
    def parents_needed(self) -> tuple[str, ...]:
        """Genome ids this recipe's merge terms replay from, in order, without repeats."""
        return tuple(dict.fromkeys(pid for term in self.merges for pid in term.parents))

    def scaled(self, factor: float) -> Recipe:
        """The recipe whose delta is `factor` times this one's (exact: every term is linear
        in its own scale)."""
        return Recipe(
            coefficients={k: factor * c for k, c in self.coefficients.items()},
            directions={
                k: {m: w * factor for m, w in per.items()} for k, per in self.directions.items()
            },
            noise=tuple(NoiseTerm(t.seed, t.scale * factor) for t in self.noise),
            merges=tuple(_rescale(t, t.scale * factor) for t in self.merges),
            dense={name: d * factor for name, d in self.dense.items()},
        )

    def with_directions(self, expert: str, weights: Mapping[str, torch.Tensor]) -> Recipe:
        """This recipe plus `U diag(w * S) V^T` along `expert`'s matrices."""
        return combine([self, Recipe(directions={expert: dict(weights)})], [1.0, 1.0])

    def with_noise(self, *terms: NoiseTerm) -> Recipe:
        """This recipe plus replayed Gaussian terms (folded into terms of the same seed)."""
        return combine([self, Recipe(noise=terms)], [1.0, 1.0])

    def to_dict(self) -> dict[str, Any]:
        """Small JSON form: direction vectors are summarised here and kept in `tensors()`."""
        return {
            "coefficients": dict(self.coefficients),
            "directions": {k: sorted(per) for k, per in self.directions.items()},
            "noise": [t.to_dict() for t in self.noise],
            "merges": [t.to_dict() for t in self.merges],
            "dense": sorted(self.dense),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """Direction vectors keyed `expert/matrix` and dense deltas keyed `#dense/name`,
        ready for safetensors."""
        out = {
            f"{k}{_SEP}{m}": w.detach().to("cpu", torch.float32).contiguous()
            for k, per in self.directions.items()
            for m, w in per.items()
        }
        for name, delta in self.dense.items():
            out[f"{_DENSE}{_SEP}{name}"] = delta.detach().to("cpu", torch.float32).contiguous()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Recipe:
        """Inverse of `to_dict` + `tensors`.

        Raises:
            ValueError: If a tensor named in `data` is missing from `tensors`.
        """
        directions: dict[str, dict[str, torch.Tensor]] = {}
        for expert, names in data["directions"].items():
            for name in names:
                directions.setdefault(expert, {})[name] = _tensor(tensors, expert, name)
        return cls(
            coefficients={str(k): float(v) for k, v in data["coefficients"].items()},
            directions=directions,
            noise=tuple(NoiseTerm.from_dict(t) for t in data["noise"]),
            merges=tuple(MergeTerm.from_dict(t) for t in data["merges"]),
            dense={name: _tensor(tensors, _DENSE, name) for name in data.get("dense", ())},
        )


def _tensor(tensors: Mapping[str, torch.Tensor], group: str, name: str) -> torch.Tensor:
    key = f"{group}{_SEP}{name}"
    if key not in tensors:
        raise ValueError(f"recipe names tensor '{key}' but it is missing")
    return tensors[key]


def _rescale(term: MergeTerm, scale: float) -> MergeTerm:
    return MergeTerm(term.method, term.parents, term.weights, term.params, term.seed, scale)


def combine(recipes: Sequence[Recipe], weights: Sequence[float]) -> Recipe:
    """The recipe of `sum_i weights_i * delta(recipes_i)`: exact, term by term.

    Args:
        recipes: Recipes to add.
        weights: One factor per recipe.

    Returns:
        A recipe with summed coefficients, direction vectors and dense deltas; replayed
        terms that are the same draw (noise with one seed, merges with identical inputs)
        are merged by adding their scales, so a term inherited along several lineage paths
        is kept once.

    Raises:
        ValueError: On a length mismatch or direction vectors of different ranks.
    """
    if len(recipes) != len(weights):
        raise ValueError(f"{len(recipes)} recipes but {len(weights)} weights")
    coefficients: dict[str, float] = {}
    directions: dict[str, dict[str, torch.Tensor]] = {}
    noise: dict[int, float] = {}
    merges: dict[tuple[object, ...], MergeTerm] = {}
    dense: dict[str, torch.Tensor] = {}
    for recipe, weight in zip(recipes, weights, strict=True):
        part = recipe.scaled(weight)
        for expert, c in part.coefficients.items():
            coefficients[expert] = coefficients.get(expert, 0.0) + c
        for expert, per in part.directions.items():
            target = directions.setdefault(expert, {})
            for name, w in per.items():
                target[name] = _add_vectors(target.get(name), w, f"{expert}{_SEP}{name}")
        for term in part.noise:
            noise[term.seed] = noise.get(term.seed, 0.0) + term.scale
        for merge in part.merges:
            key = _merge_key(merge)
            known = merges.get(key)
            merges[key] = merge if known is None else _rescale(merge, known.scale + merge.scale)
        for name, delta in part.dense.items():  # `scaled` made fresh tensors: add in place
            known_delta = dense.get(name)
            dense[name] = delta if known_delta is None else known_delta.add_(delta)
    noise_terms = tuple(NoiseTerm(seed, scale) for seed, scale in noise.items())
    return Recipe(coefficients, directions, noise_terms, tuple(merges.values()), dense)


def _merge_key(term: MergeTerm) -> tuple[object, ...]:
    return (term.method, term.parents, term.weights, tuple(sorted(term.params.items())), term.seed)


def _add_vectors(current: torch.Tensor | None, extra: torch.Tensor, key: str) -> torch.Tensor:
    if current is None:
        return extra.clone()
    if current.shape != extra.shape:
        raise ValueError(
            f"direction vectors for '{key}' differ in rank: {tuple(current.shape)} vs "
            f"{tuple(extra.shape)}"
        )
    return current + extra
