"""A corpus compressed once by a trained compressor: per-document memory states on disk.

Layout of a store directory:

    manifest.json              format, compressor fingerprint, settings, model identity,
                               and per document: id, text digest, chunk count, shard
    shards/shard-00000.safetensors   one tensor per document, [chunks, memory tokens, hidden]

Memory states are only meaningful to the compressor that wrote them, so the manifest records
its fingerprint (`ClaraModel.compressor_fingerprint`: adapter weights, memory rows, settings)
and the base model's identity, and a store refuses a model whose fingerprint or identity
differs: mixing states of two compressor versions in one index gives wrong answers silently.

Writing is atomic per shard: a shard is written under a temporary name and renamed, then the
manifest is replaced the same way, so a killed run leaves a consistent store holding every
finished shard, and running `compress_corpus` again with the same documents resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mendel.engines.clara.io import read_versioned_json
from mendel.engines.clara.model import ClaraModel
from mendel.engines.clara.settings import COMPRESSOR

__all__ = ["MANIFEST_FILE", "CompressedStore", "StoreMismatchError", "compress_corpus",
           "model_identity"]

MANIFEST_FILE = "manifest.json"
SHARD_DIR = "shards"
FORMAT = 1


class StoreMismatchError(ValueError):
    """A model or document does not match what the store was written with."""


def model_identity(model: ClaraModel) -> dict[str, Any]:
    """What names the backbone the memory states belong to (the fingerprint covers only the
    compressor adapter, the memory rows and the settings, not the base weights)."""
    config = model.backbone.config
    return {
        "name_or_path": str(getattr(config, "_name_or_path", "") or ""),
        "model_type": str(getattr(config, "model_type", "")),
        "hidden_size": model.hidden_size,
        "memory_tokens": model.memory.count,
    }


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


class CompressedStore:
    """A store directory, opened for reading (and checked against a model when given one).

    Open with `CompressedStore.open`; write with `compress_corpus`.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self._manifest = manifest
        self._entries = {entry["id"]: entry for entry in manifest["documents"]}

    @classmethod
    def open(cls, directory: Path, model: ClaraModel | None = None) -> CompressedStore:
        """Read the manifest of `directory`; with `model`, refuse it if it does not match.

        Raises:
            FileNotFoundError: no manifest in `directory`.
            ValueError: an unknown manifest format.
            StoreMismatchError: `model`'s compressor fingerprint or identity differs.
        """
        manifest = read_versioned_json(directory / MANIFEST_FILE, FORMAT, "a compressed store")
        store = cls(directory, manifest)
        if model is not None:
            store.check_model(model)
        return store

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the compressor that wrote every state in the store."""
        return str(self._manifest["compressor_fingerprint"])

    @property
    def settings(self) -> dict[str, Any]:
        """The compression settings, as `ClaraSettings.to_json` gave them."""
        return dict(self._manifest["settings"])

    @property
    def identity(self) -> dict[str, Any]:
        """The backbone's identity (`model_identity`) at write time."""
        return dict(self._manifest["model"])

    @property
    def document_ids(self) -> list[str]:
        """Stored document ids, in the order they were written."""
        return [entry["id"] for entry in self._manifest["documents"]]

    def chunk_count(self, document_id: str) -> int:
        """Chunks the document was split into (its memory block is that x memory tokens).

        Raises:
            KeyError: the document is not stored.
        """
        return int(self._entry(document_id)["chunks"])

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, document_id: object) -> bool:
        return document_id in self._entries

    def check_model(self, model: ClaraModel, fingerprint: str | None = None) -> None:
        """Refuse a model whose compressor or backbone is not the one the store was written
        with.

        Args:
            model: The model that would read or extend the store.
            fingerprint: `model.compressor_fingerprint()`, when the caller has it already.

        Raises:
            StoreMismatchError: the fingerprints or identities differ; names both.
        """
        theirs = fingerprint or model.compressor_fingerprint()
        if theirs != self.fingerprint:
            raise StoreMismatchError(
                f"{self.directory} was compressed by compressor {self.fingerprint}, but this "
                f"model's compressor is {theirs}; compressed states of different compressor "
                "versions cannot be mixed: use a new store directory or the original model")
        identity = model_identity(model)
        if identity != self.identity:
            raise StoreMismatchError(
                f"{self.directory} was written with backbone {self.identity}, not {identity}")

    def load(self, document_ids: Sequence[str]) -> list[torch.Tensor]:
        """The memory states of each document, [chunks, memory tokens, hidden], on the CPU.

        Raises:
            KeyError: a document is not stored.
        """
        entries = [self._entry(document_id) for document_id in document_ids]
        shards: dict[str, dict[str, torch.Tensor]] = {}
        for entry in entries:
            if entry["shard"] not in shards:
                shards[entry["shard"]] = load_file(str(self.directory / entry["shard"]))
        return [shards[entry["shard"]][entry["key"]] for entry in entries]

    def _entry(self, document_id: str) -> dict[str, Any]:
        try:
            return dict(self._entries[document_id])
        except KeyError:
            raise KeyError(f"document {document_id!r} is not in the store at "
                           f"{self.directory}") from None


def _new_manifest(model: ClaraModel, fingerprint: str) -> dict[str, Any]:
    return {"format": FORMAT, "compressor_fingerprint": fingerprint,
            "settings": model.settings.to_json(), "model": model_identity(model),
            "shards": 0, "documents": []}


def _pending(documents: Sequence[Mapping[str, str]],
             stored: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, str]]:
    """The documents still to compress; a stored or repeated id must carry the same text."""
    seen: dict[str, str] = {}
    pending = []
    for document in documents:
        identifier, digest = str(document["id"]), _text_digest(document["text"])
        known = stored[identifier]["text_sha256"] if identifier in stored else seen.get(identifier)
        if known is not None and known != digest:
            raise StoreMismatchError(f"document {identifier!r} is already stored with other text")
        if known is None:
            seen[identifier] = digest
            pending.append(document)
    return pending


def _encode_chunks(model: ClaraModel, chunks: list[list[int]],
                   batch_size: int) -> torch.Tensor:
    """Compressor memory states of `chunks`, `batch_size` per forward, without gradients and
    in eval mode (the training mode is restored)."""
    device = model.memory_embeddings.device
    training = model.training
    if training:
        model.eval()
    try:
        with torch.no_grad():
            parts = [model.encode(model.collator.encoder_batch(chunks[start:start + batch_size])
                                  .to(device), COMPRESSOR).memory.to("cpu")
                     for start in range(0, len(chunks), batch_size)]
    finally:
        if training:
            model.train()
    return torch.cat(parts)


def _groups(chunked: list[list[list[int]]], batch_size: int) -> list[list[int]]:
    """Document indices per shard: whole documents, about `batch_size` chunks a shard."""
    groups: list[list[int]] = [[]]
    filled = 0
    for index, chunks in enumerate(chunked):
        if groups[-1] and filled + len(chunks) > batch_size:
            groups.append([])
            filled = 0
        groups[-1].append(index)
        filled += len(chunks)
    return [group for group in groups if group]


def _write_shard(directory: Path, manifest: dict[str, Any], documents: list[Mapping[str, str]],
                 states: list[torch.Tensor]) -> None:
    name = f"{SHARD_DIR}/shard-{manifest['shards']:05d}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    for offset, (document, block) in enumerate(zip(documents, states, strict=True)):
        key = f"document-{len(manifest['documents']) + offset}"
        tensors[key] = block.contiguous()
        manifest["documents"].append({"id": str(document["id"]), "key": key, "shard": name,
                                      "chunks": int(block.shape[0]),
                                      "text_sha256": _text_digest(document["text"])})
    path = directory / name
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"compressor_fingerprint":
                                               manifest["compressor_fingerprint"]})
    os.replace(partial, path)
    manifest["shards"] += 1
    _write_atomically(directory / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")


def compress_corpus(model: ClaraModel, documents: Sequence[Mapping[str, str]],
                    directory: Path, batch_size: int = 16) -> CompressedStore:
    """Compress `documents` into the store at `directory`, creating or extending it.

    Documents already stored (same id and text) are skipped, so a rerun after a crash
    resumes; documents longer than the chunk size are split, never truncated.

    Args:
        model: The trained CLaRa model; its compressor adapter writes the states.
        documents: Records with "id" and "text".
        directory: The store; created when missing.
        batch_size: Chunks per compressor forward, and about per shard.

    Returns:
        The store, opened.

    Raises:
        ValueError: `batch_size` is not positive.
        StoreMismatchError: the store was written by another compressor or backbone, or a
            stored document id comes with different text.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    fingerprint = model.compressor_fingerprint()
    if (directory / MANIFEST_FILE).is_file():
        store = CompressedStore.open(directory)
        store.check_model(model, fingerprint)
        manifest = store._manifest
    else:
        manifest = _new_manifest(model, fingerprint)
    stored = {entry["id"]: entry for entry in manifest["documents"]}
    pending = _pending(documents, stored)
    (directory / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    chunked = [model.collator.document_chunks(document["text"]) for document in pending]
    for group in _groups(chunked, batch_size):
        chunks = [chunk for index in group for chunk in chunked[index]]
        states = _encode_chunks(model, chunks, batch_size)
        offsets = [0, *accumulate(len(chunked[index]) for index in group)]
        blocks = [states[start:end] for start, end in pairwise(offsets)]
        _write_shard(directory, manifest, [pending[index] for index in group], blocks)
    if not (directory / MANIFEST_FILE).is_file():
        _write_atomically(directory / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return CompressedStore.open(directory)
