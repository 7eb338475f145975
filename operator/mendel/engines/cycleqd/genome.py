"""Genomes (a recipe plus its lineage) and the store that keeps the ones still needed.

A genome's id is stable across processes (`expert-<name>`, `g<generation>[-<child>]`,
`final`), so archives, checkpoints and lineage records written by an observer all name it
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mendel.engines.cycleqd.recipe import Recipe

__all__ = ["FINAL_ID", "Genome", "GenomeStore", "child_id", "expert_id"]

FINAL_ID = "final"
_SEP = "/"


def expert_id(expert: str) -> str:
    """Genome id of an expert (a lineage root)."""
    return f"expert-{expert}"


def child_id(generation: int, index: int = 0) -> str:
    """Genome id of a generation's child: `g<generation>` for the first (the only one in
    the paper's one-child generations), `g<generation>-<index>` for the others."""
    if index == 0:
        return f"g{generation:06d}"
    return f"g{generation:06d}-{index:03d}"


@dataclass(frozen=True)
class Genome:
    """One candidate model and how it was made.

    Attributes:
        id: Stable id.
        recipe: How to materialise it.
        operator: How it was made, e.g. "expert", "linear+svd", "ties+none", "aggregate".
        generation: Generation that produced it (-1 for experts).
        parents: Ids of the genomes it was made from.
        parent_weights: Normalised crossover (or aggregation) weight of each parent.
        seed: Seed of the generation's random draws; None for experts.
        quality_task: The task whose archive supplied the parents, if any.
    """

    id: str
    recipe: Recipe
    operator: str
    generation: int = -1
    parents: tuple[str, ...] = ()
    parent_weights: tuple[float, ...] = ()
    seed: int | None = None
    quality_task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Small JSON form (direction vectors excluded; see `Recipe.tensors`)."""
        return {
            "id": self.id,
            "operator": self.operator,
            "generation": self.generation,
            "parents": list(self.parents),
            "parentWeights": list(self.parent_weights),
            "seed": self.seed,
            "qualityTask": self.quality_task,
            "recipe": self.recipe.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Genome:
        """Inverse of `to_dict`, given the recipe's direction tensors."""
        seed = data.get("seed")
        quality = data.get("qualityTask")
        return cls(
            id=str(data["id"]),
            recipe=Recipe.from_dict(data["recipe"], tensors),
            operator=str(data["operator"]),
            generation=int(data["generation"]),
            parents=tuple(str(p) for p in data["parents"]),
            parent_weights=tuple(float(w) for w in data["parentWeights"]),
            seed=None if seed is None else int(seed),
            quality_task=None if quality is None else str(quality),
        )


class GenomeStore:
    """Genomes by id, pruned to those an archive or a replayed merge still needs.

    Linear recipes are self-contained, so a child that left every archive can be dropped;
    a TIES/DARE child keeps its parents (and theirs) alive because it replays from them.
    """

    def __init__(self, genomes: Iterable[Genome] = ()) -> None:
        self._genomes: dict[str, Genome] = {}
        for genome in genomes:
            self.add(genome)

    def add(self, genome: Genome) -> None:
        """Add (or replace) a genome."""
        self._genomes[genome.id] = genome

    def get(self, genome_id: str) -> Genome:
        """The genome with this id.

        Raises:
            ValueError: If it is not stored.
        """
        genome = self._genomes.get(genome_id)
        if genome is None:
            raise ValueError(f"genome '{genome_id}' is not in the store")
        return genome

    def recipe(self, genome_id: str) -> Recipe:
        """The recipe of a stored genome (the resolver materialisation uses)."""
        return self.get(genome_id).recipe

    def __contains__(self, genome_id: object) -> bool:
        return genome_id in self._genomes

    def __len__(self) -> int:
        return len(self._genomes)

    @property
    def ids(self) -> list[str]:
        """Stored ids, sorted."""
        return sorted(self._genomes)

    def prune(self, roots: Iterable[str]) -> list[str]:
        """Drop every genome not reachable from `roots` through merge-term parents.

        Returns:
            The ids dropped, sorted.
        """
        live: set[str] = set()
        stack = [r for r in roots if r in self._genomes]
        while stack:
            gid = stack.pop()
            if gid in live:
                continue
            live.add(gid)
            stack.extend(p for p in self._genomes[gid].recipe.parents_needed if p in self._genomes)
        dropped = sorted(set(self._genomes) - live)
        for gid in dropped:
            del self._genomes[gid]
        return dropped

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON form of every genome, sorted by id."""
        return [self._genomes[gid].to_dict() for gid in self.ids]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every direction vector, keyed `genome/expert/matrix`."""
        out: dict[str, torch.Tensor] = {}
        for gid in self.ids:
            for key, value in self._genomes[gid].recipe.tensors().items():
                out[f"{gid}{_SEP}{key}"] = value
        return out

    @classmethod
    def from_dict(
        cls, data: Iterable[Mapping[str, Any]], tensors: Mapping[str, torch.Tensor]
    ) -> GenomeStore:
        """Inverse of `to_dict` + `tensors`."""
        by_genome: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            gid, rest = key.split(_SEP, 1)
            by_genome.setdefault(gid, {})[rest] = value
        return cls(Genome.from_dict(item, by_genome.get(str(item["id"]), {})) for item in data)
