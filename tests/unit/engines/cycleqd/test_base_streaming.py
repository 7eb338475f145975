"""The base weights may stay in (pinned) host memory while the rest of the bank sits next
to the model; materialisation copies the base over one tensor at a time and writes the
same weights. Off a GPU the model side is simulated with the `meta` device."""

from __future__ import annotations

import logging

import pytest
import torch

from mendel.engines.cycleqd import (
    Genome,
    GenomeStore,
    NoiseTerm,
    Recipe,
    build_bank,
    combine,
    crossover,
    materialize,
    place_bank,
    svd_mutation_weights,
    tensor_delta,
)
from mendel.engines.cycleqd.taskvectors import TaskVectorBank, stream_base_from_host

from .conftest import EXPERTS, perturbed, state_of, tiny_model

GB = 10**9


def _bf16_exact(state):
    return {n: t.to(torch.bfloat16).float() for n, t in state.items()}


@pytest.fixture(scope="module")
def bf16_bank() -> TaskVectorBank:
    """A bank whose base is exact in bfloat16, as a bf16 checkpoint read as float32 is."""
    base = _bf16_exact(state_of(tiny_model()))
    return build_bank(base, {e: perturbed(base, 200 + i) for i, e in enumerate(EXPERTS)})


def _mixed_child(bank) -> Recipe:
    w = svd_mutation_weights(bank.ranks("beta"), 0.1, torch.Generator().manual_seed(1))
    recipe = Recipe(coefficients={"alpha": 0.55, "beta": 0.3, "gamma": 0.15})
    return recipe.with_directions("beta", w).with_noise(NoiseTerm(seed=4, scale=0.003))


def test_llama_8b_base_is_streamed_on_80_gb_but_not_on_141_gb():
    base = 16.1 * GB  # bf16; model, three task vectors and rank-128 bases take 66.3 GB
    assert stream_base_from_host(int(base), int(13.7 * GB), 80 * GB)
    assert not stream_base_from_host(int(base), int(74.7 * GB), 141 * GB)


def test_small_numbers_stream_only_when_the_reserve_would_be_eaten():
    total = 16 * GB  # the default reserve is a fifth: 3.2 GB
    assert not stream_base_from_host(10**6, 15 * GB, total)
    assert stream_base_from_host(4 * GB, 6 * GB, total)  # 2 GB would be left
    assert not stream_base_from_host(4 * GB, int(7.2 * GB), total)  # exactly the reserve
    assert not stream_base_from_host(4 * GB, 6 * GB, total, reserve_fraction=0.1)


def test_base_on_host_stays_on_the_cpu_in_the_models_dtype(bf16_bank):
    model = tiny_model().to(device="meta", dtype=torch.bfloat16)
    placed = place_bank(bf16_bank, model, base_on_host=True)
    resident = place_bank(bf16_bank, tiny_model().to(torch.bfloat16))  # as on the device
    for name, tensor in placed.base.items():
        assert tensor.device.type == "cpu" and tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor, resident.base[name]), name
    assert all(t.device.type == "meta" for t in placed.task_vectors["alpha"].values())
    assert all(f.u.device.type == "meta" for f in placed.svd["beta"].values())
    assert placed.device == torch.device("meta")


def test_without_a_gpu_the_base_goes_with_the_model(bank):
    placed = place_bank(bank, tiny_model().to("meta"))
    assert all(t.device.type == "meta" for t in placed.base.values())


def test_streaming_is_logged_once_with_its_size(bf16_bank, caplog):
    model = tiny_model().to(device="meta", dtype=torch.bfloat16)
    with caplog.at_level(logging.INFO, logger="mendel.engines.cycleqd.taskvectors"):
        placed = place_bank(bf16_bank, model, base_on_host=True)
        again = place_bank(placed, model, base_on_host=True)  # as the runner does
    assert all(again.base[n] is t for n, t in placed.base.items())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "host memory" in lines[0] and " GB" in lines[0], lines


def test_deltas_are_computed_next_to_the_task_vectors_not_the_base(bank):
    placed = place_bank(bank, tiny_model().to("meta"), base_on_host=True)
    pinned = Recipe.pinned({n: torch.ones_like(t) for n, t in bank.base.items()})
    recipe = combine([pinned, _mixed_child(bank)], [0.5, 0.5])
    for name in placed.base:
        delta = tensor_delta(recipe, name, placed, {})
        assert delta is not None and delta.device.type == "meta", name


def test_materialize_accepts_a_base_on_the_host_and_the_rest_by_the_model(bank):
    model = tiny_model().to("meta")
    placed = place_bank(bank, model, base_on_host=True)
    materialize(_mixed_child(bank), model, placed)
    materialize(Recipe(), model, placed)  # no delta: the base alone is copied over


def test_materialize_still_refuses_a_task_vector_away_from_the_model(bank):
    model = tiny_model().to("meta")
    placed = place_bank(bank, model, base_on_host=True)
    name = next(iter(placed.base))
    stray = {**placed.task_vectors["gamma"], name: bank.task_vectors["gamma"][name]}
    broken = TaskVectorBank(placed.base, {**placed.task_vectors, "gamma": stray}, placed.svd)
    with pytest.raises(ValueError, match=f"'{name}' is on meta but the bank on cpu; place"):
        materialize(Recipe.expert("alpha"), model, broken)


def test_materialize_refuses_a_base_on_a_device_that_is_not_the_host(bank, model):
    on_meta = TaskVectorBank(
        {n: t.to("meta") for n, t in bank.base.items()}, bank.task_vectors, bank.svd
    )
    with pytest.raises(ValueError, match="is on cpu but the bank on meta; place the bank"):
        materialize(Recipe.expert("alpha"), model, on_meta)


def _recipes(bank) -> tuple[list[Recipe], GenomeStore]:
    store = GenomeStore(
        [
            Genome("p1", Recipe(coefficients={"alpha": 0.6, "beta": 0.4}), "linear"),
            Genome("p2", Recipe.expert("gamma"), "expert"),
        ]
    )
    parents = {"p1": store.recipe("p1"), "p2": store.recipe("p2")}
    sparse = crossover("dareTies", parents, (0.3, 0.7), {"density": 0.5}, seed=41)
    pinned = Recipe.pinned({n: 1e-3 * torch.ones_like(t) for n, t in bank.base.items()})
    recipes = [Recipe(), Recipe.expert("beta"), _mixed_child(bank), sparse, pinned]
    return recipes, store


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_streamed_base_gives_the_same_weights_as_a_resident_one_on_cuda(bank, dtype):
    models = {mode: tiny_model().to(device="cuda", dtype=dtype) for mode in ("resident", "host")}
    resident = place_bank(bank, models["resident"], base_on_host=False)
    streamed = place_bank(bank, models["host"], base_on_host=True)
    assert all(t.device.type == "cuda" for t in resident.base.values())
    assert all(t.device.type == "cpu" and t.is_pinned() for t in streamed.base.values())
    auto = place_bank(bank, models["resident"])  # a tiny base leaves the GPU almost free
    assert all(t.device.type == "cuda" for t in auto.base.values())
    recipes, store = _recipes(bank)
    for recipe in recipes:
        materialize(recipe, models["resident"], resident, store.recipe)
        materialize(recipe, models["host"], streamed, store.recipe)
        torch.cuda.synchronize()
        host = dict(models["host"].named_parameters())
        for name, param in models["resident"].named_parameters():
            assert torch.equal(param, host[name]), (recipe, name)
