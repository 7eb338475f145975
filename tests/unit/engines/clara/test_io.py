"""Saved CLaRa models: PEFT's own adapter format, the memory rows, and loading back."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from tests.support.tiny_models import char_tokenizer
from tests.unit.engines.clara.tiny import build_clara, perturb, stage_one, tiny_base

from mendel.engines.clara import (
    ADAPTERS,
    COMPRESSOR,
    GENERATOR,
    MEMORY_FILE,
    METADATA_FILE,
    load_clara,
    save_clara,
)


def trained(architecture):
    model = build_clara(architecture)
    for seed, adapter in enumerate(ADAPTERS):
        perturb(model, adapter, seed)
    with torch.no_grad():
        model.memory_embeddings.add_(0.5)
    return model


def test_save_writes_peft_adapters_memory_rows_and_metadata(tmp_path):
    model = trained("llama")
    save_clara(model, tmp_path)
    for adapter in ADAPTERS:
        assert (tmp_path / adapter / "adapter_config.json").is_file()
        assert (tmp_path / adapter / "adapter_model.safetensors").is_file()
    rows = load_file(str(tmp_path / MEMORY_FILE))["memory_embeddings"]
    assert torch.equal(rows, model.memory_embeddings.detach())
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert metadata["memory_tokens"] == ["<MEM0>", "<MEM1>", "<MEM2>", "<MEM3>"]
    assert metadata["settings"]["compression_rate"] == 4
    assert metadata["compressor_fingerprint"] == model.compressor_fingerprint()


def test_saved_adapters_load_with_peft_from_pretrained(tmp_path, architecture):
    model = trained(architecture)
    save_clara(model, tmp_path)
    tokenizer = char_tokenizer()
    ids = torch.tensor([tokenizer("plain text", add_special_tokens=False)["input_ids"]])
    vocabulary = len(tokenizer)
    with torch.no_grad():
        for adapter in (COMPRESSOR, GENERATOR):
            model.use_adapter(adapter)
            expected = model.peft(input_ids=ids).logits[..., :vocabulary]
            loaded = PeftModel.from_pretrained(tiny_base(architecture, tokenizer),
                                               str(tmp_path / adapter))
            torch.testing.assert_close(loaded(input_ids=ids).logits, expected)


def test_load_clara_restores_the_same_model(tmp_path, architecture):
    model = trained(architecture)
    save_clara(model, tmp_path)
    tokenizer = char_tokenizer()
    base = tiny_base(architecture, tokenizer)
    torch.randn(11)  # a different random state must not matter
    again = load_clara(base, tokenizer, tmp_path)
    assert again.memory == model.memory
    assert torch.equal(again.memory_embeddings, model.memory_embeddings)
    assert again.compressor_fingerprint() == model.compressor_fingerprint()
    assert again.trainable_adapters == (COMPRESSOR, GENERATOR)
    with torch.no_grad():
        expected = model(stage_one(model), mse_weight=0.1)
        restored = again(stage_one(again), mse_weight=0.1)
    torch.testing.assert_close(restored.total, expected.total)
    assert restored.mse.item() > 0


def test_load_clara_can_start_a_fresh_generator(tmp_path):
    model = trained("llama")
    save_clara(model, tmp_path)
    tokenizer = char_tokenizer()
    again = load_clara(tiny_base("llama", tokenizer), tokenizer, tmp_path, adapters=(COMPRESSOR,))
    assert again.compressor_fingerprint() == model.compressor_fingerprint()
    generator_b = [p for n, p in again.peft.named_parameters() if f"lora_B.{GENERATOR}." in n]
    assert generator_b and all(torch.count_nonzero(p) == 0 for p in generator_b)


def test_load_clara_refuses_missing_pieces(tmp_path):
    model = trained("llama")
    tokenizer = char_tokenizer()
    with pytest.raises(FileNotFoundError, match="not a saved CLaRa model"):
        load_clara(tiny_base("llama", tokenizer), tokenizer, tmp_path)
    save_clara(model, tmp_path, adapters=(COMPRESSOR,))
    with pytest.raises(FileNotFoundError, match="generator"):
        load_clara(tiny_base("llama", tokenizer), tokenizer, tmp_path)
    with pytest.raises(ValueError, match="unknown adapters"):
        save_clara(model, tmp_path, adapters=("decoder",))
