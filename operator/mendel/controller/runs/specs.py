"""Facts the controller reads from a parsed spec, whatever its kind.

The three kinds share an envelope but name their roles and budgets differently; this
module is the one place that knows which field is which, so the builders and the status
reducer stay kind-agnostic.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from mendel.api.base import ApiModel
from mendel.api.compressor import CompressorTrainingSpec
from mendel.api.envelope import RoleResources, SpecEnvelope
from mendel.api.experience import ExperienceLibrarySpec
from mendel.api.qdevolution import QDEvolutionSpec
from mendel.api.references import SecretKeyRef, SecretRef

__all__ = [
    "budget",
    "num_nodes",
    "procs_per_node",
    "role_resources",
    "secret_key_refs",
    "secret_refs",
]


def role_resources(spec: SpecEnvelope) -> RoleResources:
    """Compute of the run's (driver or trainer) Pods."""
    if isinstance(spec, CompressorTrainingSpec):
        return spec.resources.trainer
    if isinstance(spec, QDEvolutionSpec | ExperienceLibrarySpec):
        return spec.resources.driver
    return RoleResources()


def budget(spec: SpecEnvelope) -> int | None:
    """The increase-only budget of a run (generations, epochs); None when it has none."""
    if isinstance(spec, QDEvolutionSpec):
        return spec.budget.generations
    if isinstance(spec, ExperienceLibrarySpec):
        return spec.practice.epochs
    return None


def num_nodes(spec: SpecEnvelope) -> int:
    """Pods that train together (CompressorTraining only; 1 otherwise)."""
    if isinstance(spec, CompressorTrainingSpec):
        return spec.distribution.num_nodes
    return 1


def procs_per_node(spec: SpecEnvelope) -> int:
    """torchrun processes per Pod: CompressorTraining's distribution, or one QDEvolution
    process per driver GPU (no more than its children per generation)."""
    if isinstance(spec, CompressorTrainingSpec):
        return spec.distribution.num_proc_per_node
    if isinstance(spec, QDEvolutionSpec):
        return spec.processes
    return 1


def secret_refs(spec: ApiModel) -> list[str]:
    """Names of every Secret the spec references whole (its keys become env vars)."""
    names = [v.name for _, v in _walk(spec, "spec") if isinstance(v, SecretRef)]
    return list(dict.fromkeys(names))


def secret_key_refs(spec: ApiModel) -> list[tuple[str, SecretKeyRef]]:
    """(field path, reference) of every single Secret key the spec references."""
    return [(path, v) for path, v in _walk(spec, "spec") if isinstance(v, SecretKeyRef)]


def _walk(value: object, path: str) -> Iterator[tuple[str, object]]:
    yield path, value
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            alias = info.alias or name
            yield from _walk(getattr(value, name), f"{path}.{alias}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
