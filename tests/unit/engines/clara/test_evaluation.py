"""Held-out QA under the three conditions: the baselines really run the base model without
adapters, and the compressed condition reads the store this model's compressor wrote."""

from __future__ import annotations

import pytest
import torch
from tests.unit.engines.clara.tiny import build_clara, perturb

from mendel.engines.clara import (
    ADAPTERS,
    COMPRESSOR,
    GENERATOR,
    QAExample,
    StoreMismatchError,
    compress_corpus,
    corpus_of,
    document_id,
    evaluate_qa,
    greedy_ids,
    text_prompt,
)

EXAMPLES = [QAExample("Who ran?", ("Ada ran.",), ("Ada",)),
            QAExample("Who sang?", ("Bob sang.", "Ada ran."), ("Bob", "Bo"))]


def sharpened(seed: int = 0):
    model = build_clara(seed=seed)
    with torch.no_grad():  # the random head barely prefers any token: give it a preference
        model.backbone.get_output_embeddings().weight.mul_(25.0)
    return model


def test_no_adapter_decodes_as_the_base_model_whatever_the_adapters_hold():
    model = sharpened()
    prompt = text_prompt("Who ran?", ["Ada ran."])
    plain = greedy_ids(model, prompt, [], max_new_tokens=8, adapter=None)
    for adapter in ADAPTERS:
        perturb(model, adapter, seed=3, scale=2.0)
    adapted = greedy_ids(model, prompt, [], max_new_tokens=8, adapter=GENERATOR)
    assert greedy_ids(model, prompt, [], max_new_tokens=8, adapter=None) == plain
    assert adapted != plain  # the adapters do change the answer: the check above can fail
    assert model.active_adapter in ADAPTERS  # the context left PEFT usable


def test_text_prompt_puts_the_documents_where_the_slots_would_be():
    assert text_prompt("q?", ["d1", "d2"]) == "Background:\nd1\nd2\n\nQuestion: q?\nAnswer:"
    assert text_prompt("q?", []) == "Question: q?\nAnswer:"


def test_corpus_of_keeps_each_document_once():
    corpus = corpus_of(EXAMPLES)
    assert [d["text"] for d in corpus] == ["Ada ran.", "Bob sang."]
    assert corpus[0]["id"] == document_id("Ada ran.")


def test_evaluate_scores_every_condition_and_keeps_samples(tmp_path):
    model = sharpened()
    perturb(model, COMPRESSOR, 1)
    store = compress_corpus(model, corpus_of(EXAMPLES), tmp_path / "store")
    seen = []
    report = evaluate_qa(model, EXAMPLES, store, max_new_tokens=4, keep_samples=1,
                         on_example=lambda done, total: seen.append((done, total)))
    assert set(report.scores) == {"compressed", "raw_text", "no_context"}
    assert all(score.count == 2 for score in report.scores.values())
    assert seen == [(1, 2), (2, 2)]
    (sample,) = report.samples
    assert sample["question"] == "Who ran?" and set(sample) >= {"compressed", "raw_text"}
    assert report.to_json()["scores"]["raw_text"]["count"] == 2


def test_evaluate_refuses_a_store_of_another_compressor(tmp_path):
    model = sharpened()
    store = compress_corpus(model, corpus_of(EXAMPLES), tmp_path / "store")
    perturb(model, COMPRESSOR, 7)
    with pytest.raises(StoreMismatchError):
        evaluate_qa(model, EXAMPLES, store, max_new_tokens=2)
    with pytest.raises(ValueError, match="unknown conditions \\['oracle'\\]"):
        evaluate_qa(model, EXAMPLES, store, conditions=("oracle",))
