"""Stage II on the tiny models: candidates are encoded once and then served by the cache,
only the query reasoner and the generator get gradients, the loss is the generator CE on the
hard selection, and Recall@k counts the chosen positives."""

from __future__ import annotations

import pytest
import torch
from tests.unit.engines.clara.tiny import build_clara, perturb

from mendel.engines.clara import (
    COMPRESSOR,
    GENERATOR,
    QUERY_REASONER,
    CandidateCache,
    GeneratorExample,
    answer_cross_entropy,
    cosine_scores,
)
from mendel.engines.clara.stage_two import (
    StageTwoExample,
    prepare_stage_two,
    recall_at_k,
    stage_two_loss,
    stage_two_prompt,
)

DOCUMENTS = ("Ada wrote a program.", "Tea is hot.", "Moths fly at night.",
             "Grace found a bug in the relay of the Mark II computer, long ago.", "Rain.")
EXAMPLES = [
    StageTwoExample("Who wrote a program?", DOCUMENTS, " Ada", positives=(0,)),
    StageTwoExample("What flies?", DOCUMENTS[::-1], " moths", positives=(1, 2)),
]


class CompressorForwards:
    """Counts forwards that run the compressor, via a hook on one of its LoRA layers (PEFT
    calls only the active adapter's layers)."""

    def __init__(self, model):
        self.calls = 0
        name, layer = next((n, m) for n, m in model.peft.named_modules()
                           if n.endswith(f"lora_A.{COMPRESSOR}"))
        layer.register_forward_hook(self._seen)

    def _seen(self, module, inputs, output):
        self.calls += 1


def staged(architecture="llama"):
    model = build_clara(architecture)
    perturb(model, COMPRESSOR, 1)
    perturb(model, GENERATOR, 2)
    prepare_stage_two(model)
    return model


def test_prepare_copies_the_compressor_and_freezes_it_with_the_memory_rows():
    model = staged()
    compressor = model.adapter_parameters(COMPRESSOR)
    reasoner = model.adapter_parameters(QUERY_REASONER)
    assert all(torch.equal(a, b) for a, b in zip(compressor, reasoner, strict=True))
    assert model.trainable_adapters == (QUERY_REASONER, GENERATOR)
    assert not model.memory_embeddings.requires_grad
    assert not any(p.requires_grad for p in compressor)
    perturb(model, QUERY_REASONER, 3)
    trained = [p.detach().clone() for p in model.adapter_parameters(QUERY_REASONER)]
    prepare_stage_two(model)  # a resumed stage keeps its trained query reasoner
    assert all(torch.equal(a, b) for a, b in
               zip(trained, model.adapter_parameters(QUERY_REASONER), strict=True))


def test_candidates_are_encoded_once_while_reencode_encodes_every_call(architecture):
    model = staged(architecture)
    counter = CompressorForwards(model)
    cache = CandidateCache()
    fingerprint = model.compressor_fingerprint()
    first = stage_two_loss(model, EXAMPLES, cache, top_k=2, tau=0.02, fingerprint=fingerprint)
    assert counter.calls == 1
    second = stage_two_loss(model, EXAMPLES, cache, top_k=2, tau=0.02, fingerprint=fingerprint)
    assert counter.calls == 1
    assert cache.stats.hits > 0
    torch.testing.assert_close(second.cross_entropy, first.cross_entropy)
    for expected in (2, 3):
        again = stage_two_loss(model, EXAMPLES, cache, top_k=2, tau=0.02, reencode=True)
        assert counter.calls == expected
        torch.testing.assert_close(again.cross_entropy, first.cross_entropy,
                                   atol=1e-5, rtol=1e-5)
        assert torch.equal(again.selected, first.selected)


def grads(parameters):
    return [p.grad for p in parameters]


def test_gradients_reach_only_the_query_reasoner_and_the_generator(architecture):
    model = staged(architecture)
    loss = stage_two_loss(model, EXAMPLES, CandidateCache(), top_k=2, tau=1.0)
    loss.cross_entropy.backward()
    for name in (QUERY_REASONER, GENERATOR):
        assert any(g is not None and bool(g.any()) for g in
                   grads(model.adapter_parameters(name))), name
    assert all(g is None for g in grads(model.adapter_parameters(COMPRESSOR)))
    assert model.memory_embeddings.grad is None


def test_the_query_reasoner_learns_only_through_the_soft_selection():
    """With the generator's memories fixed by a frozen compressor, the query reasoner's
    gradient comes from the straight-through path alone; at the reference tau it is small
    but not zero."""
    model = staged()
    stage_two_loss(model, EXAMPLES, CandidateCache(), top_k=2, tau=0.02).cross_entropy.backward()
    norm = torch.stack([g.norm() for g in grads(model.adapter_parameters(QUERY_REASONER))
                        if g is not None]).norm()
    assert norm > 0


def manual_loss(model, examples, top_k):
    """The hard selection computed by hand, the generator CE over exactly those memories."""
    blocks, rows = [], []
    with torch.no_grad():
        for example in examples:
            query = model.encode(model.collator.query_batch([example.question]),
                                 QUERY_REASONER).memory.reshape(1, -1)
            memories = []
            for doc in example.documents:
                chunks = model.collator.document_chunks(doc)
                memories.append(model.encode(model.collator.encoder_batch(chunks),
                                             COMPRESSOR).memory)
            vectors = torch.stack([m.mean(dim=0).reshape(-1) for m in memories])
            order = cosine_scores(query, vectors.unsqueeze(0))[0].argsort(descending=True)
            chosen = order[:top_k].tolist()
            blocks += [memories[i].reshape(-1, model.hidden_size) for i in chosen]
            rows.append(GeneratorExample(stage_two_prompt(example.question, top_k),
                                         tuple(memories[i].shape[0] * model.memory.count
                                               for i in chosen), example.answer))
        batch = model.collator.generator_batch(rows)
        logits, labels = model.generator_logits(batch, torch.cat(blocks), GENERATOR)
        return answer_cross_entropy(logits, labels), chosen


def test_loss_equals_the_generator_ce_on_the_hard_selection(architecture):
    model = staged(architecture)
    assert len(model.collator.document_chunks(DOCUMENTS[3])) > 1  # a multi-chunk candidate
    for top_k in (1, 3):
        loss = stage_two_loss(model, EXAMPLES, CandidateCache(), top_k=top_k, tau=0.02)
        expected, last_chosen = manual_loss(model, EXAMPLES, top_k)
        torch.testing.assert_close(loss.cross_entropy.detach(), expected, atol=1e-5, rtol=1e-5)
        assert loss.selected[-1].tolist() == last_chosen


def test_recall_at_k_counts_the_selected_positives():
    assert recall_at_k([[0, 3], [1, 4], [2, 0]], [(0,), (1, 2), None]) == pytest.approx(0.75)
    assert recall_at_k([[0]], [None]) is None


def test_recall_is_reported_against_the_positives_of_the_real_selection():
    model = staged()
    loss = stage_two_loss(model, EXAMPLES, CandidateCache(), top_k=2, tau=0.02)
    hits = [len(set(chosen) & set(e.positives)) / len(e.positives)
            for chosen, e in zip(loss.selected.tolist(), EXAMPLES, strict=True)]
    assert loss.recall == pytest.approx(sum(hits) / 2)
    everything = [StageTwoExample(e.question, e.documents, e.answer,
                                  tuple(loss.selected[i].tolist())) for i, e in enumerate(EXAMPLES)]
    assert stage_two_loss(model, everything, CandidateCache(), top_k=2, tau=0.02).recall == 1.0
    unknown = [StageTwoExample(e.question, e.documents, e.answer) for e in EXAMPLES]
    assert stage_two_loss(model, unknown, CandidateCache(), top_k=2, tau=0.02).recall is None


def test_records_and_their_errors():
    example = StageTwoExample.from_record(
        {"question": "q", "docs": ["a", "b"], "answer": "x", "pos_index": [1]})
    assert example == StageTwoExample("q", ("a", "b"), "x", (1,))
    assert StageTwoExample.from_record({"question": "q", "docs": ["a"], "answer": "x",
                                        "pos_index": 0}).positives == (0,)
    with pytest.raises(ValueError, match="out of range"):
        StageTwoExample("q", ("a",), "x", (1,))
    with pytest.raises(ValueError, match="cannot select 3"):
        stage_two_loss(staged(), [StageTwoExample("q", ("a", "b"), "x")], CandidateCache(),
                       top_k=3, tau=0.02)
