"""Which workload runs a kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mendel.workloads.context import RunContext, WorkloadError

__all__ = ["run_workload"]


def run_workload(kind: str, spec: Any, ctx: RunContext,
                 on_summary: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run the workload of a kind and return its JSON summary.

    Raises:
        WorkloadError: this version of Mendel has no workload for the kind.
    """
    if kind == "QDEvolution":
        from mendel.workloads.qdevolution import run_qdevolution

        return run_qdevolution(spec, ctx, on_summary)
    if kind == "ExperienceLibrary":
        from mendel.workloads.experience import run_experience_library

        return run_experience_library(spec, ctx, on_summary)
    if kind == "CompressorTraining":
        from mendel.workloads.compressor import run_compressor_training

        return run_compressor_training(spec, ctx, on_summary)
    raise WorkloadError(f"this version of Mendel cannot run {kind} workloads; "
                        "QDEvolution, ExperienceLibrary and CompressorTraining are available")
