"""The three kinds: their names, models and printer columns, in one table.

Everything that differs between kinds and is not part of a spec or status model (plural,
short name, columns) is declared here, so the CRD generator, the CLI and the operator
read it from one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from mendel.api.base import ApiModel
from mendel.api.compressor import CompressorTrainingSpec
from mendel.api.experience import ExperienceLibrarySpec
from mendel.api.qdevolution import QDEvolutionSpec
from mendel.api.status import (
    CompressorTrainingStatus,
    ExperienceLibraryStatus,
    QDEvolutionStatus,
    RunStatus,
)

__all__ = ["API_VERSION", "GROUP", "KINDS", "KindInfo", "MAX_NAME_LENGTH", "VERSION", "kind_info"]

GROUP = "mendel.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORIES = ["all", "mendel"]
MAX_NAME_LENGTH = 40
"""Resource names stay short so that child names (<name>-driver-r<n>-<hash>) fit 63 chars."""


@dataclass(frozen=True)
class KindInfo:
    """Static facts about one kind."""

    kind: str
    plural: str
    short_name: str
    spec_model: type[ApiModel]
    status_model: type[RunStatus]
    columns: tuple[dict[str, object], ...]
    description: str

    @property
    def singular(self) -> str:
        """Lower-case singular name."""
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        """metadata.name of the CRD."""
        return f"{self.plural}.{GROUP}"


def _column(name: str, path: str, kind: str = "string", priority: int = 0,
            description: str = "") -> dict[str, object]:
    column: dict[str, object] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        column["priority"] = priority
    if description:
        column["description"] = description
    return column


_PHASE = _column("Phase", ".status.phase", description="Run phase.")
_PROGRESS = _column("Progress", ".status.progress.percent", "integer",
                    description="Percent of the budget done.")
_AGE = _column("Age", ".metadata.creationTimestamp", "date")
_QUEUE = _column("Queue", ".status.scheduling.queueName", priority=1)
_RUN = _column("Run", ".status.mlflow.runId", priority=1, description="MLflow parent run.")
_REASON = _column("Reason", '.status.conditions[?(@.type=="Failed")].reason', priority=1)

KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(
            kind="QDEvolution",
            plural="qdevolutions",
            short_name="qde",
            spec_model=QDEvolutionSpec,
            status_model=QDEvolutionStatus,
            columns=(
                _PHASE,
                _column("Gen", ".status.progress.step", "integer", description="Generations."),
                _PROGRESS,
                _column("Coverage", ".status.archive.coverage"),
                _column("QD-Score", ".status.archive.qdScore"),
                _AGE, _QUEUE, _RUN, _REASON,
            ),
            description="CycleQD: quality-diversity evolution over merged LLMs.",
        ),
        KindInfo(
            kind="ExperienceLibrary",
            plural="experiencelibraries",
            short_name="xlib",
            spec_model=ExperienceLibrarySpec,
            status_model=ExperienceLibraryStatus,
            columns=(
                _PHASE,
                _column("Step", ".status.progress.step", "integer"),
                _PROGRESS,
                _column("Experiences", ".status.library.size", "integer"),
                _column("Score", ".status.library.scoreAfter"),
                _AGE, _QUEUE, _RUN, _REASON,
            ),
            description="Training-Free GRPO: a learned library of experiences for a frozen LLM.",
        ),
        KindInfo(
            kind="CompressorTraining",
            plural="compressortrainings",
            short_name="ctrain",
            spec_model=CompressorTrainingSpec,
            status_model=CompressorTrainingStatus,
            columns=(
                _PHASE,
                _PROGRESS,
                _column("ETA(s)", ".status.progress.estimatedRemainingSeconds", "integer"),
                _column("Loss", ".status.training.loss"),
                _AGE, _QUEUE, _RUN,
                _column("Model", ".status.mlflow.registeredModel.version", priority=1),
                _REASON,
            ),
            description="CLaRa: a document compressor (memory tokens, LoRA) for RAG.",
        ),
    )
}


def kind_info(kind: str) -> KindInfo:
    """Look a kind up by its name; raises KeyError with the known kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown kind {kind!r}; Mendel serves {', '.join(KINDS)}") from None
