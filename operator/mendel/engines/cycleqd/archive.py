"""MAP-Elites archives: one per task, quality = that task's score, cells = the others'.

Binning follows the reference code: edges = linspace(min, max, bins + 1) and
bin = clamp(digitize(x, edges, right=True) - 1, 0, bins - 1). Ranges default to the
paper's: 85% of the weakest expert's score to 115% of the strongest's (capped at 1).
Insertion is strict: a tie keeps the incumbent.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mendel.api.qdevolution import Task

__all__ = [
    "Archive",
    "ArchiveSummary",
    "Binning",
    "Cell",
    "Elite",
    "binnings_for",
    "default_range",
    "offer_to_all",
]

Cell = tuple[int, ...]
_LOW_FACTOR = 0.85
_HIGH_FACTOR = 1.15


@dataclass(frozen=True)
class Binning:
    """Equal-width bins of one task's score over [low, high]."""

    low: float
    high: float
    bins: int

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be at least 1, got {self.bins}")
        if not self.low < self.high:
            raise ValueError(f"bin range needs low < high, got [{self.low}, {self.high}]")

    @property
    def edges(self) -> list[float]:
        """bins + 1 edges, as numpy.linspace computes them."""
        step = (self.high - self.low) / self.bins
        return [self.low + i * step for i in range(self.bins)] + [self.high]

    def index(self, value: float) -> int:
        """Bin of a score; values outside the range go to the first or last bin."""
        position = bisect.bisect_left(self.edges, value) - 1
        return min(max(position, 0), self.bins - 1)


def default_range(expert_scores: Sequence[float]) -> tuple[float, float]:
    """(0.85 * weakest, min(1, 1.15 * strongest)) over the experts' scores on one task.

    A degenerate range (every expert scoring 0, or scores above 1) falls back to
    [0, max(1, 1.15 * strongest)] so bins stay well defined.

    Raises:
        ValueError: If no score is given.
    """
    if not expert_scores:
        raise ValueError("need at least one expert score to derive a descriptor range")
    strongest = max(expert_scores)
    low = _LOW_FACTOR * min(expert_scores)
    high = min(1.0, _HIGH_FACTOR * strongest)
    if high - low <= 1e-9:
        return 0.0, max(1.0, _HIGH_FACTOR * strongest)
    return low, high


def binnings_for(
    tasks: Sequence[Task], expert_scores: Mapping[str, Mapping[str, float]]
) -> dict[str, Binning]:
    """Each task's binning: its descriptor's min/max if set, else the experts' range.

    Args:
        tasks: The spec's tasks.
        expert_scores: Expert name -> task name -> score.
    """
    out: dict[str, Binning] = {}
    for task in tasks:
        d = task.descriptor
        if d.min is not None and d.max is not None:
            low, high = d.min, d.max
        else:
            low, high = default_range([s[task.name] for s in expert_scores.values()])
        out[task.name] = Binning(low, high, d.bins)
    return out


@dataclass(frozen=True)
class Elite:
    """The occupant of a cell."""

    genome_id: str
    quality: float
    scores: Mapping[str, float]


@dataclass(frozen=True)
class ArchiveSummary:
    """Bounded numbers about one archive (what status and metrics report)."""

    task: str
    cells: int
    filled: int
    coverage: float
    qd_score: float
    best_quality: float | None
    best_genome: str | None


@dataclass
class Archive:
    """The MAP-Elites grid in which `task` is the quality.

    Attributes:
        task: Quality task.
        descriptors: The other tasks, in spec order; their bins index the cells.
        binnings: Binning per descriptor task.
        cells: Occupied cells.
    """

    task: str
    descriptors: tuple[str, ...]
    binnings: Mapping[str, Binning]
    cells: dict[Cell, Elite] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of cells."""
        total = 1
        for name in self.descriptors:
            total *= self.binnings[name].bins
        return total

    def cell_of(self, scores: Mapping[str, float]) -> Cell:
        """The cell a set of scores falls in."""
        return tuple(self.binnings[d].index(scores[d]) for d in self.descriptors)

    def offer(self, genome_id: str, scores: Mapping[str, float]) -> Cell | None:
        """Insert if the cell is empty or its incumbent's quality is strictly lower.

        Returns:
            The cell taken, or None if the incumbent stays.
        """
        cell = self.cell_of(scores)
        incumbent = self.cells.get(cell)
        quality = scores[self.task]
        if incumbent is not None and not quality > incumbent.quality:
            return None
        self.cells[cell] = Elite(genome_id, quality, dict(scores))
        return cell

    def elites(self) -> list[Elite]:
        """Occupants in cell order (deterministic)."""
        return [self.cells[c] for c in sorted(self.cells)]

    def best(self) -> Elite | None:
        """Highest-quality elite.

        Among elites of equal quality the one with the higher mean descriptor score wins
        (the paper leaves ties open; preferring the better generalist gives the final
        aggregation more of the other skills), then the first in cell order.
        """
        best: Elite | None = None
        for elite in self.elites():
            if best is None or self._rank(elite) > self._rank(best):
                best = elite
        return best

    def _rank(self, elite: Elite) -> tuple[float, float]:
        others = [elite.scores[d] for d in self.descriptors if d in elite.scores]
        return elite.quality, sum(others) / len(others) if others else 0.0

    def summary(self) -> ArchiveSummary:
        """Cells, filled, coverage, QD score (sum of qualities) and best elite."""
        best = self.best()
        filled = len(self.cells)
        return ArchiveSummary(
            task=self.task,
            cells=self.size,
            filled=filled,
            coverage=filled / self.size,
            qd_score=sum(e.quality for e in self.elites()),
            best_quality=None if best is None else best.quality,
            best_genome=None if best is None else best.genome_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form; cells keyed by comma-joined bin ids as in the reference code."""
        return {
            "task": self.task,
            "descriptors": list(self.descriptors),
            "binnings": {
                k: {"low": b.low, "high": b.high, "bins": b.bins} for k, b in self.binnings.items()
            },
            "cells": {
                ",".join(str(i) for i in cell): {
                    "genome": e.genome_id,
                    "quality": e.quality,
                    "scores": dict(e.scores),
                }
                for cell, e in sorted(self.cells.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Archive:
        """Inverse of `to_dict`."""
        binnings = {
            str(k): Binning(float(v["low"]), float(v["high"]), int(v["bins"]))
            for k, v in data["binnings"].items()
        }
        cells: dict[Cell, Elite] = {}
        for key, value in data["cells"].items():
            cell = tuple(int(i) for i in key.split(",")) if key else ()
            scores = {str(t): float(s) for t, s in value["scores"].items()}
            cells[cell] = Elite(str(value["genome"]), float(value["quality"]), scores)
        return cls(str(data["task"]), tuple(data["descriptors"]), binnings, cells)


def offer_to_all(
    archives: Mapping[str, Archive], genome_id: str, scores: Mapping[str, float]
) -> dict[str, Cell]:
    """Offer a scored genome to every archive.

    Returns:
        Task -> cell for each archive that took it.
    """
    taken: dict[str, Cell] = {}
    for task, archive in archives.items():
        cell = archive.offer(genome_id, scores)
        if cell is not None:
            taken[task] = cell
    return taken
