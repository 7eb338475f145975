"""CompressedStore on the tiny models: stored states equal a direct encode, long documents
keep every chunk, a rerun resumes, and another compressor or backbone is refused."""

from __future__ import annotations

import json

import pytest
import torch
from tests.unit.engines.clara.tiny import build_clara, perturb

from mendel.engines.clara import COMPRESSOR, GENERATOR
from mendel.engines.clara.store import (
    MANIFEST_FILE,
    CompressedStore,
    StoreMismatchError,
    compress_corpus,
)

CORPUS = [
    {"id": "ada", "text": "Ada Lovelace wrote the first program."},
    {"id": "tea", "text": "Tea."},
    {"id": "moth", "text": "Grace Hopper found a moth in the relay."},
]


def direct_encode(model, text):
    chunks = model.collator.document_chunks(text)
    with torch.no_grad():
        return model.encode(model.collator.encoder_batch(chunks), COMPRESSOR).memory


def trained(architecture="llama"):
    model = build_clara(architecture)
    perturb(model, COMPRESSOR, 1)
    return model


def test_store_round_trip_equals_a_direct_encode(tmp_path, architecture):
    model = trained(architecture)
    store = compress_corpus(model, CORPUS, tmp_path, batch_size=3)
    assert store.document_ids == ["ada", "tea", "moth"]
    loaded = store.load(["moth", "ada", "tea"])
    for document_id, states in zip(["moth", "ada", "tea"], loaded, strict=True):
        text = next(d["text"] for d in CORPUS if d["id"] == document_id)
        expected = direct_encode(model, text)
        assert states.shape == (store.chunk_count(document_id), model.memory.count,
                                model.hidden_size)
        torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-5)


def test_store_splits_long_documents_and_writes_shards_of_whole_documents(tmp_path):
    model = trained()
    store = compress_corpus(model, CORPUS, tmp_path, batch_size=3)
    expected = {d["id"]: len(model.collator.document_chunks(d["text"])) for d in CORPUS}
    assert expected["ada"] == 3 and expected["moth"] == 3  # 37 and 39 characters, chunks of 16
    assert {i: store.chunk_count(i) for i in store.document_ids} == expected
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    shards = [entry["shard"] for entry in manifest["documents"]]
    assert shards == ["shards/shard-00000.safetensors", "shards/shard-00001.safetensors",
                      "shards/shard-00002.safetensors"]
    assert manifest["compressor_fingerprint"] == model.compressor_fingerprint()
    assert manifest["settings"] == model.settings.to_json()
    assert manifest["model"]["model_type"] == "llama"
    assert not list(tmp_path.rglob("*.partial"))


def test_store_rerun_resumes_and_appends_only_new_documents(tmp_path):
    model = trained()
    compress_corpus(model, CORPUS[:2], tmp_path)
    calls = []
    model.backbone.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: calls.append(int(inputs[0].shape[0])))
    store = compress_corpus(model, CORPUS, tmp_path)
    assert calls == [len(model.collator.document_chunks(CORPUS[2]["text"]))]
    assert store.document_ids == ["ada", "tea", "moth"]
    assert len(store) == 3 and "tea" in store


def test_store_refuses_to_append_with_another_compressor_naming_both(tmp_path):
    model = trained()
    compress_corpus(model, CORPUS[:1], tmp_path)
    old = model.compressor_fingerprint()
    perturb(model, COMPRESSOR, 2)
    new = model.compressor_fingerprint()
    with pytest.raises(StoreMismatchError, match=f"{old}.*{new}"):
        compress_corpus(model, CORPUS, tmp_path)
    assert CompressedStore.open(tmp_path).document_ids == ["ada"]


def test_store_refuses_a_model_whose_memory_rows_changed(tmp_path):
    model = trained()
    compress_corpus(model, CORPUS, tmp_path)
    with torch.no_grad():
        model.memory_embeddings.add_(0.1)
    with pytest.raises(StoreMismatchError, match="cannot be mixed"):
        CompressedStore.open(tmp_path, model)


def test_store_accepts_a_model_whose_generator_changed(tmp_path):
    model = trained()
    compress_corpus(model, CORPUS, tmp_path)
    perturb(model, GENERATOR, 3)
    assert CompressedStore.open(tmp_path, model).fingerprint == model.compressor_fingerprint()


def test_store_refuses_another_backbone_with_the_same_compressor_state(tmp_path):
    compress_corpus(build_clara("llama"), CORPUS[:1], tmp_path)
    other = build_clara("gpt2")
    store = CompressedStore.open(tmp_path)
    with pytest.raises(StoreMismatchError, match="backbone"):
        # fresh LoRA B is zero in both; only the identity can tell them apart
        store.check_model(other, fingerprint=store.fingerprint)


def test_store_refuses_a_known_id_with_other_text(tmp_path):
    model = trained()
    compress_corpus(model, CORPUS[:1], tmp_path)
    with pytest.raises(StoreMismatchError, match="'ada' is already stored"):
        compress_corpus(model, [{"id": "ada", "text": "Someone else."}], tmp_path)
    with pytest.raises(StoreMismatchError, match="'x' is already stored"):
        compress_corpus(model, [{"id": "x", "text": "one"}, {"id": "x", "text": "two"}],
                        tmp_path)


def test_store_load_names_a_missing_document(tmp_path):
    store = compress_corpus(trained(), CORPUS[:1], tmp_path)
    with pytest.raises(KeyError, match="'nope' is not in the store"):
        store.load(["nope"])


def test_store_open_needs_a_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a compressed store"):
        CompressedStore.open(tmp_path)


def test_empty_corpus_still_writes_a_manifest(tmp_path):
    model = trained()
    store = compress_corpus(model, [], tmp_path / "store")
    assert len(store) == 0
    perturb(model, COMPRESSOR, 4)
    with pytest.raises(StoreMismatchError):
        CompressedStore.open(tmp_path / "store", model)
