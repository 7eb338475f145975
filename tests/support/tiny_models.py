"""Micro models for end-to-end tests: a character tokenizer and Llama models (2 layers,
hidden 32) saved as Hugging Face directories, with experts made by perturbing the base."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(list(SPECIALS.values()) + list(string.printable[:95]))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIALS)


def save_family(root: Path, experts: list[str], seed: int = 0) -> dict[str, Path]:
    """Write root/base and root/expert-<name> (base + a random task vector each)."""
    tokenizer = char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=64, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    base = LlamaForCausalLM(config)
    paths = {"base": root / "base"}
    base.save_pretrained(paths["base"])
    tokenizer.save_pretrained(paths["base"])
    for index, name in enumerate(experts):
        expert = LlamaForCausalLM(config)
        expert.load_state_dict(base.state_dict())
        generator = torch.Generator().manual_seed(seed + index + 1)
        with torch.no_grad():
            for param in expert.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
        paths[name] = root / f"expert-{name}"
        expert.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
