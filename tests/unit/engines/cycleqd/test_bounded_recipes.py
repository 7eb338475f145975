"""Recipes must not grow with the number of generations: Gaussian noise folds into a fixed
basis of seeds, and a genome whose merges would replay too many ancestors is pinned to its
dense delta. Folding and pinning must not change the weights a recipe stands for."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mendel.engines.cycleqd import (
    MAX_REPLAYED_ANCESTORS,
    NOISE_BASIS_SIZE,
    CycleQD,
    Genome,
    GenomeStore,
    NoiseTerm,
    Recipe,
    combine,
    crossover,
    materialize,
    materialize_bounded,
    mutate,
    noise_basis,
    tensor_delta,
)
from mendel.engines.cycleqd.materialize import replay_order

from .conftest import WeightProbe, tiny_model

FLOAT32_EPS = 2.0**-24  # unit roundoff of float32


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "crossover_method", [pytest.param("linear", id="linear"), pytest.param("ties", id="ties")]
)
def test_recipes_stay_bounded_however_long_the_run(bank, spec_factory, crossover_method):
    # Before folding, 60 generations left 21 noise terms (linear) and 14 replayed
    # ancestors (TIES) in a single recipe, and both kept growing with the run.
    spec = spec_factory(
        algorithm={"crossover": {"method": crossover_method}, "mutation": {"method": "gaussian"}},
        budget={"generations": 60},
    )
    result = CycleQD(spec, bank, tiny_model(), WeightProbe(bank)).run()
    store = result.state.store
    recipes = [store.recipe(g) for g in store.ids] + [result.final.recipe]
    noise = max(len(r.noise) for r in recipes)
    replayed = max(len(replay_order(r, store.recipe)) for r in recipes)
    assert noise == NOISE_BASIS_SIZE  # reached, never passed
    assert replayed <= MAX_REPLAYED_ANCESTORS
    assert {t.seed for r in recipes for t in r.noise} <= set(noise_basis(spec.seed))
    if crossover_method == "ties":
        assert any(r.dense for r in recipes), "60 TIES generations should pin some genome"


def _deep_ties_store():
    """Experts, then five TIES generations each merging the previous child with an expert,
    each mutated with Gaussian noise: the last child replays six ancestors (two experts,
    four earlier children)."""
    basis = noise_basis(5)
    store = GenomeStore(
        [Genome(f"expert-{e}", Recipe.expert(e), "expert") for e in ("alpha", "beta")]
    )
    previous = "expert-alpha"
    for generation in range(5):
        parents = {previous: store.recipe(previous), "expert-beta": store.recipe("expert-beta")}
        child = crossover("ties", parents, (0.6, 0.4), {"density": 0.5}, seed=generation)
        rng = torch.Generator().manual_seed(generation)
        child = mutate(
            child, "gaussian", expert="alpha", ranks={}, rate=0.0, std=0.01, rng=rng, noise=basis
        )
        previous = f"g{generation}"
        store.add(Genome(previous, child, "ties+gaussian", generation))
    return store, previous


def test_pinned_genome_gives_bit_identical_weights_and_ends_the_replay(bank):
    store, last = _deep_ties_store()
    recipe = store.recipe(last)
    assert len(replay_order(recipe, store.recipe)) == 6

    unpinned = tiny_model()
    assert materialize_bounded(recipe, unpinned, bank, store.recipe, limit=6) is recipe
    pinned_model = tiny_model(1)
    pinned = materialize_bounded(recipe, pinned_model, bank, store.recipe, limit=5)
    assert pinned.dense and not pinned.merges and not pinned.noise
    assert replay_order(pinned, store.recipe) == []
    expected = _weights(unpinned)
    for name, value in _weights(pinned_model).items():
        assert torch.equal(value, expected[name]), name

    # the pinned recipe survives a checkpoint's JSON + safetensors form and still replays
    # into a descendant exactly as the unpinned ancestor did
    kept = Genome(last, pinned, "ties+gaussian", 4)
    again = Genome.from_dict(json.loads(json.dumps(kept.to_dict())), pinned.tensors())
    pinned_store = GenomeStore([*(store.get(g) for g in store.ids if g != last), again])
    child_parents = {last: recipe, "expert-beta": store.recipe("expert-beta")}
    child = crossover("ties", child_parents, (0.5, 0.5), {"density": 0.5}, seed=99)
    materialize(child, unpinned, bank, store.recipe)
    materialize(child, pinned_model, bank, pinned_store.recipe)
    expected = _weights(unpinned)
    for name, value in _weights(pinned_model).items():
        assert torch.equal(value, expected[name]), name


def test_folded_noise_equals_the_separate_draws_within_float32_rounding(bank):
    # a*N_s + b*N_s summed as two float32 terms versus (a+b)*N_s as one: the draws are the
    # same tensor, so only rounding differs. Separately: fl(a), fl(b), two products and one
    # sum, each off by at most one unit roundoff u, so at most 3u(|a|+|b|)|x| (first order);
    # folded: fl(a+b) and one product, at most 2u|a+b||x|. Their gap is below 6u(|a|+|b|)|x|.
    seed, a, b = noise_basis(1)[0], 0.0123, -0.0045
    first = Recipe(noise=(NoiseTerm(seed, a),))
    second = Recipe(noise=(NoiseTerm(seed, b),))
    folded = combine([first, second], [1.0, 1.0])
    assert folded.noise == (NoiseTerm(seed, a + b),)
    for name in bank.base:
        separate = tensor_delta(first, name, bank, {}).add_(tensor_delta(second, name, bank, {}))
        together = tensor_delta(folded, name, bank, {})
        draw = tensor_delta(Recipe(noise=(NoiseTerm(seed, 1.0),)), name, bank, {})
        bound = 6 * FLOAT32_EPS * (abs(a) + abs(b)) * draw.abs()
        assert ((separate - together).abs() <= bound).all(), name


def test_gaussian_mutation_keeps_per_element_std_and_folds_into_the_basis(bank):
    std, basis = 0.01, noise_basis(3)
    rng = torch.Generator().manual_seed(0)
    once = mutate(
        Recipe(), "gaussian", expert="alpha", ranks={}, rate=0.0, std=std, rng=rng, noise=basis
    )
    assert [t.seed for t in once.noise] == list(basis)
    assert math.isclose(sum(t.scale**2 for t in once.noise), std**2, rel_tol=1e-12)
    delta = torch.cat([tensor_delta(once, n, bank, {}).flatten() for n in sorted(bank.base)])
    # n ~ 23k elements of N(0, std^2): the sample std has relative standard error
    # 1/sqrt(2n) < 0.5%, the mean has standard error std/sqrt(n) < 0.007 std; bounds at 6 SE
    assert abs(float(delta.std()) / std - 1.0) < 0.03
    assert abs(float(delta.mean())) < 0.04 * std
    twice = mutate(
        once, "gaussian", expert="alpha", ranks={}, rate=0.0, std=std, rng=rng, noise=basis
    )
    assert [t.seed for t in twice.noise] == list(basis)  # inherited noise folded by seed
