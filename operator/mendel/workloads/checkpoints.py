"""Keeping checkpoints where a retried or resumed run finds them.

The engine checkpoints into a local directory. `CheckpointSync` mirrors each new
checkpoint to durable storage: a mounted volume (used directly), or by default the MLflow
parent run's artifacts, and records where it went in the run's tags (which the operator
mirrors into status). Before a run starts, `restore` brings the newest one back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mendel.tracking import contract

__all__ = ["CheckpointSync"]

_ARTIFACT_DIR = "checkpoints"


@dataclass
class CheckpointSync:
    """Mirror of a local checkpoint directory.

    Args:
        client: MLflow client of the parent run.
        run_id: The parent run.
        local_dir: Where the engine reads and writes checkpoints.
        volume_dir: A durable directory (the spec's output on a volume); None uses MLflow.
    """

    client: Any
    run_id: str
    local_dir: Path
    volume_dir: Path | None = None

    @property
    def engine_dir(self) -> Path:
        """The directory to hand to the engine."""
        return self.volume_dir if self.volume_dir is not None else self.local_dir

    def restore(self) -> str | None:
        """Bring the newest checkpoint back into `engine_dir`; returns its name, if any."""
        if self.volume_dir is not None:
            found = sorted(self.volume_dir.glob("gen-*"))
            return found[-1].name if found else None
        tags = self.client.get_run(self.run_id).data.tags
        name = str(tags.get(contract.TAG_CHECKPOINT_URI, "")).rsplit("/", 1)[-1]
        if not name:
            return None
        self.local_dir.mkdir(parents=True, exist_ok=True)
        if not (self.local_dir / name).exists():
            self.client.download_artifacts(self.run_id, f"{_ARTIFACT_DIR}/{name}",
                                           str(self.local_dir))
            downloaded = self.local_dir / _ARTIFACT_DIR / name
            if downloaded.exists():
                shutil.move(str(downloaded), str(self.local_dir / name))
                shutil.rmtree(self.local_dir / _ARTIFACT_DIR, ignore_errors=True)
        return name

    def saved(self, path: Path, step: int) -> str:
        """Record (and upload, without a volume) a checkpoint the engine just wrote."""
        if self.volume_dir is not None:
            uri = str(path)
        else:
            self.client.log_artifacts(self.run_id, str(path), f"{_ARTIFACT_DIR}/{path.name}")
            uri = f"runs:/{self.run_id}/{_ARTIFACT_DIR}/{path.name}"
        self.client.set_tag(self.run_id, contract.TAG_CHECKPOINT_URI, uri)
        self.client.set_tag(self.run_id, contract.TAG_CHECKPOINT_STEP, str(step))
        return uri
