from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import Recipe, combine, crossover, draw_coefficients


@pytest.mark.parametrize(
    ("mean", "std"),
    [
        pytest.param(1.0, 0.3, id="default"),
        pytest.param(1.0, 0.01, id="code"),
        pytest.param(0.0, 1.0, id="zero-mean"),
    ],
)
def test_draw_coefficients_sum_to_one(mean, std):
    for seed in range(20):
        w = draw_coefficients(2, mean, std, torch.Generator().manual_seed(seed))
        assert len(w) == 2
        assert sum(w) == pytest.approx(1.0, abs=1e-12)


def test_draw_coefficients_normalises_the_raw_draw():
    rng = torch.Generator().manual_seed(9)
    raw = torch.randn(2, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 0.3 + 1
    w = draw_coefficients(2, 1.0, 0.3, rng)
    assert w == (float(raw[0]) / float(raw.sum()), float(raw[1]) / float(raw.sum()))


def test_draw_coefficients_with_zero_std_are_equal():
    assert draw_coefficients(2, 2.0, 0.0, torch.Generator()) == (0.5, 0.5)


def test_draw_coefficients_zero_sum_falls_back_to_equal_weights():
    assert draw_coefficients(3, 0.0, 0.0, torch.Generator()) == (1 / 3, 1 / 3, 1 / 3)


def test_draw_coefficients_is_deterministic():
    a = draw_coefficients(2, 1.0, 0.3, torch.Generator().manual_seed(1))
    b = draw_coefficients(2, 1.0, 0.3, torch.Generator().manual_seed(1))
    assert a == b


def test_linear_crossover_is_the_exact_recipe_combination():
    p1 = Recipe.expert("a").with_directions("a", {"m": torch.tensor([1.0, 2.0])})
    p2 = Recipe.expert("b")
    child = crossover("linear", {"g1": p1, "g2": p2}, (0.25, 0.75), {}, seed=0)
    assert child.coefficients == {"a": 0.25, "b": 0.75}
    assert child.directions["a"]["m"].tolist() == [0.25, 0.5]
    assert child.merges == ()
    assert child.to_dict() == combine([p1, p2], [0.25, 0.75]).to_dict()


@pytest.mark.parametrize("method", ["ties", "dareLinear", "dareTies"])
def test_sparse_crossover_is_a_replayed_merge_term(method):
    child = crossover(
        method,
        {"g1": Recipe.expert("a"), "g2": Recipe.expert("b")},
        (0.4, 0.6),
        {"density": 0.5},
        seed=77,
    )
    (term,) = child.merges
    assert (term.method, term.parents, term.weights, dict(term.params), term.seed) == (
        method,
        ("g1", "g2"),
        (0.4, 0.6),
        {"density": 0.5},
        77,
    )
    assert child.coefficients == {}
