from __future__ import annotations

import json

import pytest
import torch

from mendel.engines.cycleqd import (
    CycleQD,
    latest_checkpoint,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)

from .conftest import WeightProbe, tiny_model

CONFIGS = [
    pytest.param({}, id="linear-svd-elite"),
    pytest.param(
        {
            "crossover": {"method": "ties"},
            "mutation": {"method": "gaussian"},
            "sampling": {"method": "random"},
        },
        id="ties-gaussian-random",
    ),
    pytest.param(
        {
            "crossover": {"method": "dareTies", "density": 0.7},
            "mutation": {"method": "svd", "rank": 4},
            "cycleInterval": 2,
        },
        id="dareties-svd-rank4",
    ),
]


def _run(spec, bank, directory, model_seed=0, probe=None):
    probe = probe or WeightProbe(bank)
    return CycleQD(spec, bank, tiny_model(model_seed), probe, checkpoint_dir=directory).run()


@pytest.mark.parametrize("algorithm", CONFIGS)
def test_resume_matches_uninterrupted_run(
    tmp_path, bank, base_state, expert_states, spec_factory, algorithm
):
    from mendel.engines.cycleqd import build_bank

    rank = algorithm.get("mutation", {}).get("rank")
    run_bank = bank if rank is None else build_bank(base_state, expert_states, rank=rank)
    full = _run(spec_factory(algorithm=algorithm), run_bank, tmp_path / "full")
    _run(spec_factory(algorithm=algorithm, budget={"generations": 6}), run_bank, tmp_path / "split")
    # fresh objects: a new model with other weights, a new probe, state only from disk
    probe = WeightProbe(run_bank)
    resumed = _run(spec_factory(algorithm=algorithm), run_bank, tmp_path / "split", 99, probe)
    assert probe.calls == 6 + 1  # generations 6..11 and the final model; no expert re-run

    for task in full.state.archives:
        assert resumed.state.archives[task].to_dict() == full.state.archives[task].to_dict()
    assert resumed.state.store.ids == full.state.store.ids
    assert resumed.final.to_dict() == full.final.to_dict()
    assert resumed.final_scores == full.final_scores
    children = [
        e for a in full.state.archives.values() for e in a.elites() if e.genome_id.startswith("g")
    ]
    assert children, "the run should have accepted some children"


def test_checkpoint_round_trips_state(tmp_path, bank, spec_factory):
    result = CycleQD(
        spec_factory(algorithm={"crossover": {"method": "ties"}}, budget={"generations": 4}),
        bank,
        tiny_model(),
        WeightProbe(bank),
    ).run()
    path = save_checkpoint(tmp_path, result.state)
    state = load_checkpoint(path)
    assert (state.seed, state.generation, state.failures, state.tasks, state.experts) == (
        3,
        4,
        0,
        result.state.tasks,
        result.state.experts,
    )
    assert state.store.to_dict() == result.state.store.to_dict()
    for a, b in zip(
        state.store.tensors().values(), result.state.store.tensors().values(), strict=True
    ):
        assert torch.equal(a, b)
    data = json.loads((path / "state.json").read_text())
    assert data["rng"]["nextGeneration"] == 4
    assert not any(p.suffix == ".pkl" for p in path.iterdir())


def test_incomplete_checkpoint_is_ignored(tmp_path, bank, spec_factory):
    result = CycleQD(
        spec_factory(budget={"generations": 2}), bank, tiny_model(), WeightProbe(bank)
    ).run()
    save_checkpoint(tmp_path, result.state)
    (tmp_path / "gen-000009").mkdir()  # crashed before state.json was committed
    (tmp_path / ".gen-000010.abc").mkdir()  # a temporary directory left behind
    assert latest_checkpoint(tmp_path).name == "gen-000002"
    assert load_latest(tmp_path).generation == 2
    assert load_latest(tmp_path / "missing") is None


def test_save_checkpoint_keeps_newest(tmp_path, bank, spec_factory):
    result = CycleQD(
        spec_factory(budget={"generations": 1}), bank, tiny_model(), WeightProbe(bank)
    ).run()
    for gen in (1, 2, 3):
        result.state.generation = gen
        save_checkpoint(tmp_path, result.state, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen-000002", "gen-000003"]
