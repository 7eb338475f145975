"""Checkpoints: archives, recipes, counters in a local directory, written atomically.

Each checkpoint is a directory `gen-NNNNNN/` holding `state.json` and
`recipes.safetensors` (no pickle). It is built under a temporary name and renamed into
place, so a crash mid-write leaves the previous checkpoint intact; `load_latest` picks
the highest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from mendel.engines.cycleqd.archive import Archive
from mendel.engines.cycleqd.genome import GenomeStore
from mendel.engines.cycleqd.state import EngineState

__all__ = [
    "atomic_write_text",
    "latest_checkpoint",
    "load_checkpoint",
    "load_latest",
    "prune_checkpoints",
    "save_checkpoint",
]

FORMAT = 1
_STATE = "state.json"
_RECIPES = "recipes.safetensors"
_PREFIX = "gen-"
RNG_SCHEME = "torch CPU generator per generation, seeded blake2b(seed, 'generation', g)"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file via a temporary sibling and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _state_json(state: EngineState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "seed": state.seed,
        "tasks": list(state.tasks),
        "experts": list(state.experts),
        "generation": state.generation,
        "failures": state.failures,
        "rng": {"scheme": RNG_SCHEME, "nextGeneration": state.generation},
        "expertScores": {k: dict(v) for k, v in state.expert_scores.items()},
        "archives": {task: a.to_dict() for task, a in state.archives.items()},
        "genomes": state.store.to_dict(),
    }


def save_checkpoint(directory: Path, state: EngineState, keep: int | None = 2) -> Path:
    """Write a checkpoint of `state` and keep only the newest `keep` ones.

    Args:
        directory: Checkpoint root (created if missing).
        state: What to save.
        keep: How many checkpoints to retain (at least 1); None keeps every one, for a
            reader in another process that prunes once it has copied them.

    Returns:
        The checkpoint directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{state.generation:06d}"
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{final.name}."))
    try:
        save_file(state.store.tensors(), str(tmp / _RECIPES), metadata={"format": str(FORMAT)})
        text = json.dumps(_state_json(state), indent=1, sort_keys=True, allow_nan=False)
        (tmp / _STATE).write_text(text, encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        prune_checkpoints(directory, keep)
    return final


def prune_checkpoints(directory: Path, keep: int, upto: str | None = None) -> list[Path]:
    """Delete all but the newest `keep` (at least 1) complete checkpoints; returns them.

    Args:
        directory: Checkpoint root.
        keep: How many to retain.
        upto: Only checkpoints named up to this one count (newer ones are left alone): a
            reader that copies them behind the writer prunes what it has copied.
    """
    found = [p for p in _complete(directory) if upto is None or p.name <= upto]
    old = found[: -max(keep, 1)]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def _complete(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [
        p
        for p in directory.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and (p / _STATE).is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint under `directory`, if any."""
    found = _complete(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> EngineState:
    """Read one checkpoint directory.

    Raises:
        ValueError: If the format is unknown.
    """
    data = json.loads((path / _STATE).read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {data.get('format')!r}")
    tensors = load_file(str(path / _RECIPES))
    return EngineState(
        seed=int(data["seed"]),
        tasks=tuple(data["tasks"]),
        experts=tuple(data["experts"]),
        generation=int(data["generation"]),
        failures=int(data["failures"]),
        expert_scores={
            str(k): {str(t): float(s) for t, s in v.items()}
            for k, v in data["expertScores"].items()
        },
        archives={str(t): Archive.from_dict(a) for t, a in data["archives"].items()},
        store=GenomeStore.from_dict(data["genomes"], tensors),
    )


def load_latest(directory: Path) -> EngineState | None:
    """The state of the newest checkpoint, or None if there is none."""
    path = latest_checkpoint(directory)
    return None if path is None else load_checkpoint(path)
