"""The status reducer: phase, conditions, times, progress and summaries from observed data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mendel.controller.runs import naming
from mendel.controller.runs.observed import JobView, Observed, PodView
from mendel.controller.runs.status import Meta, reduce_status
from mendel.tracking import contract
from mendel.tracking.runs import RunSnapshot

from .builders import UID, parsed

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T0 = "2026-01-01T11:00:00Z"
DRIVER = naming.child_name("demo", "driver", UID, 0)
RUN = RunSnapshot(run_id="r" * 32, experiment_id="7", url="http://m/#/experiments/7/runs/r",
                  metrics={contract.METRIC_PROGRESS_STEP: 30, contract.METRIC_PROGRESS_TOTAL: 60})


def job(**fields: Any) -> JobView:
    base: dict[str, Any] = {"name": DRIVER, "role": "driver", "attempt": 0, "start_time": T0}
    return JobView(**{**base, **fields})


def pod(**fields: Any) -> PodView:
    return PodView(**{"name": f"{DRIVER}-x1", "role": "driver", "job": DRIVER, **fields})


FAILED_BACKOFF = {"Failed": ("True", "BackoffLimitExceeded", "Job has reached the backoff")}
FAILED_DEADLINE = {"Failed": ("True", "DeadlineExceeded", "Job was active longer")}
COMPLETE = {"Complete": ("True", "", "")}
UNSCHEDULABLE = ("False", "Unschedulable", "0/1 nodes are available: 1 Insufficient "
                 "nvidia.com/gpu.")

CASES = [
    pytest.param({}, (), (), "Pending", "Running", "False", "Creating", id="pending-no-job"),
    pytest.param({}, (job(),), (), "Pending", "Running", "False", "PodsPending",
                 id="pending-job-no-pod"),
    pytest.param({}, (job(active=1),), (pod(scheduled=UNSCHEDULABLE),), "Pending", "Running",
                 "False", "Unschedulable", id="unschedulable"),
    pytest.param({}, (job(active=1),), (pod(phase="Running"),), "Running", "Running", "True",
                 "Running", id="running"),
    pytest.param({}, (job(active=1, failed=2),), (pod(phase="Running"),), "Running",
                 "Running", "True", "Running", id="retry"),
    pytest.param({}, (job(succeeded=1, conditions=COMPLETE),),
                 (pod(phase="Succeeded", exit_code=0,
                      termination_message='{"reason": "BudgetExhausted"}'),),
                 "Succeeded", "Complete", "True", "BudgetExhausted", id="complete"),
    pytest.param({}, (job(failed=4, conditions=FAILED_BACKOFF),),
                 (pod(phase="Failed", exit_code=1, termination_message="oom"),),
                 "Failed", "Failed", "True", "BackoffLimitExceeded", id="failed-backoff"),
    pytest.param({}, (job(failed=1, conditions=FAILED_BACKOFF),),
                 (pod(phase="Failed", exit_code=2, termination_message="bad spec"),),
                 "Failed", "Failed", "True", "InvalidSpec", id="failed-exit-2"),
    pytest.param({}, (job(conditions=FAILED_DEADLINE),), (), "Failed", "Failed", "True",
                 "DeadlineExceeded", id="job-deadline"),
    pytest.param({"runPolicy": {"activeDeadlineSeconds": 600}}, (job(active=1),),
                 (pod(phase="Running"),), "Failed", "Failed", "True", "DeadlineExceeded",
                 id="run-deadline"),
    pytest.param({"suspend": True}, (), (), "Suspended", "Suspended", "True", "SuspendedByUser",
                 id="suspended"),
    pytest.param({"scheduling": {"queueName": "q"}}, (job(suspended=True),), (), "Queued",
                 "Admitted", "False", "WaitingForQuota", id="queued"),
    pytest.param({"scheduling": {"queueName": "q"}}, (job(active=1),), (pod(phase="Running"),),
                 "Running", "Admitted", "True", "QuotaReserved", id="admitted"),
]


@pytest.mark.parametrize(("spec", "jobs", "pods", "phase", "kind", "status", "reason"), CASES)
def test_reduce_status_phase_and_condition(spec: dict[str, Any], jobs: tuple[JobView, ...],
                                           pods: tuple[PodView, ...], phase: str, kind: str,
                                           status: str, reason: str) -> None:
    reduced = reduce_status(meta=Meta("QDEvolution", 3, UID), spec=parsed("QDEvolution", **spec),
                            observed=Observed(jobs=jobs, pods=pods), run=RUN,
                            previous={"startTime": T0} if spec.get("runPolicy") else {},
                            now=NOW, driver_job=DRIVER)
    st = reduced.status
    assert st["phase"] == phase
    conditions = {c["type"]: c for c in st["conditions"]}
    assert set(conditions) == {"Admitted", "Running", "Suspended", "Complete", "Failed",
                               "TrackingReady", "Ready", "Stalled"}
    assert (conditions[kind]["status"], conditions[kind]["reason"]) == (status, reason)
    assert all(c["observedGeneration"] == 3 and c["message"] for c in st["conditions"])
    assert st["observedGeneration"] == 3
    assert ("completionTime" in st) is (phase in ("Succeeded", "Failed"))


def test_reduce_status_unschedulable_message_is_the_pods() -> None:
    reduced = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                            observed=Observed((job(active=1),), (pod(scheduled=UNSCHEDULABLE),)),
                            run=RUN, previous={}, now=NOW, driver_job=DRIVER)
    running = next(c for c in reduced.status["conditions"] if c["type"] == "Running")
    assert "Insufficient nvidia.com/gpu" in running["message"]


def test_reduce_status_invalid_spec_fails_with_the_field_path() -> None:
    reduced = reduce_status(meta=Meta("QDEvolution", 1), spec=None, observed=Observed(),
                            run=RunSnapshot(), previous={}, now=NOW,
                            invalid="spec.tasks[0].expert: names no expert")
    conditions = {c["type"]: c for c in reduced.status["conditions"]}
    assert reduced.status["phase"] == "Failed"
    assert conditions["Failed"]["reason"] == "InvalidSpec"
    assert "spec.tasks[0].expert" in conditions["Failed"]["message"]
    assert any(t.type == "Failed" and t.warning for t in reduced.transitions)


def test_reduce_status_mlflow_down_keeps_the_last_mirror() -> None:
    previous = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                             observed=Observed((job(active=1),), (pod(phase="Running"),)),
                             run=RUN, previous={}, now=NOW, driver_job=DRIVER).status
    down = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                         observed=Observed((job(active=1),), (pod(phase="Running"),)),
                         run=RunSnapshot(error="ConnectionError: refused"), previous=previous,
                         now=NOW + timedelta(seconds=30), driver_job=DRIVER)
    tracking = next(c for c in down.status["conditions"] if c["type"] == "TrackingReady")
    assert (tracking["status"], tracking["reason"]) == ("False", "MLflowUnavailable")
    assert down.status["phase"] == "Running"  # tracking outages never fail the run
    assert down.status["mlflow"]["runId"] == "r" * 32
    assert down.status["progress"] == previous["progress"]
    assert [t.type for t in down.transitions] == ["TrackingReady"]


def test_reduce_status_keeps_transition_time_of_unchanged_conditions() -> None:
    observed = Observed((job(active=1),), (pod(phase="Running"),))
    first = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                          observed=observed, run=RUN, previous={}, now=NOW, driver_job=DRIVER)
    later = NOW + timedelta(minutes=5)
    second = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                           observed=observed, run=RUN, previous=first.status, now=later,
                           driver_job=DRIVER)
    assert second.transitions == ()
    assert second.status["conditions"] == first.status["conditions"]
    # First appearance: Events only for the True conditions (Admitted, Running,
    # TrackingReady), not for "not suspended / not complete / not failed".
    assert sorted(t.type for t in first.transitions) == ["Admitted", "Running", "TrackingReady"]


def test_reduce_status_progress_and_eta() -> None:
    reduced = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                            observed=Observed((job(active=1),), (pod(phase="Running"),)),
                            run=RUN, previous={}, now=NOW, driver_job=DRIVER)
    progress = reduced.status["progress"]
    assert (progress["step"], progress["total"], progress["percent"]) == (30, 60, 50)
    assert progress["estimatedRemainingSeconds"] == 3600  # 30 steps took an hour


def test_reduce_status_qd_summary_checkpoint_and_mlflow() -> None:
    metrics = {contract.METRIC_QD_CELLS: 450, contract.METRIC_QD_FILLED: 90,
               contract.METRIC_QD_COVERAGE: 0.2, contract.METRIC_QD_SCORE: 41.5,
               contract.best_metric("add"): 0.75, contract.best_metric("sort"): 0.5}
    tags = {contract.TAG_CHECKPOINT_URI: "s3://b/ckpt-40", contract.TAG_CHECKPOINT_STEP: "40"}
    run = RunSnapshot(run_id="r" * 32, experiment_id="7", metrics=metrics, tags=tags)
    st = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                       observed=Observed((job(active=1),), (pod(phase="Running"),)), run=run,
                       previous={}, now=NOW, driver_job=DRIVER).status
    assert st["archive"]["cells"] == 450 and st["archive"]["filled"] == 90
    assert st["archive"]["coverage"] == "0.2" and st["archive"]["qdScore"] == "41.5"
    assert st["archive"]["best"] == [{"task": "add", "score": "0.75"},
                                     {"task": "sort", "score": "0.5"}]
    assert st["checkpoint"] == {"uri": "s3://b/ckpt-40", "step": 40}
    assert st["mlflow"] == {"experimentId": "7", "runId": "r" * 32}
    assert not any(m["name"].startswith("qd/best/") for m in st["metrics"])


def test_reduce_status_keeps_a_finished_run_after_its_jobs_are_cleaned_up() -> None:
    done = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                         observed=Observed((job(succeeded=1, conditions=COMPLETE,
                                                completion_time=T0),)),
                         run=RUN, previous={}, now=NOW, driver_job=DRIVER).status
    after_ttl = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                              observed=Observed(), run=RUN, previous=done,
                              now=NOW + timedelta(hours=1), driver_job=DRIVER)
    assert after_ttl.status["phase"] == "Succeeded"
    assert after_ttl.status["completionTime"] == T0
    assert after_ttl.transitions == ()


@pytest.mark.parametrize(("kind", "metrics", "block", "expected"), [
    pytest.param("ExperienceLibrary", {contract.METRIC_LIBRARY_SIZE: 12,
                                       contract.METRIC_SCORE_AFTER: 0.8},
                 "library", {"size": 12, "version": 0, "scoreAfter": "0.8"}, id="library"),
    pytest.param("CompressorTraining", {contract.METRIC_TRAIN_LOSS: 1.25}, "training",
                 {"loss": "1.25"}, id="training"),
])
def test_reduce_status_kind_summaries(kind: str, metrics: dict[str, float], block: str,
                                      expected: dict[str, Any]) -> None:
    run = RunSnapshot(run_id="r" * 32, experiment_id="1", metrics=metrics)
    st = reduce_status(meta=Meta(kind, 1), spec=parsed(kind), observed=Observed(), run=run,
                       previous={}, now=NOW).status
    assert st[block] == expected


def test_reduce_status_tracking_disabled_without_uri() -> None:
    st = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                       observed=Observed(), run=RunSnapshot(), previous={}, now=NOW).status
    tracking = next(c for c in st["conditions"] if c["type"] == "TrackingReady")
    assert tracking["reason"] == "TrackingDisabled"


def test_reduce_status_pending_to_running_posts_one_event() -> None:
    pending = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                            observed=Observed((job(),), ()), run=RUN, previous={}, now=NOW,
                            driver_job=DRIVER)
    running = reduce_status(meta=Meta("QDEvolution", 1), spec=parsed("QDEvolution"),
                            observed=Observed((job(active=1),), (pod(phase="Running"),)),
                            run=RUN, previous=pending.status, now=NOW + timedelta(seconds=5),
                            driver_job=DRIVER)
    assert [(t.type, t.status) for t in running.transitions] == [("Running", "True")]
