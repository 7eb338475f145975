"""Loading the JSON Lines records a DatasetRef points at, wherever they live.

Engines and evaluators call `load_records`; they never care whether the data came from a
volume, S3, the Hugging Face Hub, MLflow or a generator that ships with Mendel
(`builtin:<name>`). Built-in datasets register themselves with `register_builtin`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mendel.api.references import DatasetRef

__all__ = ["BuiltinLoader", "DatasetError", "builtin_names", "load_records", "register_builtin"]

Record = dict[str, Any]
BuiltinLoader = Callable[[str], list[Record]]
"""A built-in dataset: split name ('train', 'validation', 'test') -> records."""

_BUILTINS: dict[str, BuiltinLoader] = {}


class DatasetError(ValueError):
    """A dataset could not be read or has records of the wrong shape."""


def register_builtin(name: str) -> Callable[[BuiltinLoader], BuiltinLoader]:
    """Decorator that makes a generator available as `builtin:<name>`."""

    def register(loader: BuiltinLoader) -> BuiltinLoader:
        _BUILTINS[name] = loader
        return loader

    return register


def builtin_names() -> list[str]:
    """Names usable after 'builtin:'."""
    _import_builtins()
    return sorted(_BUILTINS)


def load_records(ref: DatasetRef, *, cache_dir: Path | None = None) -> list[Record]:
    """All records of a dataset reference's split, cut to its limit.

    Args:
        ref: The reference from a spec.
        cache_dir: Where remote files are downloaded to (default: a temporary directory).

    Raises:
        DatasetError: the data is missing, unreadable or not JSON objects.
    """
    if ref.source == "builtin":
        records = _load_builtin(ref.uri.removeprefix("builtin:"), ref.split)
    else:
        records = _read_jsonl(_local_path(ref, cache_dir))
    return records[: ref.limit] if ref.limit else records


def _load_builtin(name: str, split: str) -> list[Record]:
    _import_builtins()
    if name not in _BUILTINS:
        known = ", ".join(sorted(_BUILTINS))
        raise DatasetError(f"unknown built-in dataset {name!r}; known: {known}")
    return _BUILTINS[name](split)


def _import_builtins() -> None:
    # Imported for their registrations; kept lazy so that `mendel.api` users pay nothing.
    from mendel.datasets import builtin  # noqa: F401


def _local_path(ref: DatasetRef, cache_dir: Path | None) -> Path:
    if ref.source == "volume":
        return Path(ref.uri)
    from mendel.datasets.remote import download

    return download(ref, cache_dir)


def _read_jsonl(path: Path) -> list[Record]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
        return [record for file in files for record in _read_jsonl(file)]
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    opener = gzip.open if path.name.endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not JSON: {error}") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: each line must be a JSON object")
            records.append(record)
    return records
