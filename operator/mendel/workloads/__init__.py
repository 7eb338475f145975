"""Workloads: what a driver Pod (`mendel worker`) or a laptop (`mendel run`) executes.

A workload turns one resource's spec into an engine run: it fetches models and data,
builds evaluators, wires the engine's callbacks to MLflow, keeps checkpoints where a
retried Pod finds them, and returns a short JSON summary. Engines stay free of all of it.
"""

from mendel.workloads.context import RunContext, WorkloadError

__all__ = ["RunContext", "WorkloadError"]
