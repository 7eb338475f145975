"""Evaluating a generation's children on several processes, one resident model each.

Every process (rank) runs the same deterministic engine: from the same checkpoint and the
same scores, every rank holds the same archives and breeds the same children, because all
random draws come from generators seeded by (seed, generation, child). Only evaluation is
split: child i is materialised and scored by rank i % world, and the outcomes (a few
floats, or an error message per child) are exchanged so that every rank inserts the same
children in the same index order. No weights ever cross ranks, and the result of a seed
does not depend on how many ranks there are, as long as every rank computes as the others
do: GPUs of one model, or on the CPU one thread count (MKL's SVD and matrix products may
change in their last bits with it). Rank 0 alone writes checkpoints and reports to the
observer.

A batch of B children keeps at most B ranks busy; with one child per generation, ranks
other than 0 only wait.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["SINGLE_PROCESS", "Outcome", "Ranks", "SingleProcess", "TorchRanks", "evaluate_share"]


@dataclass(frozen=True)
class Outcome:
    """What evaluating one child gave: scores per task, or why it failed."""

    scores: Mapping[str, float] | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        """True when the evaluation raised or returned unusable scores."""
        return self.error is not None


class Ranks(Protocol):
    """The processes a run is spread over, and the one collective the engine needs."""

    @property
    def rank(self) -> int:
        """This process's index, 0 to world - 1."""
        ...

    @property
    def world(self) -> int:
        """How many processes there are."""
        ...

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable and small), in rank order, on every rank."""
        ...


@dataclass(frozen=True)
class SingleProcess:
    """One process doing everything."""

    rank: int = 0
    world: int = 1

    def all_gather(self, value: Any) -> list[Any]:
        """Just this process's value."""
        return [value]


SINGLE_PROCESS = SingleProcess()


class TorchRanks:
    """The default torch.distributed process group (gloo on CPU, NCCL on GPUs).

    The group must be initialised first (torchrun sets the environment for
    `torch.distributed.init_process_group`); with NCCL, each rank must have selected its
    GPU (`torch.cuda.set_device`), which object collectives stage their bytes on.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; call init_process_group")
        self._dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def all_gather(self, value: Any) -> list[Any]:
        """`all_gather_object`: pickled values, so keep them to scores and messages."""
        out: list[Any] = [None] * self.world
        self._dist.all_gather_object(out, value)
        return out


def evaluate_share(ranks: Ranks, count: int, evaluate: Callable[[int], Outcome]) -> list[Outcome]:
    """Evaluate children 0..count-1, each on rank index % world, and share the outcomes.

    Every rank must call this with the same `count`. An exception raised by `evaluate`
    (rather than returned as a failed Outcome) is fatal and propagates; under torchrun the
    other ranks are then stopped by the launcher.

    Returns:
        The outcome of every child, in index order, on every rank.
    """
    mine = {i: evaluate(i) for i in range(ranks.rank, count, ranks.world)}
    gathered: dict[int, Outcome] = {}
    for part in ranks.all_gather(mine):
        gathered.update(part)
    missing = [i for i in range(count) if i not in gathered]
    if missing:
        raise RuntimeError(f"no rank returned an outcome for children {missing}")
    return [gathered[i] for i in range(count)]
