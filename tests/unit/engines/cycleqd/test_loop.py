from __future__ import annotations

import math

import pytest

from mendel.engines.cycleqd import (
    CheckpointMismatchError,
    CycleQD,
    CycleQDError,
    NullObserver,
    TooManyFailedEvaluations,
    latest_checkpoint,
    quality_task,
)

from .conftest import TASKS, WeightProbe, tiny_model


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        pytest.param(1, ["a", "b", "c", "a", "b", "c", "a"], id="every-generation"),
        pytest.param(2, ["a", "a", "b", "b", "c", "c", "a"], id="every-second"),
        pytest.param(3, ["a", "a", "a", "b", "b", "b", "c"], id="every-third"),
    ],
)
def test_quality_task_cycles(interval, expected):
    assert [quality_task(g, ["a", "b", "c"], interval) for g in range(7)] == expected


class Recorder(NullObserver):
    def __init__(self):
        self.summaries, self.accepted, self.rejected, self.failed = [], [], [], []
        self.checkpoints, self.finished = [], []

    def on_generation(self, summary):
        self.summaries.append(summary)

    def on_child_accepted(self, genome, scores, cells):
        self.accepted.append((genome, dict(scores), dict(cells)))

    def on_child_rejected(self, genome, scores):
        self.rejected.append(genome)

    def on_child_failed(self, genome, error):
        self.failed.append((genome.id, str(error)))

    def on_checkpoint(self, path):
        self.checkpoints.append(path.name)

    def on_finished(self, final, scores):
        self.finished.append((final, scores))


def test_run_reports_every_generation_and_child(tmp_path, bank, spec_factory):
    spec = spec_factory(algorithm={"cycleInterval": 2})
    recorder = Recorder()
    result = CycleQD(
        spec, bank, tiny_model(), WeightProbe(bank), checkpoint_dir=tmp_path, observer=recorder
    ).run()
    assert [s.generation for s in recorder.summaries] == list(range(13))
    children = [g for g, _, _ in recorder.accepted if g.generation >= 0] + recorder.rejected
    assert sorted(g.id for g in children) == [f"g{i:06d}" for i in range(12)]
    assert [g.quality_task for g in sorted(children, key=lambda g: g.generation)] == [
        t for t in ("task-a", "task-b", "task-c") for _ in range(2)
    ] * 2
    assert recorder.checkpoints == [f"gen-{i:06d}" for i in (0, 3, 6, 9, 12)]
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["gen-000009", "gen-000012"]
    final, scores = recorder.finished[0]
    assert final is result.final and scores == result.final_scores
    assert set(scores) == set(TASKS) and final.operator == "aggregate"
    last = recorder.summaries[-1]
    assert last.cells == 3 * 25 and last.filled >= 3 and last.failed == 0
    assert last.qd_score == pytest.approx(sum(a.qd_score for a in last.archives))


def test_run_without_checkpoint_dir_is_deterministic(bank, spec_factory):
    spec = spec_factory(budget={"generations": 5})
    runs = [CycleQD(spec, bank, tiny_model(), WeightProbe(bank)).run() for _ in range(2)]
    assert [r.state.archives["task-a"].to_dict() for r in runs][0] == runs[1].state.archives[
        "task-a"
    ].to_dict()
    assert runs[0].final.to_dict() == runs[1].final.to_dict()


class Flaky(WeightProbe):
    def __init__(self, bank, failing_calls, nan=False):
        super().__init__(bank)
        self.failing_calls, self.nan = failing_calls, nan

    def __call__(self, model):
        scores = super().__call__(model)
        if self.calls in self.failing_calls:
            if self.nan:
                return {**scores, "task-b": math.nan}
            raise RuntimeError(f"evaluator crashed on call {self.calls}")
        return scores


@pytest.mark.parametrize("nan", [pytest.param(False, id="raises"), pytest.param(True, id="nan")])
def test_failed_evaluations_are_counted_within_budget(bank, spec_factory, nan):
    spec = spec_factory(budget={"generations": 6, "maxFailedEvaluations": 2})
    recorder = Recorder()
    result = CycleQD(spec, bank, tiny_model(), Flaky(bank, {5, 7}, nan), observer=recorder).run()
    assert [gid for gid, _ in recorder.failed] == ["g000001", "g000003"]
    assert result.summary.failed == 2


def test_too_many_failures_stop_with_clear_error_after_checkpoint(tmp_path, bank, spec_factory):
    spec = spec_factory(budget={"generations": 6, "maxFailedEvaluations": 1})
    runner = CycleQD(spec, bank, tiny_model(), Flaky(bank, {5, 7}), checkpoint_dir=tmp_path)
    with pytest.raises(TooManyFailedEvaluations, match="2 children failed evaluation"):
        runner.run()
    assert latest_checkpoint(tmp_path).name == "gen-000004"


def test_failing_expert_evaluation_is_fatal(bank, spec_factory):
    with pytest.raises(CycleQDError, match="evaluating expert 'alpha' failed"):
        CycleQD(spec_factory(), bank, tiny_model(), Flaky(bank, {1})).run()


def test_resume_refuses_another_runs_checkpoint(tmp_path, bank, spec_factory):
    CycleQD(
        spec_factory(budget={"generations": 1}),
        bank,
        tiny_model(),
        WeightProbe(bank),
        checkpoint_dir=tmp_path,
    ).run()
    other = spec_factory(budget={"generations": 2}, seed=4)
    with pytest.raises(CheckpointMismatchError, match="another run"):
        CycleQD(other, bank, tiny_model(), WeightProbe(bank), checkpoint_dir=tmp_path).run()


def test_runner_rejects_spec_expert_missing_from_bank(bank, spec_factory):
    from mendel.engines.cycleqd import TaskVectorBank

    partial = TaskVectorBank(bank.base, {"alpha": bank.task_vectors["alpha"]}, bank.svd)
    with pytest.raises(ValueError, match="expert 'beta' has no task vector"):
        CycleQD(spec_factory(), partial, tiny_model(), WeightProbe(bank))
