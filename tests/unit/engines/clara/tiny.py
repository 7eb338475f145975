"""Tiny CLaRa models for the engine tests: a character tokenizer on two architectures
(Llama: untied head, rotary positions; GPT-2: tied head, learned positions, Conv1D layers),
2 layers and hidden size 32, so every test builds its own model in milliseconds."""

from __future__ import annotations

import torch
from tests.support.tiny_models import char_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mendel.engines.clara import (
    MEMORY_SLOT,
    ClaraModel,
    ClaraSettings,
    StageOneBatch,
    StageOneExample,
    create_clara,
)

ARCHITECTURES = ("llama", "gpt2")
SETTINGS = ClaraSettings(compression_rate=4, chunk_size=16, lora_r=4, lora_alpha=8,
                         lora_dropout=0.0)
DOCUMENTS = ("Ada Lovelace wrote the first program.", "Tea.")
PROMPT = f"Background: {MEMORY_SLOT}\nQuestion: who?\nAnswer:"


def tiny_base(architecture: str, tokenizer, seed: int = 0) -> torch.nn.Module:
    """A random 2-layer model; the same seed gives the same weights (dropout off)."""
    torch.manual_seed(seed)
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, tie_word_embeddings=False, **ids))
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids))
    raise ValueError(architecture)


def build_clara(architecture: str = "llama", settings: ClaraSettings = SETTINGS,
                seed: int = 0, dtype: torch.dtype = torch.float32) -> ClaraModel:
    tokenizer = char_tokenizer()
    base = tiny_base(architecture, tokenizer, seed).to(dtype)
    return create_clara(base, tokenizer, settings)


def perturb(model: ClaraModel, adapter: str, seed: int, scale: float = 0.2) -> None:
    """Give an adapter non-zero LoRA B weights (fresh ones are zero: a no-op adapter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.peft.named_parameters():
            if f"lora_B.{adapter}." in name:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def stage_one(model: ClaraModel, documents: tuple[str, ...] = DOCUMENTS) -> StageOneBatch:
    """One stage-I record per document, each with its own short answer."""
    examples = [StageOneExample(PROMPT, (doc,), f" answer {i}") for i, doc in enumerate(documents)]
    return model.collator.stage_one_batch(examples)
