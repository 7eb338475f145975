from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import Archive, Binning, elite_weights, sample_parents


def test_elite_weights_factor_spans_alpha_low_to_alpha_high():
    probs = elite_weights([[0.0], [0.5], [1.0]], 0.5, 0.8)
    gammas = [0.5, 0.65, 0.8]
    assert probs == pytest.approx([g / sum(gammas) for g in gammas], abs=1e-15)


def test_elite_weights_multiply_over_quality_and_descriptors():
    rows = [[0.2, 0.1], [0.4, 0.3], [0.3, 0.5]]
    # column 0 normalised [0, 1, 0.5], column 1 [0, 0.5, 1]
    gammas = [0.5 * 0.5, 0.8 * 0.65, 0.65 * 0.8]
    probs = elite_weights(rows, 0.5, 0.8)
    assert probs == pytest.approx([g / sum(gammas) for g in gammas], abs=1e-15)
    # the smallest factor ratio is bounded by (0.5/0.8)^2, not the code's [0.5, 1.3] map
    assert min(probs) / max(probs) == pytest.approx((0.5 * 0.5) / (0.8 * 0.65))


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([[0.3, 0.1], [0.3, 0.1], [0.3, 0.1]], id="all-equal"),
        pytest.param([[0.7]], id="single"),
    ],
)
def test_elite_weights_uniform_fallback(rows):
    assert elite_weights(rows, 0.5, 0.8) == [1 / len(rows)] * len(rows)


def test_elite_weights_rejects_unordered_alphas():
    with pytest.raises(ValueError, match="alpha_low"):
        elite_weights([[0.1]], 0.8, 0.5)


def _archive(n: int) -> Archive:
    archive = Archive("a", ("b",), {"b": Binning(0.0, 1.0, 10)})
    for i in range(n):
        archive.offer(f"g{i}", {"a": 0.1 * i, "b": 0.1 * i + 0.05})
    return archive


@pytest.mark.parametrize("method", ["elite", "random"])
def test_sample_parents_returns_two_distinct_elites_deterministically(method):
    archive = _archive(5)
    for seed in range(30):
        a = sample_parents(archive, method, 0.5, 0.8, torch.Generator().manual_seed(seed))
        b = sample_parents(archive, method, 0.5, 0.8, torch.Generator().manual_seed(seed))
        assert a == b
        assert a[0] != a[1]
        assert set(a) <= {f"g{i}" for i in range(5)}


def test_sample_parents_fills_from_pool_when_archive_is_small():
    parents = sample_parents(_archive(1), "elite", 0.5, 0.8, torch.Generator(), pool=["x", "g0"])
    assert parents == ("g0", "x")


def test_sample_parents_needs_two_genomes():
    with pytest.raises(ValueError, match="two distinct genomes"):
        sample_parents(_archive(1), "elite", 0.5, 0.8, torch.Generator(), pool=["g0"])
