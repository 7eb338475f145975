"""Greedy answering from memory states on the tiny models: the first token is the argmax of
`generator_logits`, the cached loop equals a full recompute, and decoding stops at the stop
token or at the token budget."""

from __future__ import annotations

import pytest
import torch
from tests.unit.engines.clara.tiny import build_clara, perturb

from mendel.engines.clara import COMPRESSOR, GENERATOR, MEMORY_SLOT, GeneratorExample
from mendel.engines.clara.inference import (
    DEFAULT_PROMPT,
    answer,
    answer_from_store,
    build_prompt,
    greedy_ids,
)
from mendel.engines.clara.store import StoreMismatchError, compress_corpus

CORPUS = [{"id": "ada", "text": "Ada Lovelace wrote the first program."},
          {"id": "tea", "text": "Tea."}]
QUESTION = "Who wrote it?"


def ready(architecture="llama"):
    model = build_clara(architecture)
    perturb(model, COMPRESSOR, 1)
    perturb(model, GENERATOR, 2, scale=0.5)
    return model


def memories_of(model, documents=CORPUS):
    blocks = []
    for document in documents:
        chunks = model.collator.document_chunks(document["text"])
        with torch.no_grad():
            blocks.append(model.encode(model.collator.encoder_batch(chunks), COMPRESSOR).memory)
    return blocks


def full_recompute(model, prompt, memories, steps):
    """Greedy decoding without a cache: the whole sequence through generator_logits."""
    sizes = tuple(int(m.shape[0] * m.shape[1]) for m in memories)
    states = torch.cat([m.reshape(-1, model.hidden_size) for m in memories])
    batch = model.collator.generator_batch([GeneratorExample(prompt, sizes)])
    ids = []
    for _ in range(steps):
        extended = batch.__class__(
            torch.cat([batch.input_ids, torch.tensor([ids], dtype=torch.long)], dim=1),
            torch.ones(1, batch.input_ids.shape[1] + len(ids), dtype=torch.long),
            torch.arange(batch.input_ids.shape[1] + len(ids)).unsqueeze(0),
            torch.cat([batch.slot_mask, torch.zeros(1, len(ids), dtype=torch.bool)], dim=1),
            torch.full((1, batch.input_ids.shape[1] + len(ids)), -100), 0)
        with torch.no_grad():
            logits, _ = model.generator_logits(extended, states, GENERATOR)
        ids.append(int(logits[0, -1].argmax()))
    return ids


def test_first_token_is_the_argmax_of_generator_logits(architecture):
    model = ready(architecture)
    memories = memories_of(model)
    prompt = build_prompt(QUESTION, len(memories))
    batch = model.collator.generator_batch([GeneratorExample(prompt, (12, 4))])
    with torch.no_grad():
        logits, _ = model.generator_logits(
            batch, torch.cat([m.reshape(-1, model.hidden_size) for m in memories]))
    first = greedy_ids(model, prompt, memories, max_new_tokens=1, stop_token_ids=())
    assert first == [int(logits[0, -1].argmax())]


def test_cached_greedy_loop_equals_a_full_recompute(architecture):
    model = ready(architecture)
    memories = memories_of(model)
    prompt = build_prompt(QUESTION, len(memories))
    ids = greedy_ids(model, prompt, memories, max_new_tokens=6, stop_token_ids=())
    assert ids == full_recompute(model, prompt, memories, 6)


def test_answer_is_deterministic_and_depends_on_the_memories():
    model = ready()
    memories = memories_of(model)
    first = answer(model, QUESTION, memories, max_new_tokens=8, stop_token_ids=())
    assert answer(model, QUESTION, memories, max_new_tokens=8, stop_token_ids=()) == first
    assert len(first) > 0
    ids = greedy_ids(model, build_prompt(QUESTION, 2), memories, max_new_tokens=8,
                     stop_token_ids=())
    shuffled = greedy_ids(model, build_prompt(QUESTION, 2), [m * -3 for m in memories],
                          max_new_tokens=8, stop_token_ids=())
    assert ids != shuffled


def test_greedy_loop_stops_at_the_stop_token_and_at_the_budget():
    model = ready()
    memories = memories_of(model)
    prompt = build_prompt(QUESTION, len(memories))
    free = greedy_ids(model, prompt, memories, max_new_tokens=5, stop_token_ids=())
    assert len(free) == 5
    assert greedy_ids(model, prompt, memories, max_new_tokens=5,
                      stop_token_ids=[free[0]]) == []
    stopped = greedy_ids(model, prompt, memories, max_new_tokens=5, stop_token_ids=[free[2]])
    assert stopped == free[:free.index(free[2])]
    assert greedy_ids(model, prompt, memories, max_new_tokens=0) == []


def test_default_stop_is_the_tokenizers_end_of_sequence():
    model = ready()
    memories = memories_of(model)
    prompt = build_prompt(QUESTION, len(memories))
    eos = model.collator.eos_id
    head = model.backbone.get_output_embeddings()

    def favour_eos(module, inputs, output):
        output = output.clone()
        output[..., eos] += 1e4
        return output

    head.register_forward_hook(favour_eos)
    free = greedy_ids(model, prompt, memories, max_new_tokens=3, stop_token_ids=())
    if free[0] != eos:
        pytest.fail(f"the rigged head did not make eos the argmax: {free}")
    assert greedy_ids(model, prompt, memories, max_new_tokens=3) == []


def test_greedy_ids_restores_training_mode():
    model = ready()
    model.train()
    greedy_ids(model, build_prompt(QUESTION, 2), memories_of(model), max_new_tokens=1)
    assert model.training


def test_answer_from_store_matches_answer_and_refuses_another_compressor(tmp_path):
    model = ready()
    store = compress_corpus(model, CORPUS, tmp_path)
    stored = answer_from_store(model, store, QUESTION, ["ada", "tea"], max_new_tokens=6,
                               stop_token_ids=())
    assert stored == answer(model, QUESTION, memories_of(model), max_new_tokens=6,
                            stop_token_ids=())
    perturb(model, COMPRESSOR, 9)
    with pytest.raises(StoreMismatchError, match="cannot be mixed"):
        answer_from_store(model, store, QUESTION, ["ada"], max_new_tokens=2)


def test_build_prompt_places_one_slot_per_document():
    prompt = build_prompt("Why?", 3)
    assert prompt.count(MEMORY_SLOT) == 3
    assert prompt == DEFAULT_PROMPT.format(documents="\n".join([MEMORY_SLOT] * 3),
                                           question="Why?")
    assert build_prompt("Q", 1, "{documents} | {question}") == f"{MEMORY_SLOT} | Q"
    with pytest.raises(ValueError, match="placeholder"):
        build_prompt("Q", 1, "no slots {question}")


def test_greedy_ids_refuses_memories_of_another_width():
    model = ready()
    with pytest.raises(ValueError, match="width"):
        greedy_ids(model, build_prompt(QUESTION, 1), [torch.zeros(1, 4, 7)], max_new_tokens=1)
