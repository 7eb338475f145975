"""Several children per generation, evaluated in parallel by ranks: the children bred from
one archive state, child i scored by rank i % world, and a result that is bit for bit the
same whatever the number of ranks (two gloo processes against one), also when a run
started on two ranks is resumed on one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mendel.engines.cycleqd import CycleQD, Outcome, evaluate_share

from .conftest import WeightProbe, tiny_model
from .ranks import Job, run_rank, save_bank, snapshot
from .test_loop import Recorder


class PretendRanks:
    """Rank `rank` of `world`, the other ranks' outcomes given in advance."""

    def __init__(self, rank, world, others):
        self.rank, self.world, self.others = rank, world, others

    def all_gather(self, value):
        return [*self.others[: self.rank], value, *self.others[self.rank :]]


def test_evaluate_share_runs_this_ranks_children_and_orders_every_outcome():
    evaluated = []

    def evaluate(index):
        evaluated.append(index)
        return Outcome(scores={"t": float(index)})

    others = [{0: Outcome(scores={"t": 0.0}), 3: Outcome(error="boom")},
              {2: Outcome(scores={"t": 2.0})}]
    outcomes = evaluate_share(PretendRanks(1, 3, others), 5, evaluate)
    assert evaluated == [1, 4]
    assert [o.scores for o in outcomes] == [{"t": 0.0}, {"t": 1.0}, {"t": 2.0}, None, {"t": 4.0}]
    assert outcomes[3].failed and outcomes[3].error == "boom"
    with pytest.raises(RuntimeError, match=r"children \[2\]"):
        evaluate_share(PretendRanks(1, 3, [others[0], {}]), 5, evaluate)


def test_a_generation_breeds_all_its_children_from_the_archives_as_they_stand(bank, spec_factory):
    recorder = Recorder()
    spec = spec_factory(algorithm={"childrenPerGeneration": 3}, budget={"generations": 4})
    CycleQD(spec, bank, tiny_model(), WeightProbe(bank), observer=recorder).run()
    children = [g for g, _, _ in recorder.accepted if g.generation >= 0] + recorder.rejected
    ids = sorted(g.id for g in children)
    assert ids == sorted(f"g{gen:06d}{suffix}" for gen in range(4)
                         for suffix in ("", "-001", "-002"))
    for gen in range(4):
        batch = [g for g in children if g.generation == gen]
        assert len({g.quality_task for g in batch}) == 1
        assert len({g.seed for g in batch}) == 3
    assert [s.generation for s in recorder.summaries] == list(range(5))

    single = Recorder()  # the first child of a generation is the one-child generation's child
    CycleQD(spec_factory(budget={"generations": 1}), bank, tiny_model(), WeightProbe(bank),
            observer=single).run()
    (first,) = [g for g, _, _ in single.accepted if g.generation == 0] + single.rejected
    batched = next(g for g in children if g.id == "g000000")
    assert (batched.parents, batched.parent_weights, batched.seed) == (
        first.parents, first.parent_weights, first.seed)
    assert batched.recipe.to_dict() == first.recipe.to_dict()


def _assert_same(got, want, label):
    assert got.keys() == want.keys(), label
    for key, value in want.items():
        if key in ("tensors", "weights"):
            assert got[key].keys() == value.keys(), (label, key)
            for name, tensor in value.items():
                assert torch.equal(got[key][name], tensor), (label, key, name)
        else:
            assert got[key] == value, (label, key)


LINEAR = {"algorithm": {"childrenPerGeneration": 3}, "budget": {"generations": 6,
          "maxFailedEvaluations": 50}, "checkpoint": {"everyGenerations": 2}}
TIES = {"algorithm": {"childrenPerGeneration": 3, "crossover": {"method": "ties"},
                      "mutation": {"method": "gaussian"}, "sampling": {"method": "random"}},
        "budget": {"generations": 14}, "checkpoint": {"everyGenerations": 5}}
SPLIT = {**LINEAR, "budget": {**LINEAR["budget"], "generations": 3}}


def _importable_by_spawned_processes(monkeypatch, function):
    """Spawned processes unpickle `function` by its module name, which pytest's importlib
    mode makes relative to the first folder without __init__.py: put that on sys.path."""
    module = sys.modules[function.__module__]
    depth = function.__module__.count(".") + 1
    monkeypatch.syspath_prepend(str(Path(module.__file__).parents[depth - 1]))


def test_two_gloo_ranks_end_bit_for_bit_where_one_process_ends(tmp_path, bank, monkeypatch):
    _importable_by_spawned_processes(monkeypatch, run_rank)
    save_bank(bank, tmp_path / "bank.pt")
    linear, ties = Job("linear", LINEAR, "flaky-mixture"), Job("ties", TIES)
    jobs = [linear, ties, Job("split", SPLIT, "flaky-mixture")]
    mp.spawn(run_rank, args=(2, str(tmp_path), jobs), nprocs=2, join=True)

    results, want = {}, {}
    for job in (linear, ties):
        results[job.name], model = job.run(bank, tmp_path / "one-process", model_seed=0)
        want[job.name] = snapshot(results[job.name], model)
        two_ranks = torch.load(tmp_path / f"{job.name}.pt", weights_only=False)
        _assert_same(two_ranks, want[job.name], job.name)
    # started on two ranks for 3 generations, resumed here on one for the other 3
    resumed, model = Job("split", LINEAR, "flaky-mixture").run(bank, tmp_path, model_seed=5)
    _assert_same(snapshot(resumed, model), want["linear"], "split")

    assert results["linear"].state.failures > 0, "the flaky probe should fail some children"
    elites = {e.genome_id for a in results["linear"].state.archives.values() for e in a.elites()}
    assert any(g.startswith("g") and "-" in g for g in elites), "batched children became elites"
    store = results["ties"].state.store
    assert any(store.recipe(g).dense for g in store.ids), "deep TIES lineages get pinned"
