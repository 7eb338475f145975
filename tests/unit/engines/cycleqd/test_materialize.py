from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import (
    Genome,
    GenomeStore,
    NoiseTerm,
    Recipe,
    combine,
    crossover,
    generator,
    get_method,
    materialize,
    svd_mutation_weights,
)


def _dense_linear(bank, coefficients, directions):
    out = {}
    for name, base in bank.base.items():
        delta = torch.zeros_like(base)
        for expert, c in coefficients.items():
            delta += c * bank.task_vectors[expert][name]
        for expert, per in directions.items():
            if name in per:
                f = bank.svd[expert][name]
                delta += f.u @ torch.diag(per[name] * f.s) @ f.vh
        out[name] = delta
    return out


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_expert_recipe_reproduces_expert_weights(bank, expert_states, model):
    materialize(Recipe.expert("beta"), model, bank)
    for name, value in _params(model).items():
        torch.testing.assert_close(value, expert_states["beta"][name], atol=1e-6, rtol=0)


def test_linear_child_equals_direct_merge_of_parents(bank, model):
    w = svd_mutation_weights(bank.ranks("gamma"), 0.1, torch.Generator().manual_seed(2))
    p1 = Recipe(coefficients={"alpha": 0.7, "beta": 0.3})
    p2 = Recipe.expert("gamma")
    c1, c2 = 1.3, -0.3
    child = crossover("linear", {"p1": p1, "p2": p2}, (c1, c2), {}, 0).with_directions("gamma", w)
    materialize(child, model, bank)
    # dense reference: base + c1*(theta_p1 - base) + c2*(theta_p2 - base) + U diag(wS) V^T
    p1_delta = _dense_linear(bank, {"alpha": 0.7, "beta": 0.3}, {})
    theta_p1 = {n: bank.base[n] + d for n, d in p1_delta.items()}
    theta_p2 = {n: bank.base[n] + bank.task_vectors["gamma"][n] for n in bank.base}
    mutation = _dense_linear(bank, {}, {"gamma": w})
    for name, value in _params(model).items():
        base = bank.base[name]
        expected = (
            base + c1 * (theta_p1[name] - base) + c2 * (theta_p2[name] - base) + mutation[name]
        )
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["ties", "dareLinear", "dareTies"])
def test_sparse_child_replays_merge_of_parent_deltas(bank, model, method):
    store = GenomeStore(
        [
            Genome("p1", Recipe(coefficients={"alpha": 0.6, "beta": 0.4}), "linear"),
            Genome("p2", Recipe.expert("gamma"), "expert"),
        ]
    )
    parents = {"p1": store.recipe("p1"), "p2": store.recipe("p2")}
    child = crossover(method, parents, (0.3, 0.7), {"density": 0.5}, seed=41)
    grandchild = combine([child, Recipe.expert("alpha")], [0.5, 0.5])
    materialize(grandchild, model, bank, store.recipe)
    d1 = _dense_linear(bank, {"alpha": 0.6, "beta": 0.4}, {})
    d2 = _dense_linear(bank, {"gamma": 1.0}, {})
    merge = get_method(method).merge
    for name, value in _params(model).items():
        merged = merge([d1[name], d2[name]], (0.3, 0.7), {"density": 0.5}, generator(41, name))
        expected = bank.base[name] + 0.5 * merged + 0.5 * bank.task_vectors["alpha"][name]
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=0)


def test_merge_recipe_without_resolver_is_refused(bank, model):
    child = crossover("ties", {"p1": Recipe(), "p2": Recipe()}, (0.5, 0.5), {"density": 0.5}, 0)
    with pytest.raises(ValueError, match="resolver"):
        materialize(child, model, bank)


def test_noise_term_replays_identically(bank, model):
    recipe = Recipe.expert("alpha").with_noise(NoiseTerm(seed=8, scale=0.01))
    materialize(recipe, model, bank)
    first = _params(model)
    materialize(Recipe.expert("beta"), model, bank)
    materialize(recipe, model, bank)
    for name, value in _params(model).items():
        assert torch.equal(value, first[name])
        noise = torch.randn(value.shape, generator=generator(8, name))
        expected = bank.base[name] + bank.task_vectors["alpha"][name] + 0.01 * noise
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=0)


def test_materialize_writes_in_place(bank, model):
    before = {n: (p.data_ptr(), p) for n, p in model.named_parameters()}
    materialize(Recipe(coefficients={"alpha": 0.5, "gamma": 0.5}), model, bank)
    materialize(
        Recipe.expert("beta").with_directions(
            "beta", svd_mutation_weights(bank.ranks("beta"), 0.1, torch.Generator())
        ),
        model,
        bank,
    )
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    for name, (ptr, param) in before.items():
        assert after[name] is param
        assert after[name].data_ptr() == ptr
    assert all(not p.requires_grad or p.grad is None for p in after.values())


def test_materialize_into_bfloat16_model(bank, model):
    model.to(torch.bfloat16)
    materialize(Recipe.expert("gamma"), model, bank)
    for name, value in model.named_parameters():
        expected = bank.base[name] + bank.task_vectors["gamma"][name]
        assert value.dtype == torch.bfloat16
        torch.testing.assert_close(value.float(), expected, atol=2e-2, rtol=1e-2)


def test_materialize_rejects_unknown_parameter(bank):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'weight' has no tensor in the base model"):
        materialize(Recipe.expert("alpha"), model, bank)
