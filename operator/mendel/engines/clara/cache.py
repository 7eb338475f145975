"""Memory states of candidate chunks, computed once per compressor and reused.

Stage II scores every question against its candidate documents (20 in the paper). The
reference re-encodes all of them on every step, although the compressor is frozen in that
stage, so the same chunk always gives the same states. `CandidateCache` encodes each chunk
once and then returns the stored states.

An entry is keyed by (compressor fingerprint, sha256 of the chunk's token ids). The
fingerprint (`ClaraModel.compressor_fingerprint`) digests the compressor adapter, the
memory-token rows and the compression settings, so any change to what determines the
states makes every lookup a miss instead of returning stale states. Entries live in memory
and, given a directory, also on disk as `<directory>/<fingerprint>/<chunk digest>.safetensors`
with both keys in the file's metadata; a file whose metadata names other keys is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mendel.engines.clara.model import ClaraModel
from mendel.engines.clara.settings import COMPRESSOR

__all__ = ["CacheStats", "CandidateCache", "StaleCacheError", "chunk_digest"]

_STATES = "memory_states"


class StaleCacheError(ValueError):
    """A stored entry was computed under another compressor (or for another chunk)."""


@dataclass(frozen=True)
class CacheStats:
    """Lookups so far: chunks served from the cache, and chunks that had to be encoded."""

    hits: int
    misses: int


def chunk_digest(chunk: Sequence[int]) -> str:
    """The sha256 of a chunk's token ids (a pure function of the ids)."""
    return hashlib.sha256(",".join(str(int(i)) for i in chunk).encode()).hexdigest()


class CandidateCache:
    """Memory states per (compressor fingerprint, chunk), in memory and optionally on disk.

    Only one fingerprint's entries are kept in memory: when a new one appears, the old
    entries are dropped (they can never be hit again by that model); disk entries stay.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._fingerprint: str | None = None
        self._entries: dict[str, torch.Tensor] = {}
        self._hits = 0
        self._misses = 0

    @property
    def stats(self) -> CacheStats:
        """Hits and misses counted over every `get_or_compute` call."""
        return CacheStats(self._hits, self._misses)

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_compute(self, model: ClaraModel, chunks: Sequence[Sequence[int]],
                       fingerprint: str | None = None) -> torch.Tensor:
        """The compressor's memory states of `chunks`, encoding only the ones not cached.

        The misses are encoded in one batch with the compressor adapter, without gradients
        and with dropout off, so the stored states do not depend on the training mode.

        Args:
            model: The CLaRa model whose compressor gives the states.
            chunks: Token ids of each chunk (as `ClaraCollator.document_chunks` gives).
            fingerprint: `model.compressor_fingerprint()`, when the caller already has it
                (computing it hashes the compressor's weights).

        Returns:
            [chunks, memory tokens, hidden] states, in the order of `chunks`, on the
            device of the model's memory rows.

        Raises:
            ValueError: no chunks.
            StaleCacheError: a file on disk holds states of another fingerprint or chunk.
        """
        if not chunks:
            raise ValueError("get_or_compute needs at least one chunk")
        self._use_fingerprint(fingerprint or model.compressor_fingerprint())
        digests = [chunk_digest(chunk) for chunk in chunks]
        missing = {d: chunk for d, chunk in zip(digests, chunks, strict=True)
                   if not self._lookup(d)}
        self._misses += len(missing)
        self._hits += len(digests) - len(missing)
        if missing:
            self._store(list(missing), _encode(model, list(missing.values())))
        device = model.memory_embeddings.device
        return torch.stack([self._entries[d] for d in digests]).to(device)

    def warm(self, model: ClaraModel, chunks: Sequence[Sequence[int]],
             fingerprint: str | None = None, batch_size: int = 16) -> None:
        """Encode every chunk not cached yet, in batches of `batch_size` in the given order.

        A state depends slightly on the batch it was encoded in (its padding width and the
        kernels' blocking), so a stage warms its cache with all of its documents before the
        first step: a run resumed mid-stage then reads the same states, bit for bit, as a
        run that never stopped, instead of states encoded with other micro-batches.
        """
        fingerprint = fingerprint or model.compressor_fingerprint()
        self._use_fingerprint(fingerprint)
        unique = {chunk_digest(chunk): chunk for chunk in chunks}
        pending = [chunk for digest, chunk in unique.items() if not self._lookup(digest)]
        for start in range(0, len(pending), batch_size):
            self.get_or_compute(model, pending[start:start + batch_size], fingerprint)

    def _use_fingerprint(self, fingerprint: str) -> None:
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._entries = {}

    def _entry_path(self, digest: str) -> Path | None:
        if self.directory is None or self._fingerprint is None:
            return None
        return self.directory / self._fingerprint / f"{digest}.safetensors"

    def _lookup(self, digest: str) -> bool:
        """Whether the entry is in memory, after loading it from disk if it is there."""
        if digest in self._entries:
            return True
        path = self._entry_path(digest)
        if path is None or not path.exists():
            return False
        self._entries[digest] = self._read(path, digest)
        return True

    def _read(self, path: Path, digest: str) -> torch.Tensor:
        with safe_open(str(path), framework="pt") as stored:
            metadata = stored.metadata() or {}
        expected = {"fingerprint": self._fingerprint, "chunk": digest}
        found = {key: metadata.get(key) for key in expected}
        if found != expected:
            raise StaleCacheError(f"{path} holds states for {found}, not {expected}; "
                                  "delete it or use another cache directory")
        return load_file(str(path))[_STATES]

    def _store(self, digests: list[str], states: torch.Tensor) -> None:
        for digest, row in zip(digests, states, strict=True):
            entry = row.detach().to("cpu").clone()
            self._entries[digest] = entry
            path = self._entry_path(digest)
            if path is None or self._fingerprint is None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            save_file({_STATES: entry.contiguous()}, str(partial),
                      metadata={"fingerprint": self._fingerprint, "chunk": digest})
            partial.replace(path)


def _encode(model: ClaraModel, chunks: list[Sequence[int]]) -> torch.Tensor:
    """One no-grad compressor forward over `chunks`, in eval mode (training mode restored)."""
    batch = model.collator.encoder_batch(chunks).to(model.memory_embeddings.device)
    training = model.training
    if training:
        model.eval()
    try:
        with torch.no_grad():
            return model.encode(batch, COMPRESSOR).memory
    finally:
        if training:
            model.train()
