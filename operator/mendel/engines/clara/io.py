"""Saving and loading a CLaRa model: PEFT's own adapter format plus the memory rows.

Layout of a saved directory (each adapter loads with `PeftModel.from_pretrained` on the
base model; none of them touches the vocabulary, so the base need not be resized for that):

    compressor/      adapter_config.json, adapter_model.safetensors
    generator/       (same)
    query_reasoner/  (same)
    memory_tokens.safetensors   {"memory_embeddings": [memory tokens, hidden] float32}
    clara.json       format, settings, memory-token names, hidden size, compressor fingerprint

The reference instead pickles adapter state dicts and the whole resized embedding and
output layers (`adapters.pth`, `decoder_first_last_layers.pth`), which ties checkpoints to
library internals (ml-clara #8).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from mendel.engines.clara.model import ClaraModel, fit_embeddings, lora_config
from mendel.engines.clara.settings import ADAPTERS, ClaraSettings
from mendel.engines.clara.tokens import add_memory_tokens

__all__ = ["MEMORY_FILE", "METADATA_FILE", "load_clara", "read_metadata", "read_versioned_json",
           "save_clara"]

METADATA_FILE = "clara.json"
MEMORY_FILE = "memory_tokens.safetensors"
MEMORY_KEY = "memory_embeddings"
FORMAT = 1


def save_clara(model: ClaraModel, directory: Path,
               adapters: Sequence[str] = ADAPTERS) -> Path:
    """Write the adapters (PEFT format), the memory rows and the metadata; returns `directory`.

    Raises:
        ValueError: an unknown adapter name.
    """
    unknown = set(adapters) - set(model.peft.peft_config)
    if unknown:
        raise ValueError(f"unknown adapters {sorted(unknown)}")
    directory.mkdir(parents=True, exist_ok=True)
    model.peft.save_pretrained(str(directory), selected_adapters=list(adapters),
                               save_embedding_layers=False)
    rows = model.memory_embeddings.detach().to("cpu").contiguous()
    save_file({MEMORY_KEY: rows}, str(directory / MEMORY_FILE))
    metadata = {
        "format": FORMAT,
        "settings": model.settings.to_json(),
        "memory_tokens": list(model.memory.names),
        "hidden_size": model.hidden_size,
        "adapters": list(adapters),
        "compressor_fingerprint": model.compressor_fingerprint(),
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return directory


def read_metadata(directory: Path) -> dict[str, Any]:
    """The saved `clara.json`.

    Raises:
        FileNotFoundError: not a saved CLaRa directory.
        ValueError: an unknown format.
    """
    return read_versioned_json(directory / METADATA_FILE, FORMAT, "a saved CLaRa model")


def read_versioned_json(path: Path, version: int, what: str) -> dict[str, Any]:
    """A JSON object whose "format" must equal `version`: the one reader of every CLaRa
    file that a later Mendel might write differently (model metadata, store manifests).

    Raises:
        FileNotFoundError: no such file (the message says what was expected there).
        ValueError: another format.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name}; not {what}")
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != version:
        raise ValueError(f"{path}: unknown format {data.get('format')!r} of {what}")
    return data


def load_clara(base_model: Any, tokenizer: Any, directory: Path,
               adapters: Sequence[str] = ADAPTERS) -> ClaraModel:
    """Rebuild a saved model on `base_model`, loading `adapters` and creating the rest fresh.

    Loading only the compressor gives instruction tuning's start (a fresh generator, seed
    §3.1.5). The tokenizer gets the saved memory tokens (in place).

    Raises:
        FileNotFoundError: the directory, or a requested adapter, is missing.
        ValueError: the memory rows do not fit the model or the token list.
    """
    metadata = read_metadata(directory)
    settings = ClaraSettings.from_json(metadata["settings"])
    missing = [name for name in adapters if not (directory / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"{directory} has no saved adapters {missing}")
    memory = add_memory_tokens(tokenizer, metadata["memory_tokens"])
    fit_embeddings(base_model, tokenizer)
    first, *others = ADAPTERS
    if first in adapters:
        peft_model = PeftModel.from_pretrained(base_model, str(directory / first),
                                               adapter_name=first, is_trainable=True)
    else:
        peft_model = get_peft_model(base_model, lora_config(settings), adapter_name=first)
    for name in others:
        if name in adapters:
            peft_model.load_adapter(str(directory / name), adapter_name=name, is_trainable=True)
        else:
            peft_model.add_adapter(name, lora_config(settings))
    rows = _memory_file(directory, memory.count)
    device = base_model.get_input_embeddings().weight.device
    return ClaraModel(peft_model, tokenizer, memory, settings, rows.to(device))


def _memory_file(directory: Path, count: int) -> Any:
    rows = load_file(str(directory / MEMORY_FILE))[MEMORY_KEY]
    if rows.shape[0] != count:
        raise ValueError(f"{directory / MEMORY_FILE} has {rows.shape[0]} rows for {count} "
                         "memory tokens")
    return rows

