from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import SvdCache, build_bank
from mendel.engines.cycleqd import svdcache as svdcache_module


def test_svd_cache_hit_on_second_use(tmp_path, base_state, expert_states, monkeypatch):
    ids = {"alpha": "expert=/m/alpha|base=/m/base", "beta": "expert=/m/beta|base=/m/base"}
    experts = {k: expert_states[k] for k in ("alpha", "beta")}
    first = SvdCache(tmp_path, ids)
    bank1 = build_bank(base_state, experts, rank=3, svd_provider=first)
    assert (first.hits, first.misses) == (0, 2)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2

    def no_svd(*_args, **_kwargs):
        raise AssertionError("SVD recomputed despite the cache")

    monkeypatch.setattr(svdcache_module, "expert_svd", no_svd)
    second = SvdCache(tmp_path, ids)
    bank2 = build_bank(base_state, experts, rank=3, svd_provider=second)
    assert (second.hits, second.misses) == (2, 0)
    for expert in experts:
        assert set(bank2.svd[expert]) == set(bank1.svd[expert])
        for name, f in bank1.svd[expert].items():
            g = bank2.svd[expert][name]
            assert torch.equal(f.u, g.u) and torch.equal(f.s, g.s) and torch.equal(f.vh, g.vh)
            assert g.rank == 3


@pytest.mark.parametrize(
    ("identity", "rank"),
    [
        pytest.param("expert=/m/other|base=/m/base", 3, id="other-identity"),
        pytest.param("expert=/m/alpha|base=/m/base", 2, id="other-rank"),
    ],
)
def test_svd_cache_key_separates_identity_and_rank(tmp_path, bank, identity, rank):
    tau = bank.task_vectors["alpha"]
    SvdCache(tmp_path, {"alpha": "expert=/m/alpha|base=/m/base"})("alpha", tau, 3)
    cache = SvdCache(tmp_path, {"alpha": identity})
    cache("alpha", tau, rank)
    assert (cache.hits, cache.misses) == (0, 1)
