"""On-disk cache of expert SVD bases, shared across runs.

A full SVD of every matrix of an 8B expert takes minutes on a GPU, and the same experts
are evolved again and again; the factors are stored as safetensors under a key hashing
the expert and base identity, the rank and the tensor shapes, and reloaded on reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mendel.engines.cycleqd.svd import SvdFactors, expert_svd, is_svd_target
from mendel.engines.cycleqd.taskvectors import StateDict

__all__ = ["SvdCache"]

_VERSION = "1"
_PARTS = ("u", "s", "vh")


class SvdCache:
    """Computes an expert's SVD bases once and reuses them from disk.

    Args:
        directory: Where `<key>.safetensors` files live (created on first write).
        identities: Expert name -> identity string, e.g. "expert=<uri>@<rev>|base=<uri>";
            an expert without one is keyed by its name only.

    Attributes:
        hits: Loads served from disk by this instance.
        misses: Bases computed by this instance.
    """

    def __init__(self, directory: Path, identities: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.identities = dict(identities or {})
        self.hits = 0
        self.misses = 0

    def key(self, identity: str, task_vector: StateDict, rank: int | None) -> str:
        """Hash of identity, rank, format version and the shapes of the SVD targets."""
        shapes = {
            name: list(t.shape) for name, t in sorted(task_vector.items()) if is_svd_target(name, t)
        }
        blob = json.dumps(
            {"identity": identity, "rank": rank, "version": _VERSION, "shapes": shapes},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:40]

    def __call__(
        self, expert: str, task_vector: StateDict, rank: int | None
    ) -> dict[str, SvdFactors]:
        """Bases of one expert: from disk if cached, else computed and stored.

        The signature matches `taskvectors.SvdProvider`, so an instance can be passed to
        `build_bank` directly.
        """
        identity = self.identities.get(expert, expert)
        path = self.directory / f"{self.key(identity, task_vector, rank)}.safetensors"
        device = next(iter(task_vector.values())).device
        wanted = {n for n, t in task_vector.items() if is_svd_target(n, t)}
        if path.is_file():
            loaded = _read(path, device)
            if set(loaded) == wanted:
                self.hits += 1
                return loaded
        factors = expert_svd(task_vector, rank)
        self._write(path, factors, identity, rank)
        self.misses += 1
        return factors

    def _write(
        self, path: Path, factors: dict[str, SvdFactors], identity: str, rank: int | None
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{name}.{part}": getattr(f, part).detach().to("cpu").contiguous()
            for name, f in factors.items()
            for part in _PARTS
        }
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.")
        os.close(fd)
        try:
            meta = {"identity": identity, "rank": str(rank), "version": _VERSION}
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _read(path: Path, device: torch.device) -> dict[str, SvdFactors]:
    tensors = load_file(str(path), device=str(device))
    names = sorted({key.rsplit(".", 1)[0] for key in tensors})
    out: dict[str, SvdFactors] = {}
    for name in names:
        parts = [tensors.get(f"{name}.{p}") for p in _PARTS]
        u, s, vh = parts
        if u is None or s is None or vh is None:
            continue
        out[name] = SvdFactors(u, s, vh)
    return out
