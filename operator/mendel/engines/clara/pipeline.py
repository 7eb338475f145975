"""All the stages of a CLaRa run, one after the other, each resumable on its own.

Layout under the run's state directory (shared by every process of the run):

    pretraining/checkpoints/step-*/     stage I's checkpoints (`checkpoint.py`)
    pretraining/final/                  the model after stage I (`save_clara`), COMPLETE last
    instructionTuning/...               the same for stage 1.2, when the spec has it
    endToEnd/...                        the same for stage II

A process that starts (first time, after a killed Pod, after an operator restart) skips
every stage with a complete `final/`, resumes the next one from its newest checkpoint, or
starts it from the previous stage's model: stage I from fresh adapters, instruction
tuning from the stage-I compressor with a fresh generator (seed-algorithms §3.1.5), stage II
from the whole previous model. Each model is rebuilt on a freshly loaded backbone, since
PEFT injects its layers into the one it wraps.

Mixed precision is `torch.autocast` around the stage: the adapters and memory rows stay
float32 (PEFT casts adapters up; `ClaraModel` keeps the rows in float32), so the optimizer
state and checkpoints are float32 whatever the compute dtype.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mendel.engines.clara.cache import CandidateCache
from mendel.engines.clara.checkpoint import COMPLETE_MARKER, MODEL_DIR, latest_checkpoint, world
from mendel.engines.clara.io import load_clara, save_clara
from mendel.engines.clara.model import ClaraModel, create_clara
from mendel.engines.clara.settings import COMPRESSOR, ClaraSettings
from mendel.engines.clara.stages import train_instruction_tuning, train_stage_two
from mendel.engines.clara.training import StepReport, TrainingSettings, train_stage_one

__all__ = ["CHECKPOINT_DIR", "FINAL_DIR", "STAGE_ORDER", "StageName", "StagePlan", "final_model",
           "run_stages"]

StageName = Literal["pretraining", "instructionTuning", "endToEnd"]
STAGE_ORDER: tuple[StageName, ...] = ("pretraining", "instructionTuning", "endToEnd")
FINAL_DIR = "final"
CHECKPOINT_DIR = "checkpoints"

LoadBase = Callable[[], tuple[Any, Any]]
"""Returns a fresh (backbone on its device, tokenizer) pair."""
StageObserver = Callable[[StageName, StepReport], None]


@dataclass(frozen=True)
class StagePlan:
    """One stage to run: its examples and budget (and stage II's top-k and temperature)."""

    name: StageName
    settings: TrainingSettings
    examples: Sequence[Any]
    """StageOneExample for pretraining and instruction tuning, StageTwoExample for endToEnd."""
    top_k: int = 1
    temperature: float = 0.02


def final_model(root: Path, stage: StageName) -> Path | None:
    """The complete saved model of `stage`, if that stage has finished."""
    path = root / stage / FINAL_DIR
    return path if (path / COMPLETE_MARKER).is_file() else None


def _barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def _save_final(model: ClaraModel, root: Path, stage: StageName) -> Path:
    """Rank 0 writes the stage's model into a temporary directory and renames it."""
    final = root / stage / FINAL_DIR
    if world()[0] == 0:
        partial = root / stage / f".{FINAL_DIR}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        save_clara(model, partial)
        (partial / COMPLETE_MARKER).write_text("")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    _barrier()
    return final


def _start(plan: StagePlan, root: Path, previous: Path | None, load_base: LoadBase,
           settings: ClaraSettings) -> ClaraModel:
    base, tokenizer = load_base()
    latest = latest_checkpoint(root / plan.name / CHECKPOINT_DIR)
    if latest is not None:
        return load_clara(base, tokenizer, latest / MODEL_DIR)
    if previous is None:
        if plan.name != "pretraining":
            raise ValueError(f"stage {plan.name} needs the model of an earlier stage")
        return create_clara(base, tokenizer, settings)
    if plan.name == "instructionTuning":
        return load_clara(base, tokenizer, previous, adapters=(COMPRESSOR,))
    return load_clara(base, tokenizer, previous)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None or dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def run_stages(plans: Sequence[StagePlan], root: Path, load_base: LoadBase,
               settings: ClaraSettings, *, compute_dtype: torch.dtype | None = None,
               gradient_checkpointing: bool = False,
               observer: StageObserver | None = None,
               on_stage_done: Callable[[StageName, Path], None] | None = None) -> Path:
    """Run (or resume) `plans` in order; returns the directory of the last stage's model.

    Under torch.distributed every rank calls it with the same arguments; `root` must be
    shared by all ranks.

    Raises:
        ValueError: no plans, plans out of order, or a checkpoint that does not fit.
    """
    if not plans:
        raise ValueError("no stages to run")
    order = [STAGE_ORDER.index(plan.name) for plan in plans]
    if order != sorted(set(order)) or order[0] != 0:
        raise ValueError("stages must start with pretraining and follow "
                         f"{' -> '.join(STAGE_ORDER)}")
    previous: Path | None = None
    for plan in plans:
        done = final_model(root, plan.name)
        if done is not None:
            previous = done
            continue
        model = _start(plan, root, previous, load_base, settings)
        if gradient_checkpointing:
            model.enable_gradient_checkpointing()
        device = model.memory_embeddings.device

        def observe(report: StepReport, name: StageName = plan.name) -> None:
            if observer is not None:
                observer(name, report)

        checkpoints = root / plan.name / CHECKPOINT_DIR
        with _autocast(device, compute_dtype):
            if plan.name == "pretraining":
                train_stage_one(model, plan.examples, plan.settings,
                                checkpoint_dir=checkpoints, observer=observe)
            elif plan.name == "instructionTuning":
                train_instruction_tuning(model, plan.examples,
                                         plan.settings, cache=CandidateCache(),
                                         checkpoint_dir=checkpoints, observer=observe)
            else:
                train_stage_two(model, plan.examples, plan.settings,
                                cache=CandidateCache(), top_k=plan.top_k,
                                tau=plan.temperature, checkpoint_dir=checkpoints,
                                observer=observe)
        previous = _save_final(model, root, plan.name)
        if on_stage_done is not None:
            on_stage_done(plan.name, previous)
        del model
    assert previous is not None
    return previous
