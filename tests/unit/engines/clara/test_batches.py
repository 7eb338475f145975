"""Memory tokens, chunking, pad-to-longest and explicit labels, on the character tokenizer
(one token per character, so lengths are easy to read)."""

from __future__ import annotations

import pytest
import torch
from tests.support.tiny_models import char_tokenizer

from mendel.api.compressor import CompressorTrainingSpec
from mendel.engines.clara import (
    IGNORE_INDEX,
    MEMORY_SLOT,
    ClaraCollator,
    ClaraSettings,
    GeneratorExample,
    StageOneExample,
    add_memory_tokens,
    chunk_ids,
    memory_token_names,
)

CHUNK = 16
MEMORY = 4


@pytest.fixture
def collator() -> ClaraCollator:
    tokenizer = char_tokenizer()
    memory = add_memory_tokens(tokenizer, memory_token_names(MEMORY))
    return ClaraCollator(tokenizer, memory, CHUNK)


def test_chunk_ids_splits_without_dropping_anything():
    ids = list(range(37))
    chunks = chunk_ids(ids, 16)
    assert [len(c) for c in chunks] == [16, 16, 5]
    assert sum(chunks, []) == ids
    assert chunk_ids([], 16) == [[]]
    with pytest.raises(ValueError, match="positive"):
        chunk_ids(ids, 0)


def test_add_memory_tokens_gives_consecutive_unsplit_tokens_and_is_idempotent():
    tokenizer = char_tokenizer()
    size = len(tokenizer)
    memory = add_memory_tokens(tokenizer, memory_token_names(3))
    assert memory.names == ("<MEM0>", "<MEM1>", "<MEM2>")
    assert memory.ids == [size, size + 1, size + 2]
    assert tokenizer("a<MEM1>b", add_special_tokens=False)["input_ids"][1] == size + 1
    assert add_memory_tokens(tokenizer, memory_token_names(3)) == memory
    assert len(tokenizer) == size + 3


def test_settings_count_memory_tokens_per_chunk_as_the_api_does():
    spec = CompressorTrainingSpec.model_validate({
        "baseModel": {"uri": "/models/base"},
        "compression": {"rate": 16, "docMaxTokens": 512},
        "stages": {"pretraining": {"dataset": {"uri": "/data/s1.jsonl"}, "learningRate": 1e-4,
                                   "batchSize": 8}},
    })
    settings = ClaraSettings.from_spec(spec)
    assert settings.memory_tokens == spec.compression.memory_tokens == 32
    assert ClaraSettings().memory_tokens == 8  # 256 // 32, the paper's default
    assert ClaraSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="no memory token"):
        ClaraSettings(compression_rate=32, chunk_size=16)


def test_long_document_becomes_several_chunks_with_nothing_truncated(collator):
    document = "The quick brown fox jumps over the lazy dog twice."  # 50 characters
    batch = collator.stage_one_batch([StageOneExample(f"B: {MEMORY_SLOT} Q?", (document,), "a")])
    assert batch.chunks_per_document == (4,)
    encoder = batch.encoder
    assert encoder.input_ids.shape[0] == 4
    kept = encoder.input_ids[encoder.document_mask].tolist()
    assert kept == collator.tokenize(document)
    assert int(batch.generator.slot_mask.sum()) == 4 * MEMORY


def test_encoder_batch_pads_on_the_left_to_the_longest_row(collator):
    batch = collator.encoder_batch([[10, 11, 12], [20, 21, 22, 23, 24, 25]])
    memory = collator.memory.ids
    assert batch.input_ids.shape == (2, 6 + MEMORY)  # longest + memory, not CHUNK + memory
    assert batch.input_ids[:, -MEMORY:].tolist() == [memory, memory]
    assert batch.input_ids[0].tolist() == [collator.pad_id] * 3 + [10, 11, 12] + memory
    assert batch.attention_mask[0].tolist() == [0] * 3 + [1] * (3 + MEMORY)
    assert batch.position_ids[0, 3:].tolist() == list(range(3 + MEMORY))
    assert batch.document_mask[0].tolist() == [False] * 3 + [True] * 3 + [False] * MEMORY
    assert batch.document_mask[1].sum().item() == 6


def test_generator_batch_labels_only_the_answer_and_marks_the_slots(collator):
    examples = [GeneratorExample(f"ab{MEMORY_SLOT}c", (MEMORY,), "xy"),
                GeneratorExample(f"{MEMORY_SLOT}-{MEMORY_SLOT}", (2, 3), "long answer")]
    batch = collator.generator_batch(examples)
    eos = collator.eos_id
    first_len = 2 + MEMORY + 1 + 2 + 1
    second_len = 2 + 1 + 3 + 11 + 1
    width = max(first_len, second_len)
    assert batch.input_ids.shape == (2, width)
    assert batch.answer_width == 12
    row = batch.labels[0].tolist()
    assert row[:-3] == [IGNORE_INDEX] * (width - 3)
    assert row[-3:] == [*collator.tokenize("xy"), eos]
    assert (batch.labels[1] != IGNORE_INDEX).sum().item() == 12
    assert batch.slot_mask.sum(dim=1).tolist() == [MEMORY, 5]
    slots = batch.slot_mask[0, width - first_len:].tolist()
    assert slots == [False] * 2 + [True] * MEMORY + [False] * 4
    assert batch.attention_mask[0].sum().item() == first_len


def test_generator_batch_without_answers_has_no_labels(collator):
    batch = collator.generator_batch([GeneratorExample(f"q {MEMORY_SLOT}", (MEMORY,))])
    assert batch.answer_width == 0
    assert torch.all(batch.labels == IGNORE_INDEX)


def test_generator_batch_refuses_a_slot_count_mismatch(collator):
    with pytest.raises(ValueError, match="1 memory slots but 2 memory blocks"):
        collator.generator_batch([GeneratorExample(f"q {MEMORY_SLOT}", (4, 4), "a")])
