"""Training checkpoints that a killed process can resume from exactly.

A checkpoint is one directory per optimizer step, `step-000000042/`:

    model/              `save_clara` output: PEFT adapters, memory rows, clara.json
    trainer_state.pt    optimizer and scheduler states (torch.save, weights-only loadable)
    rng-<rank>.pt       each process's RNG states (dropout masks differ per process)
    progress.json       step, data position (epoch, index), world size, settings, digest of
                        the trainable weights
    COMPLETE            written last

With several processes (torch.distributed initialised) the weights and optimizer states are
the same on every rank, so rank 0 writes them; every rank writes its own RNG file, and the
ranks meet at barriers before rank 0 marks the checkpoint complete. The directory must be
shared by all ranks.

The model goes through `save_clara` rather than a lighter state dict: a checkpoint is then
also a usable model (the worker can publish it, and `load_clara` rebuilds the model of a
fresh process from it), and for LoRA adapters plus a few memory rows the cost is a few small
files. Every checkpoint is written into a hidden temporary directory and renamed into place
once complete, so a kill while saving leaves either nothing or a directory without
`COMPLETE`; `latest_checkpoint` skips both.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mendel.engines.clara.io import save_clara
from mendel.engines.clara.model import ClaraModel

__all__ = [
    "COMPLETE_MARKER",
    "MODEL_DIR",
    "PROGRESS_FILE",
    "STATE_FILE",
    "Progress",
    "SavedTrainerState",
    "checkpoint_name",
    "latest_checkpoint",
    "load_trainer_state",
    "restore_rng",
    "rng_state",
    "save_checkpoint",
    "trainable_digest",
    "world",
]

MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"
PROGRESS_FILE = "progress.json"
COMPLETE_MARKER = "COMPLETE"
_PREFIX = "step-"


@dataclass(frozen=True)
class Progress:
    """Where training stands after `step` optimizer steps.

    Attributes:
        step: Optimizer steps done.
        epoch: Epoch of the next example to read.
        index: Position of that example in the epoch's permutation.
        world_size: Processes that trained together.
    """

    step: int
    epoch: int
    index: int
    world_size: int = 1


@dataclass(frozen=True)
class SavedTrainerState:
    """Everything but the model weights that a resumed run needs."""

    progress: Progress
    settings: dict[str, Any]
    weights_digest: str
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint after `step` steps (sorts by step as text too)."""
    return f"{_PREFIX}{step:09d}"


def trainable_digest(model: ClaraModel) -> str:
    """SHA-256 over the trainable weights in optimizer order: a resumed model must match the
    checkpoint bit for bit, or the continuation is not the same run."""
    digest = hashlib.sha256()
    for group in model.parameter_groups(weight_decay=0.0):
        for param in group["params"]:
            flat = param.detach().to("cpu").contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """The process's random states that training consumes (dropout, any python shuffles)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def _rng_file(rank: int) -> str:
    return f"rng-{rank}.pt"


def save_checkpoint(directory: Path, model: ClaraModel, progress: Progress,
                    settings: dict[str, Any], optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> Path:
    """Write the checkpoint after `progress.step` steps atomically; returns its path.

    Every rank must call it at the same step.
    """
    rank, _ = world()
    final = directory / checkpoint_name(progress.step)
    partial = directory / f".{final.name}.partial"
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
    _barrier()
    torch.save(rng_state(), partial / _rng_file(rank))
    if rank == 0:
        save_clara(model, partial / MODEL_DIR)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   partial / STATE_FILE)
        record = {"step": progress.step, "epoch": progress.epoch, "index": progress.index,
                  "world_size": progress.world_size, "settings": settings,
                  "weights_digest": trainable_digest(model)}
        (partial / PROGRESS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    _barrier()
    if rank == 0:
        (partial / COMPLETE_MARKER).write_text("")
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    _barrier()
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint with the most steps under `directory`, or None.

    Temporary directories and checkpoints without the completion marker are ignored.
    """
    if not directory.is_dir():
        return None
    complete = [path for path in directory.iterdir()
                if path.name.startswith(_PREFIX) and path.name[len(_PREFIX):].isdigit()
                and (path / COMPLETE_MARKER).is_file()]
    if not complete:
        return None
    return max(complete, key=lambda path: int(path.name[len(_PREFIX):]))


def load_trainer_state(checkpoint: Path) -> SavedTrainerState:
    """Read a checkpoint's optimizer, scheduler and progress records and this rank's RNG.

    Raises:
        FileNotFoundError: not a complete checkpoint.
        ValueError: it was written by another number of processes.
    """
    if not (checkpoint / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint")
    record = json.loads((checkpoint / PROGRESS_FILE).read_text())
    rank, size = world()
    if int(record["world_size"]) != size:
        raise ValueError(f"{checkpoint} was written by {record['world_size']} processes, "
                         f"not {size}: the RNG streams would not continue exactly")
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    rng = torch.load(checkpoint / _rng_file(rank), map_location="cpu", weights_only=True)
    return SavedTrainerState(
        progress=Progress(int(record["step"]), int(record["epoch"]), int(record["index"]),
                          size),
        settings=dict(record["settings"]),
        weights_digest=str(record["weights_digest"]),
        optimizer=state["optimizer"],
        scheduler=state["scheduler"],
        rng=rng,
    )
