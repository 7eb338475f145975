"""The tiny model family: a character tokenizer and Llama configurations built offline.

No pretrained weights or tokenizers can be downloaded here, so both are built from code.
The tokenizer is a `tokenizers` WordLevel model over single characters, wrapped as a
`PreTrainedTokenizerFast` and saved with `save_pretrained`, so every consumer (the CycleQD
engine, the evaluators, `evaluate.py`) loads it with `AutoTokenizer.from_pretrained(dir)`
exactly as it would a real LLM's. The model is a stock `LlamaForCausalLM`, so merging code
sees the same tensor names as on Llama-3 (q_proj, gate_proj, embed_tokens, lm_head, ...).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

__all__ = ["SIZES", "SPECIAL_TOKENS", "build_model", "build_tokenizer", "save"]

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}
_CHARACTERS = string.digits + string.ascii_lowercase + " " + string.punctuation

SIZES: dict[str, dict[str, Any]] = {
    # ~0.7M parameters: learns the three skills in CPU minutes.
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4},
    # ~1.8M parameters: about 2.5x the compute of tiny per step.
    "small": {"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4},
}
"""Architecture per size; every size has 4 attention heads and a 64-token context."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character, BOS prepended, left padding.

    Left padding matters because batched greedy generation appends to the right; the
    BOS post-processor makes `tokenizer(prompt)` give exactly the ids seen in training.
    """
    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: index for index, token in enumerate(specials + list(_CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    bos = SPECIAL_TOKENS["bos_token"]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=64,
        **SPECIAL_TOKENS,
    )


def build_model(size: str, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model of one size, with ids wired to the tokenizer.

    Raises:
        ValueError: unknown size.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {list(SIZES)}")
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SIZES[size],
    )
    return LlamaForCausalLM(config)


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Write a directory that `AutoModelForCausalLM`/`AutoTokenizer.from_pretrained` load.

    The generation config pins greedy decoding and the pad/EOS ids, so a consumer calling
    `generate` without arguments stops at EOS and does not warn about a missing pad id.
    """
    model.generation_config = GenerationConfig(
        do_sample=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
