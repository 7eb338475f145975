"""Errors of the CycleQD engine.

CycleQDError
 ├── EvaluationFailed           one child's evaluation failed (counted, not raised)
 ├── TooManyFailedEvaluations   permanent: evaluations keep crashing
 └── CheckpointMismatchError    permanent (also a ValueError): the checkpoint belongs
                                to a different run (seed, tasks or experts differ)
"""

from __future__ import annotations

__all__ = [
    "CheckpointMismatchError",
    "CycleQDError",
    "EvaluationFailed",
    "TooManyFailedEvaluations",
]


class CycleQDError(Exception):
    """Base of every error the engine raises on its own account."""


class EvaluationFailed(CycleQDError):
    """A child's evaluation raised or gave unusable scores; the observer receives it.

    It carries the original error's message only, because the evaluation may have run in
    another process; so every rank, whatever the number of ranks, reports the same error.
    """


class TooManyFailedEvaluations(CycleQDError):
    """More children failed evaluation than budget.maxFailedEvaluations allows."""


class CheckpointMismatchError(CycleQDError, ValueError):
    """A checkpoint was written by a run with a different seed, tasks or experts."""
