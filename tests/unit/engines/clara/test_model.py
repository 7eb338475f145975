"""ClaraModel on two tiny architectures: trainable memory rows, adapter switching, the MSE
term, chunked documents, padding invariance and the stage-II gradient path."""

from __future__ import annotations

import pytest
import torch
from tests.unit.engines.clara.tiny import DOCUMENTS, build_clara, perturb, stage_one

from mendel.engines.clara import (
    COMPRESSOR,
    GENERATOR,
    MEMORY_SLOT,
    QUERY_REASONER,
    GeneratorExample,
    answer_cross_entropy,
    cosine_scores,
    select_memories,
    straight_through_topk,
)


def lora_grads(model, adapter):
    return [p.grad for p in model.adapter_parameters(adapter)]


def has_gradient(grads):
    return any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_only_the_memory_rows_and_trainable_adapters_change_in_a_step(architecture):
    model = build_clara(architecture)
    before = {n: p.detach().clone() for n, p in model.peft.named_parameters()}
    rows = model.memory_embeddings.detach().clone()
    optimizer = torch.optim.AdamW(model.parameter_groups(weight_decay=0.1), lr=1e-2)
    model(stage_one(model), mse_weight=0.1).total.backward()
    optimizer.step()
    vocabulary = model.backbone.get_input_embeddings().weight
    assert all(p is not vocabulary for g in optimizer.param_groups for p in g["params"])
    changed = {n for n, p in model.peft.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all("lora_" in n for n in changed), sorted(changed)[:3]
    assert {n.split(".")[-2] for n in changed} == {COMPRESSOR, GENERATOR}
    assert not torch.equal(model.memory_embeddings, rows)
    assert (model.memory_embeddings != rows).any(dim=1).all()  # every memory row moved
    ids = torch.tensor([model.memory.ids + [5, 6]])
    embedded = model.embed(ids)[0]
    assert torch.equal(embedded[:-2], model.memory_embeddings.detach())
    assert torch.equal(embedded[-2:], vocabulary[[5, 6]])


def test_parameter_groups_keep_memory_rows_out_of_weight_decay():
    model = build_clara()
    groups = {g["name"]: g for g in model.parameter_groups(weight_decay=0.05)}
    assert groups["adapters"]["weight_decay"] == 0.05
    assert groups["memory_tokens"] == {"name": "memory_tokens",
                                       "params": [model.memory_embeddings], "weight_decay": 0.0}
    expected = {id(p) for a in (COMPRESSOR, GENERATOR) for p in model.adapter_parameters(a)}
    assert {id(p) for p in groups["adapters"]["params"]} == expected
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == expected | {id(model.memory_embeddings)}


def test_mse_weight_enters_the_loss_and_its_gradient_reaches_only_the_compressor(architecture):
    model = build_clara(architecture)
    batch = stage_one(model)
    plain = model(batch, mse_weight=0.0)
    weighted = model(batch, mse_weight=2.0)
    assert plain.mse.item() > 0
    torch.testing.assert_close(weighted.total, plain.cross_entropy + 2.0 * plain.mse)
    weighted.mse.backward()
    assert has_gradient(lora_grads(model, COMPRESSOR))
    assert model.memory_embeddings.grad is not None
    assert float(model.memory_embeddings.grad.abs().sum()) > 0
    assert not has_gradient(lora_grads(model, GENERATOR))


def test_cross_entropy_trains_both_compressor_and_generator(architecture):
    model = build_clara(architecture)
    model(stage_one(model), mse_weight=0.0).total.backward()
    assert has_gradient(lora_grads(model, COMPRESSOR)), "compressor gradient was dropped"
    assert has_gradient(lora_grads(model, GENERATOR))
    assert all(g is None for g in lora_grads(model, QUERY_REASONER))


def test_each_forward_runs_with_the_adapter_it_names(architecture):
    model = build_clara(architecture)
    for seed, adapter in enumerate((COMPRESSOR, GENERATOR, QUERY_REASONER)):
        perturb(model, adapter, seed)
    batch = model.collator.encoder_batch([model.collator.tokenize(DOCUMENTS[0])])
    states = {}
    with torch.no_grad():
        for adapter in (COMPRESSOR, GENERATOR, QUERY_REASONER):
            states[adapter] = model.encode(batch, adapter).memory
            assert model.active_adapter == adapter
        again = model.encode(batch, COMPRESSOR).memory
    assert torch.equal(again, states[COMPRESSOR])
    assert not torch.allclose(states[COMPRESSOR], states[GENERATOR])
    assert not torch.allclose(states[COMPRESSOR], states[QUERY_REASONER])
    with pytest.raises(ValueError, match="unknown adapter"):
        model.use_adapter("decoder")


def test_memory_states_do_not_depend_on_batch_padding(architecture):
    model = build_clara(architecture)
    perturb(model, COMPRESSOR, 0)
    short, long = (model.collator.tokenize(d) for d in ("Tea.", DOCUMENTS[0][:16]))
    with torch.no_grad():
        alone = model.encode(model.collator.encoder_batch([short]))
        padded = model.encode(model.collator.encoder_batch([long, short]))
    torch.testing.assert_close(padded.memory[1], alone.memory[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.document_mean[1], alone.document_mean[0],
                               atol=1e-5, rtol=1e-5)


def test_a_long_document_fills_one_memory_block_per_chunk_in_order(architecture):
    model = build_clara(architecture)
    document = "x" * 10 + DOCUMENTS[0]  # 47 characters: chunks of 16, 16, 15
    batch = stage_one(model, (document,))
    assert batch.chunks_per_document == (3,)
    encoded = model.encode(batch.encoder)
    states = encoded.memory.reshape(-1, model.hidden_size)
    assert states.shape[0] == 3 * model.memory.count
    embeds = model.splice_memory(batch.generator, states)
    assert torch.equal(embeds[batch.generator.slot_mask], states)
    outside = ~batch.generator.slot_mask
    assert torch.equal(embeds[outside], model.embed(batch.generator.input_ids)[outside])
    assert torch.isfinite(model(batch, mse_weight=0.1).total)


def test_answer_logits_give_the_same_loss_as_full_logits(architecture):
    model = build_clara(architecture)
    perturb(model, GENERATOR, 3)
    batch = stage_one(model)
    with torch.no_grad():
        states = model.encode(batch.encoder).memory.reshape(-1, model.hidden_size)
        logits, labels = model.generator_logits(batch.generator, states)
        full = model.peft(inputs_embeds=model.splice_memory(batch.generator, states),
                          attention_mask=batch.generator.attention_mask,
                          position_ids=batch.generator.position_ids).logits
    assert logits.shape[1] == batch.generator.answer_width + 1 < full.shape[1]
    torch.testing.assert_close(answer_cross_entropy(logits, labels),
                               answer_cross_entropy(full, batch.generator.labels))


def test_stage_two_trains_query_reasoner_through_the_top_k_but_not_the_compressor():
    model = build_clara()
    model.copy_adapter(COMPRESSOR, QUERY_REASONER)
    model.set_trainable((QUERY_REASONER, GENERATOR), memory_tokens=False)
    assert [g["name"] for g in model.parameter_groups(0.0)] == ["adapters"]
    perturb(model, GENERATOR, 4)
    collator = model.collator
    candidates = [collator.tokenize(d) for d in ("Paris is in France.", "Rome.", "Oslo, Norway.")]
    with torch.no_grad():  # the cached candidates: compressed once by the frozen compressor
        cached = model.encode(collator.encoder_batch(candidates), COMPRESSOR).memory
    query = model.encode(collator.query_batch(["Where is Paris?"]), QUERY_REASONER).memory
    flat = cached.reshape(1, 3, -1)
    selection = straight_through_topk(cosine_scores(query.reshape(1, -1), flat), k=2, tau=0.02)
    chosen = select_memories(selection, flat).reshape(-1, model.hidden_size)
    count = model.memory.count
    prompt = GeneratorExample(f"{MEMORY_SLOT}{MEMORY_SLOT} Where is Paris?", (count, count),
                              " France")
    logits, labels = model.generator_logits(collator.generator_batch([prompt]), chosen)
    answer_cross_entropy(logits, labels).backward()
    assert has_gradient(lora_grads(model, QUERY_REASONER)), "no gradient through the top-k"
    assert has_gradient(lora_grads(model, GENERATOR))
    assert all(g is None for g in lora_grads(model, COMPRESSOR))
    assert model.memory_embeddings.grad is None


def test_copy_adapter_starts_the_query_reasoner_as_the_compressor():
    model = build_clara()
    perturb(model, COMPRESSOR, 5)
    model.copy_adapter(COMPRESSOR, QUERY_REASONER)
    batch = model.collator.query_batch(["Where is Paris?"])
    with torch.no_grad():
        compressed = model.encode(batch, COMPRESSOR).memory
        torch.testing.assert_close(model.encode(batch, QUERY_REASONER).memory, compressed,
                                   atol=0.0, rtol=0.0)
        perturb(model, QUERY_REASONER, 6)
        assert torch.equal(model.encode(batch, COMPRESSOR).memory, compressed)


def test_compressor_fingerprint_follows_compressor_and_memory_rows_only():
    model = build_clara()
    first = model.compressor_fingerprint()
    perturb(model, GENERATOR, 7)
    assert model.compressor_fingerprint() == first
    perturb(model, COMPRESSOR, 8)
    second = model.compressor_fingerprint()
    assert second != first
    with torch.no_grad():
        model.memory_embeddings[0, 0] += 1.0
    assert model.compressor_fingerprint() != second


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    plain, checkpointed = build_clara(seed=9), build_clara(seed=9)
    checkpointed.enable_gradient_checkpointing()
    results = []
    for model in (plain, checkpointed):
        model.train()
        loss = model(stage_one(model), mse_weight=0.1).total
        loss.backward()
        results.append((loss.detach(), model.memory_embeddings.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_a_bfloat16_backbone_keeps_trainable_weights_in_float32(architecture):
    model = build_clara(architecture, dtype=torch.bfloat16)
    assert model.memory_embeddings.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.adapter_parameters(COMPRESSOR))
    loss = model(stage_one(model), mse_weight=0.1)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert model.memory_embeddings.grad is not None
    assert model.memory_embeddings.grad.dtype == torch.float32
    assert has_gradient(lora_grads(model, COMPRESSOR))
