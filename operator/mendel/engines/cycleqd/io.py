"""Model I/O for CycleQD: loading base and experts, saving a materialised model.

Kept apart from the tensor math so the math never sees a path. Hugging Face imports are
lazy: importing the engine does not pull in transformers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mendel.engines.cycleqd.genome import Genome
from mendel.engines.cycleqd.merge_methods import MERGE_METHODS
from mendel.engines.cycleqd.taskvectors import check_same_architecture

__all__ = [
    "CYCLEQD_PAPER",
    "Precision",
    "load_experts",
    "load_resident_model",
    "load_state_dict",
    "model_card",
    "save_model",
]

CYCLEQD_PAPER = "https://arxiv.org/abs/2410.14735"
Precision = Literal["bfloat16", "float16", "float32"]
_DTYPES: Mapping[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def load_resident_model(path: Path, precision: Precision = "bfloat16") -> nn.Module:
    """Load a Hugging Face causal LM directory as the model children are written into.

    Raises:
        ValueError: On an unknown precision.
    """
    from transformers import AutoModelForCausalLM

    if precision not in _DTYPES:
        raise ValueError(f"unknown precision '{precision}'; known: {sorted(_DTYPES)}")
    model: nn.Module = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[precision])
    model.eval()
    return model


def load_state_dict(path: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A Hugging Face causal LM directory as a state dict of detached tensors."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def load_experts(
    base: Path, experts: Mapping[str, Path], dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Load the base model and every expert, checking they share one architecture.

    Raises:
        ValueError: Naming the expert and the first tensor that differs from the base.
    """
    base_sd = load_state_dict(base, dtype)
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name, path in experts.items():
        sd = load_state_dict(path, dtype)
        check_same_architecture(base_sd, sd, f"expert '{name}' ({path})")
        loaded[name] = sd
    return base_sd, loaded


def _references(genome: Genome) -> list[str]:
    refs = [CYCLEQD_PAPER]
    method = MERGE_METHODS.get(genome.operator.split("+", 1)[0])
    if method is not None and method.reference_url not in refs:
        refs.append(method.reference_url)
    for term in genome.recipe.merges:
        url = MERGE_METHODS[term.method].reference_url if term.method in MERGE_METHODS else None
        if url is not None and url not in refs:
            refs.append(url)
    return refs


def _parent_lines(genome: Genome) -> list[str]:
    weights = genome.parent_weights
    return [
        f"- `{p}`" + (f" weight {weights[i]:.6g}" if i < len(weights) else "")
        for i, p in enumerate(genome.parents)
    ]


def model_card(
    genome: Genome,
    scores: Mapping[str, float] | None,
    base_uri: str,
    expert_uris: Mapping[str, str],
) -> str:
    """A short README.md saying how the model was made: recipe, parents, references."""
    refs = _references(genome)
    lines = [
        "---",
        f"base_model: {base_uri}",
        "library_name: transformers",
        "tags: [merge, cycleqd, mendel]",
        "---",
        f"# {genome.id}",
        "",
        f"Merged by Mendel's CycleQD engine (operator `{genome.operator}`, generation "
        f"{genome.generation}) from base `{base_uri}` and experts "
        + ", ".join(f"`{k}` ({v})" for k, v in expert_uris.items())
        + ".",
        "",
        "## Parents",
        *_parent_lines(genome),
        "",
        "## Scores",
        *(f"- {t}: {s:.6g}" for t, s in (scores or {}).items()),
        *(["- not evaluated"] if not scores else []),
        "",
        "## Method references",
        *(f"- {url}" for url in refs),
        "",
        "## Recipe",
        "```json",
        json.dumps(genome.to_dict(), indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def save_model(
    model: nn.Module,
    directory: Path,
    genome: Genome,
    *,
    scores: Mapping[str, float] | None,
    base_uri: str,
    expert_uris: Mapping[str, str],
    tokenizer_dir: Path | None = None,
) -> Path:
    """Save a materialised model (safetensors) with its model card.

    Args:
        model: A Hugging Face model holding the genome's weights (see `materialize`).
        directory: Output directory (created).
        genome: What the weights are.
        scores: Its scores, if evaluated.
        base_uri: The base model reference, for the card.
        expert_uris: Expert name -> reference, for the card.
        tokenizer_dir: Copy tokenizer files from here (usually the base model directory).

    Returns:
        The directory.

    Raises:
        ValueError: If the model cannot save itself in Hugging Face format.
    """
    save = getattr(model, "save_pretrained", None)
    if save is None:
        raise ValueError("save_model needs a Hugging Face model (with save_pretrained)")
    directory.mkdir(parents=True, exist_ok=True)
    save(str(directory))
    if tokenizer_dir is not None:
        for name in _TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, directory / name)
    card = model_card(genome, scores, base_uri, expert_uris)
    (directory / "README.md").write_text(card, encoding="utf-8")
    return directory
