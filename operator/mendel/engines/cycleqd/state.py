"""The mutable state of a run: what a checkpoint saves and a resume restores.

Randomness needs no saved state: every generation's generator is derived from
(seed, generation), so the generation counter is the RNG state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mendel.engines.cycleqd.archive import Archive
from mendel.engines.cycleqd.genome import GenomeStore

__all__ = ["EngineState"]


@dataclass
class EngineState:
    """Everything that changes while CycleQD runs.

    Attributes:
        seed: The run seed (spec.seed).
        tasks: Task names in spec order.
        experts: Expert names in spec order.
        generation: Generations completed; the next one to run has this number.
        failures: Children whose evaluation failed so far.
        expert_scores: Expert name -> task -> score (they fix the default bin ranges).
        archives: Task -> archive.
        store: Recipes of every genome still needed.
    """

    seed: int
    tasks: tuple[str, ...]
    experts: tuple[str, ...]
    generation: int = 0
    failures: int = 0
    expert_scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    archives: dict[str, Archive] = field(default_factory=dict)
    store: GenomeStore = field(default_factory=GenomeStore)

    def live_ids(self) -> list[str]:
        """Ids held by some archive, sorted: the roots the store is pruned to."""
        return sorted({e.genome_id for a in self.archives.values() for e in a.cells.values()})
