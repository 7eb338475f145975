from __future__ import annotations

import pytest
import torch

from mendel.api.qdevolution import Crossover
from mendel.engines.cycleqd import MERGE_METHODS, get_method, method_parameters
from mendel.engines.cycleqd.merge_methods import (
    dare_mask,
    magnitude_mask,
    sign_consensus_mask,
    weighted_merge,
)

D1 = torch.tensor([1.0, -2.0, 3.0, 0.5])
D2 = torch.tensor([-1.0, 1.0, 2.0, -4.0])
NO_RNG = torch.Generator()


def test_magnitude_mask_keeps_largest_entries():
    assert magnitude_mask(D1, 0.5).tolist() == [False, True, True, False]
    assert magnitude_mask(D2, 0.25).tolist() == [False, False, False, True]


def test_magnitude_mask_keeps_at_least_one_entry():
    assert magnitude_mask(D1, 0.01).tolist() == [False, False, True, False]


def test_sign_consensus_mask_elects_sign_of_sum_and_drops_zeros():
    weighted = torch.tensor([[0.0, -1.0, 1.5, 0.0], [0.0, 0.0, 1.0, -2.0]])
    mask = sign_consensus_mask(weighted)
    assert mask.tolist() == [[False, True, True, False], [False, False, True, True]]


def test_ties_matches_hand_computed_case():
    # trim: d1 -> [0, -2, 3, 0], d2 -> [0, 0, 2, -4]; weighted (0.5 each):
    # [0, -1, 1.5, 0], [0, 0, 1, -2]; elected signs [+, -, +, -];
    # disjoint mean = sum of agreeing / sum of their weights = [0, -2, 2.5, -4].
    merged = get_method("ties").merge([D1, D2], [0.5, 0.5], {"density": 0.5}, NO_RNG)
    assert merged.tolist() == [0.0, -2.0, 2.5, -4.0]


def test_dare_linear_drops_and_rescales_with_the_seeded_mask():
    deltas = [torch.arange(1.0, 9.0), -torch.arange(1.0, 9.0) * 0.5]
    merged = get_method("dareLinear").merge(
        deltas, [0.25, 0.75], {"density": 0.5}, torch.Generator().manual_seed(11)
    )
    rng = torch.Generator().manual_seed(11)
    masks = [torch.rand(8, generator=rng) < 0.5 for _ in deltas]
    expected = 0.25 * deltas[0] * masks[0] / 0.5 + 0.75 * deltas[1] * masks[1] / 0.5
    torch.testing.assert_close(merged, expected, atol=0, rtol=0)


def test_dare_ties_equals_ties_consensus_on_dropped_deltas():
    deltas = [D1, D2]
    merged = get_method("dareTies").merge(deltas, [0.5, 0.5], {"density": 1.0}, NO_RNG)
    # density 1 drops nothing: sign election over the untrimmed deltas.
    # weighted [0.5,-1,1.5,0.25], [-0.5,0.5,1,-2]; sums [0,-0.5,2.5,-1.75] -> [+,-,+,-]
    assert merged.tolist() == [1.0, -2.0, 2.5, -4.0]


def test_dare_mask_keeps_about_density_and_is_seeded():
    delta = torch.ones(10_000)
    a = dare_mask(delta, 0.3, torch.Generator().manual_seed(5))
    b = dare_mask(delta, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert 2800 < int(a.sum()) < 3200


def test_weighted_merge_linear_normalises_by_weight_sum():
    merged = weighted_merge([D1, D2], [1.0, 3.0], consensus=False)
    torch.testing.assert_close(merged, (D1 + 3 * D2) / 4)


@pytest.mark.parametrize(
    "density", [pytest.param(0.0, id="zero"), pytest.param(1.5, id="above-one")]
)
def test_sparsifiers_reject_bad_density(density):
    with pytest.raises(ValueError, match="density"):
        magnitude_mask(D1, density)


@pytest.mark.parametrize("name", sorted(MERGE_METHODS))
def test_registry_entries_declare_parameters_and_reference(name):
    method = MERGE_METHODS[name]
    assert method.name == name
    assert method.reference_url.startswith("https://arxiv.org/abs/")
    assert method.linear is (name == "linear")
    params = method_parameters(method, Crossover(density=0.3))
    assert params == ({} if name == "linear" else {"density": 0.3})


def test_registry_matches_the_spec_literal():
    literal = Crossover.model_fields["method"].annotation.__args__
    assert sorted(literal) == sorted(MERGE_METHODS)


def test_get_method_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown merge method 'slerp'"):
        get_method("slerp")
