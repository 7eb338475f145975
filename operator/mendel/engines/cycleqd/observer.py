"""What the runner needs from outside: an evaluation callback and an observer.

The engine knows nothing about evaluators or tracking. It calls `evaluate(model)` for
scores and reports progress and lineage through an `Observer` (MLflow lineage, status
summaries and logs are implemented on top of it, outside the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from mendel.engines.cycleqd.archive import ArchiveSummary, Cell
from mendel.engines.cycleqd.genome import Genome

__all__ = ["Evaluate", "NullObserver", "Observer", "RunSummary"]


class Evaluate(Protocol):
    """Scores the resident model on every task, each in [0, 1].

    The model's weights are those of the child being evaluated; the callback must not
    keep references to them. Raising marks the child as failed.
    """

    def __call__(self, model: nn.Module) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class RunSummary:
    """Bounded progress after a generation: what status and metrics report."""

    generation: int
    total: int
    quality_task: str | None
    failed: int
    archives: tuple[ArchiveSummary, ...]

    @property
    def cells(self) -> int:
        """Cells over all archives."""
        return sum(a.cells for a in self.archives)

    @property
    def filled(self) -> int:
        """Occupied cells over all archives."""
        return sum(a.filled for a in self.archives)

    @property
    def coverage(self) -> float:
        """filled / cells."""
        return self.filled / self.cells if self.cells else 0.0

    @property
    def qd_score(self) -> float:
        """Sum of every elite's quality over all archives."""
        return sum(a.qd_score for a in self.archives)

    @property
    def best(self) -> dict[str, float]:
        """Task -> best quality in its archive."""
        return {a.task: a.best_quality for a in self.archives if a.best_quality is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "generation": self.generation,
            "total": self.total,
            "qualityTask": self.quality_task,
            "failed": self.failed,
            "cells": self.cells,
            "filled": self.filled,
            "coverage": self.coverage,
            "qdScore": self.qd_score,
            "best": self.best,
        }


class Observer(Protocol):
    """Callbacks the runner makes; implementations must not raise for control flow."""

    def on_generation(self, summary: RunSummary) -> None:
        """After every generation (and once after the experts are placed, generation 0)."""

    def on_child_accepted(
        self, genome: Genome, scores: Mapping[str, float], cells: Mapping[str, Cell]
    ) -> None:
        """A genome (expert or child) entered at least one archive: task -> cell."""

    def on_child_rejected(self, genome: Genome, scores: Mapping[str, float]) -> None:
        """A child was evaluated but entered no archive (its recipe is not kept)."""

    def on_child_failed(self, genome: Genome, error: Exception) -> None:
        """A child's evaluation raised."""

    def on_checkpoint(self, path: Path) -> None:
        """A checkpoint directory was written."""

    def on_finished(self, final: Genome, scores: Mapping[str, float] | None) -> None:
        """The aggregated final model was built (scores None if its evaluation failed)."""


class NullObserver:
    """An observer that ignores everything; subclass it to override a few callbacks."""

    def on_generation(self, summary: RunSummary) -> None:
        """Ignored."""

    def on_child_accepted(
        self, genome: Genome, scores: Mapping[str, float], cells: Mapping[str, Cell]
    ) -> None:
        """Ignored."""

    def on_child_rejected(self, genome: Genome, scores: Mapping[str, float]) -> None:
        """Ignored."""

    def on_child_failed(self, genome: Genome, error: Exception) -> None:
        """Ignored."""

    def on_checkpoint(self, path: Path) -> None:
        """Ignored."""

    def on_finished(self, final: Genome, scores: Mapping[str, float] | None) -> None:
        """Ignored."""
