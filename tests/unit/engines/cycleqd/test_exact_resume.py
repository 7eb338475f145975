"""A run stopped and resumed from its checkpoints at several generations must end bit for
bit where the uninterrupted run ends: the same archives (scores compared as exact floats),
the same recipes down to every stored tensor, and the same final weights."""

from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import CycleQD

from .conftest import WeightProbe, tiny_model

GENERATIONS = 42
SPLITS = (7, 25, 33)

CONFIGS = [
    pytest.param({}, False, id="linear-svd-elite"),
    pytest.param(
        {
            "crossover": {"method": "ties"},
            "mutation": {"method": "gaussian"},
            "sampling": {"method": "random"},
        },
        True,  # deep TIES lineages get pinned to dense deltas, which must survive resume
        id="ties-gaussian-random",
    ),
]


def _run(spec_factory, algorithm, bank, directory, generations, model_seed):
    spec = spec_factory(
        algorithm=algorithm,
        budget={"generations": generations},
        checkpoint={"everyGenerations": 5},
    )
    model = tiny_model(model_seed)
    result = CycleQD(spec, bank, model, WeightProbe(bank), checkpoint_dir=directory).run()
    return result, model


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("algorithm", "pins"), CONFIGS)
def test_run_split_at_several_generations_resumes_bit_for_bit(
    tmp_path, bank, spec_factory, algorithm, pins
):
    full, full_model = _run(spec_factory, algorithm, bank, tmp_path / "full", GENERATIONS, 0)
    for stop in SPLITS:  # each leg resumes from the previous leg's last checkpoint
        _run(spec_factory, algorithm, bank, tmp_path / "split", stop, stop)
    resumed, resumed_model = _run(
        spec_factory, algorithm, bank, tmp_path / "split", GENERATIONS, 99
    )

    for task, archive in full.state.archives.items():
        assert resumed.state.archives[task].to_dict() == archive.to_dict(), task
    assert resumed.state.store.to_dict() == full.state.store.to_dict()
    assert resumed.final.to_dict() == full.final.to_dict()
    assert resumed.final_scores == full.final_scores
    final = _weights(full_model)
    for name, value in _weights(resumed_model).items():
        assert torch.equal(value, final[name]), f"final model differs at {name}"

    children = [g for g in full.state.store.ids if g.startswith("g") and g > "g000025"]
    assert children, "children bred after the last split should have entered the archives"
    pinned = [g for g in full.state.store.ids if full.state.store.recipe(g).dense]
    assert bool(pinned) == pins
    full_tensors, resumed_tensors = full.state.store.tensors(), resumed.state.store.tensors()
    assert resumed_tensors.keys() == full_tensors.keys()
    for key, value in resumed_tensors.items():  # direction weights and pinned deltas
        assert torch.equal(value, full_tensors[key]), key
