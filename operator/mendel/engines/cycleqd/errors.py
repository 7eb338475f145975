"""Errors of the CycleQD engine.

CycleQDError
 ├── TooManyFailedEvaluations   permanent: evaluations keep crashing
 └── CheckpointMismatchError    permanent (also a ValueError): the checkpoint belongs
                                to a different run (seed, tasks or experts differ)
"""

from __future__ import annotations

__all__ = ["CheckpointMismatchError", "CycleQDError", "TooManyFailedEvaluations"]


class CycleQDError(Exception):
    """Base of every error the engine raises on its own account."""


class TooManyFailedEvaluations(CycleQDError):
    """More children failed evaluation than budget.maxFailedEvaluations allows."""


class CheckpointMismatchError(CycleQDError, ValueError):
    """A checkpoint was written by a run with a different seed, tasks or experts."""
