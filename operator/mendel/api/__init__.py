"""Mendel's API: pydantic models that are the single source of truth for the CRDs.

Nothing here imports the rest of Mendel, Kubernetes clients or the GPU stack, so the
operator, the CLI and the GPU worker can all parse the same resources.
"""

from mendel.api.compressor import CompressorTrainingSpec
from mendel.api.experience import ExperienceLibrarySpec
from mendel.api.kinds import API_VERSION, GROUP, KINDS, VERSION, KindInfo, kind_info
from mendel.api.qdevolution import QDEvolutionSpec
from mendel.api.status import (
    CompressorTrainingStatus,
    ExperienceLibraryStatus,
    QDEvolutionStatus,
    RunStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "CompressorTrainingSpec",
    "CompressorTrainingStatus",
    "ExperienceLibrarySpec",
    "ExperienceLibraryStatus",
    "KindInfo",
    "QDEvolutionSpec",
    "QDEvolutionStatus",
    "RunStatus",
    "kind_info",
]
