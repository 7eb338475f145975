"""CandidateCache on the tiny models: a second lookup runs no encoder forward, cached states
equal a direct encode, a changed compressor misses, and entries survive a disk round trip."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.unit.engines.clara.tiny import DOCUMENTS, build_clara, perturb

from mendel.engines.clara import COMPRESSOR, GENERATOR
from mendel.engines.clara.cache import CacheStats, CandidateCache, StaleCacheError, chunk_digest


class ForwardCounter:
    """Counts encoder forwards and the rows they encode, through a hook on the embeddings."""

    def __init__(self, model):
        self.calls = 0
        self.rows = 0
        model.backbone.get_input_embeddings().register_forward_hook(self._seen)

    def _seen(self, module, inputs, output):
        self.calls += 1
        self.rows += int(inputs[0].shape[0])


def chunks_of(model, documents=DOCUMENTS):
    return [chunk for doc in documents for chunk in model.collator.document_chunks(doc)]


def direct_encode(model, chunks):
    with torch.no_grad():
        return model.encode(model.collator.encoder_batch(chunks), COMPRESSOR).memory


def test_cache_encodes_misses_once_and_the_second_call_runs_no_forward(architecture):
    model = build_clara(architecture)
    perturb(model, COMPRESSOR, 1)
    counter = ForwardCounter(model)
    cache = CandidateCache()
    chunks = chunks_of(model)

    first = cache.get_or_compute(model, chunks)
    assert (counter.calls, counter.rows) == (1, len(chunks))
    assert cache.stats == CacheStats(hits=0, misses=len(chunks))

    second = cache.get_or_compute(model, list(reversed(chunks)))
    assert counter.calls == 1
    assert cache.stats == CacheStats(hits=len(chunks), misses=len(chunks))
    assert torch.equal(second, first.flip(0))
    assert first.shape == (len(chunks), model.memory.count, model.hidden_size)
    assert not first.requires_grad


def test_cache_encodes_only_the_new_chunks_in_one_batch():
    model = build_clara()
    counter = ForwardCounter(model)
    cache = CandidateCache()
    old = chunks_of(model)
    new = model.collator.document_chunks("Grace Hopper found a moth.")
    cache.get_or_compute(model, old)

    states = cache.get_or_compute(model, [*new, old[0], *new])
    assert (counter.calls, counter.rows) == (2, len(old) + len(new))
    assert cache.stats == CacheStats(hits=1 + len(new), misses=len(old) + len(new))
    assert torch.equal(states[0], states[len(new) + 1])


def test_cached_states_equal_a_direct_encode(architecture):
    model = build_clara(architecture)
    perturb(model, COMPRESSOR, 2)
    chunks = chunks_of(model)
    cache = CandidateCache()
    cache.get_or_compute(model, chunks[:1])
    states = cache.get_or_compute(model, chunks)
    torch.testing.assert_close(states, direct_encode(model, chunks), atol=1e-5, rtol=1e-5)


def test_cache_computes_in_eval_mode_and_restores_training_mode():
    model = build_clara()
    model.train()
    CandidateCache().get_or_compute(model, chunks_of(model))
    assert model.training


def test_changed_memory_rows_miss_instead_of_returning_stale_states():
    model = build_clara()
    perturb(model, COMPRESSOR, 3)
    counter = ForwardCounter(model)
    cache = CandidateCache()
    chunks = chunks_of(model)
    stale = cache.get_or_compute(model, chunks)
    with torch.no_grad():
        model.memory_embeddings.add_(0.5)

    fresh = cache.get_or_compute(model, chunks)
    assert counter.calls == 2
    assert cache.stats == CacheStats(hits=0, misses=2 * len(chunks))
    assert not torch.allclose(fresh, stale)
    torch.testing.assert_close(fresh, direct_encode(model, chunks), atol=1e-5, rtol=1e-5)
    assert len(cache) == len(chunks)  # the old fingerprint's entries were dropped


def test_a_changed_compressor_misses_but_a_changed_generator_hits():
    model = build_clara()
    counter = ForwardCounter(model)
    cache = CandidateCache()
    chunks = chunks_of(model)
    cache.get_or_compute(model, chunks)
    perturb(model, GENERATOR, 4)
    cache.get_or_compute(model, chunks)
    assert counter.calls == 1
    perturb(model, COMPRESSOR, 5)
    cache.get_or_compute(model, chunks)
    assert counter.calls == 2


def test_cache_round_trips_through_its_directory(tmp_path):
    model = build_clara()
    perturb(model, COMPRESSOR, 6)
    chunks = chunks_of(model)
    written = CandidateCache(tmp_path).get_or_compute(model, chunks)
    fingerprint = model.compressor_fingerprint()
    files = sorted((tmp_path / fingerprint).iterdir())
    assert [f.name for f in files] == sorted(f"{chunk_digest(c)}.safetensors" for c in chunks)

    counter = ForwardCounter(model)
    reader = CandidateCache(tmp_path)
    read = reader.get_or_compute(model, chunks, fingerprint=fingerprint)
    assert counter.calls == 0
    assert reader.stats == CacheStats(hits=len(chunks), misses=0)
    assert torch.equal(read, written)


def test_cache_refuses_a_file_computed_under_another_fingerprint(tmp_path):
    model = build_clara()
    chunks = chunks_of(model)[:1]
    CandidateCache(tmp_path).get_or_compute(model, chunks)
    old = model.compressor_fingerprint()
    perturb(model, COMPRESSOR, 7)
    new = model.compressor_fingerprint()
    name = f"{chunk_digest(chunks[0])}.safetensors"
    (tmp_path / new).mkdir()
    (tmp_path / old / name).rename(tmp_path / new / name)

    with pytest.raises(StaleCacheError, match="holds states for"):
        CandidateCache(tmp_path).get_or_compute(model, chunks)


def test_cache_refuses_a_file_stored_for_another_chunk(tmp_path):
    model = build_clara()
    first, second = chunks_of(model)[:2]
    CandidateCache(tmp_path).get_or_compute(model, [first])
    folder = tmp_path / model.compressor_fingerprint()
    path = folder / f"{chunk_digest(first)}.safetensors"
    save_file(load_file(str(path)), str(folder / f"{chunk_digest(second)}.safetensors"),
              metadata={"fingerprint": model.compressor_fingerprint(),
                        "chunk": chunk_digest(first)})

    with pytest.raises(StaleCacheError):
        CandidateCache(tmp_path).get_or_compute(model, [second])


def test_chunk_digest_depends_on_every_token_and_its_order():
    assert chunk_digest([1, 2, 3]) == chunk_digest((1, 2, 3))
    assert chunk_digest([1, 2, 3]) != chunk_digest([3, 2, 1])
    assert chunk_digest([1, 23]) != chunk_digest([12, 3])


def test_cache_needs_at_least_one_chunk():
    with pytest.raises(ValueError, match="at least one chunk"):
        CandidateCache().get_or_compute(build_clara(), [])


def test_warm_encodes_each_missing_chunk_once_in_fixed_batches():
    model = build_clara()
    chunks = [[5, 6, 7], [8, 9], [5, 6, 7], [10], [11, 12]]
    cache = CandidateCache()
    cache.warm(model, chunks, batch_size=2)
    assert cache.stats.misses == 4 and len(cache) == 4
    alone = CandidateCache()
    alone.warm(model, chunks[:2], batch_size=2)  # the same first batch gives the same states
    assert torch.equal(cache.get_or_compute(model, [chunks[0]]),
                       alone.get_or_compute(model, [chunks[0]]))
    cache.warm(model, chunks)
    assert cache.stats.misses == 4  # nothing left to encode
