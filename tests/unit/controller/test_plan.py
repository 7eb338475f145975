"""The reconcile plan: creates, deletes, attempts and refusals from observed data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mendel.api.kinds import KINDS
from mendel.api.mutability import changed_immutable_fields
from mendel.api.validation import InvalidResource, parse_spec
from mendel.controller.config import OperatorConfig
from mendel.controller.runs import manifests, naming
from mendel.controller.runs.manifests import JobInputs
from mendel.controller.runs.observed import JobView, Observed, PodView, SnapshotView
from mendel.controller.runs.plan import PlanInputs, plan_run
from mendel.tracking.runs import RunSnapshot

from .builders import UID, parsed, run_ref, wire_spec

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RUN = RunSnapshot(run_id="r" * 32, experiment_id="1")
COMPLETE = {"Complete": ("True", "", "")}
BUDGET = parsed("QDEvolution").budget.generations  # the example's generations


def name(role: str, attempt: int = 0) -> str:
    return naming.child_name("demo", role, UID, attempt)


def snapshot(attempt: int = 0, budget: int = BUDGET, **spec: Any) -> SnapshotView:
    wire = wire_spec("QDEvolution", **spec)
    cm = manifests.config_map(JobInputs(run=run_ref(), spec=parsed("QDEvolution", **spec),
                                        attempt=attempt, budget=budget), wire)
    return SnapshotView(name=cm["metadata"]["name"], attempt=attempt, budget=budget,
                        data=cm["data"]["resource.yaml"])


def plan(observed: Observed | None = None, previous: dict[str, Any] | None = None,
         run: RunSnapshot = RUN, **spec: Any) -> Any:
    wire = wire_spec("QDEvolution", **spec)
    try:
        parsed_spec, invalid = parse_spec(KINDS["QDEvolution"], wire), None
    except InvalidResource as error:
        parsed_spec, invalid = None, str(error)
    return plan_run(PlanInputs(run=run_ref(), spec_wire=wire, spec=parsed_spec,
                               observed=observed or Observed(), mlflow=run, previous=previous or {},
                               now=NOW, config=OperatorConfig(image="img"), invalid=invalid))


def test_plan_fresh_resource_creates_snapshot_then_job() -> None:
    result = plan()
    assert [(o["kind"], o["metadata"]["name"]) for o in result.creates] == [
        ("ConfigMap", name("spec")), ("Job", name("driver"))]
    job = result.creates[1]
    assert job["metadata"]["annotations"][naming.ANNOTATION_BUDGET] == str(BUDGET)
    assert result.reduced.status["phase"] == "Pending"


def test_plan_is_idempotent_once_children_exist() -> None:
    observed = Observed(jobs=(JobView(name("driver"), "driver", 0, active=1),),
                        pods=(PodView(name("driver") + "-a", "driver", "Running",
                                      job=name("driver")),),
                        snapshots=(snapshot(),))
    result = plan(observed)
    assert result.creates == () and result.deletes == ()
    assert result.reduced.status["phase"] == "Running"


def test_plan_without_mlflow_still_creates_the_job_without_run_id() -> None:
    result = plan(run=RunSnapshot(error="down"))
    job = result.creates[-1]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    assert env["MENDEL_RUN_ID"] == ""


def test_plan_invalid_spec_creates_nothing() -> None:
    result = plan(tasks=[])
    assert result.creates == () and result.reduced.status["phase"] == "Failed"


@pytest.mark.parametrize(("job_fields", "deletes"), [
    pytest.param({"active": 1}, True, id="running-job-deleted"),
    pytest.param({"conditions": COMPLETE, "succeeded": 1}, False, id="finished-job-kept"),
])
def test_plan_suspend_deletes_unfinished_jobs(job_fields: dict[str, Any], deletes: bool) -> None:
    observed = Observed(jobs=(JobView(name("driver"), "driver", 0, **job_fields),),
                        snapshots=(snapshot(),))
    result = plan(observed, suspend=True)
    assert result.deletes == ((name("driver"),) if deletes else ())
    assert result.creates == ()


def test_plan_resume_recreates_the_same_job() -> None:
    previous = {"phase": "Suspended", "startTime": "2026-01-01T11:00:00Z"}
    result = plan(Observed(snapshots=(snapshot(),)), previous)
    assert [o["metadata"]["name"] for o in result.creates] == [name("driver")]


def test_plan_budget_increase_on_succeeded_run_starts_a_new_attempt() -> None:
    observed = Observed(jobs=(JobView(name("driver"), "driver", 0, succeeded=1,
                                      conditions=COMPLETE, budget=BUDGET),),
                        snapshots=(snapshot(budget=BUDGET),))
    assert plan(observed).creates == ()  # same budget: finished, nothing to do
    result = plan(observed, budget={"generations": 2 * BUDGET})
    assert result.attempt == 1
    assert [o["metadata"]["name"] for o in result.creates] == [name("spec", 1), name("driver", 1)]
    assert result.reduced.status["phase"] == "Pending"


def test_plan_refuses_an_immutable_change_and_names_the_field() -> None:
    observed = Observed(snapshots=(snapshot(),))
    result = plan(observed, seed=7)
    assert result.creates == ()
    assert result.refused is not None and "spec.seed" in result.refused
    admitted = next(c for c in result.reduced.status["conditions"] if c["type"] == "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "ImmutableFieldChanged")


def test_plan_deadline_deletes_the_running_job() -> None:
    observed = Observed(jobs=(JobView(name("driver"), "driver", 0, active=1),),
                        snapshots=(snapshot(),))
    previous = {"startTime": "2026-01-01T10:00:00Z"}
    result = plan(observed, previous, runPolicy={"activeDeadlineSeconds": 3600})
    assert result.deletes == (name("driver"),)
    assert result.reduced.status["phase"] == "Failed"


@pytest.mark.parametrize(("change", "fields"), [
    pytest.param({"seed": 1}, ["spec.seed"], id="seed"),
    pytest.param({"scheduling": {"queueName": "other"}}, ["spec.scheduling.queueName"],
                 id="nested-queue"),
    pytest.param({"budget": {"generations": 999}}, [], id="budget-is-mutable"),
    pytest.param({"suspend": True}, [], id="suspend-is-mutable"),
])
def test_changed_immutable_fields(change: dict[str, Any], fields: list[str]) -> None:
    assert changed_immutable_fields(parsed("QDEvolution"), parsed("QDEvolution", **change)) \
        == fields


RESTART = {"backoffLimit": 3, "onSpecChange": "Restart"}


def test_plan_restart_policy_turns_an_experiment_change_into_a_new_run() -> None:
    running = Observed(jobs=(JobView(name("driver"), "driver", 0, active=1),),
                       pods=(PodView(name("driver") + "-a", "driver", "Running",
                                     job=name("driver")),),
                       snapshots=(snapshot(),))
    previous = {"run": 0, "phase": "Running", "startTime": "2026-01-01T11:00:00Z",
                "history": [{"run": 0, "generation": 1, "phase": "Running", "runId": "r0"}]}
    result = plan(running, previous=previous, seed=7, runPolicy=RESTART)
    assert result.refused is None and (result.attempt, result.run_index) == (1, 1)
    assert result.deletes == (name("driver", 0),)  # the old run's Job is stopped
    assert [(o["kind"], o["metadata"]["name"]) for o in result.creates] == [
        ("ConfigMap", name("spec", 1)), ("Job", name("driver", 1))]
    for child in result.creates:
        assert child["metadata"]["annotations"][naming.ANNOTATION_RUN] == "1"
    status = result.reduced.status
    assert status["run"] == 1 and status["phase"] == "Pending"
    assert "startTime" not in status  # the new run has not started yet
    assert [(r["run"], r["phase"]) for r in status["history"]] == [(0, "Superseded"),
                                                                    (1, "Pending")]


def test_plan_refuse_policy_keeps_refusing_the_same_change() -> None:
    running = Observed(jobs=(JobView(name("driver"), "driver", 0, active=1),),
                       snapshots=(snapshot(),))
    result = plan(running, seed=7)
    assert result.refused and "spec.seed" in result.refused
    assert (result.attempt, result.run_index) == (0, 0)
    assert result.deletes == () and result.creates == ()


def test_plan_new_run_is_stable_once_its_snapshot_exists() -> None:
    """The pass after a restart sees the new snapshot and asks for nothing new."""
    new = snapshot(1, seed=7, runPolicy=RESTART)
    new = SnapshotView(new.name, 1, new.budget, new.data, run=1)
    observed = Observed(jobs=(JobView(name("driver", 0), "driver", 0, deleting=True),
                              JobView(name("driver", 1), "driver", 1, active=1, run=1)),
                        snapshots=(snapshot(), new))
    result = plan(observed, previous={"run": 1}, seed=7, runPolicy=RESTART)
    assert (result.attempt, result.run_index) == (1, 1)
    assert result.creates == () and result.deletes == ()


def test_job_env_and_output_carry_the_run_index() -> None:
    inputs = JobInputs(run=run_ref(), spec=parsed("QDEvolution", output={"uri": "s3://b/x"}),
                       run_index=2)
    assert inputs.output_uri.endswith(f"/{UID}/run-2")
    env = {e["name"]: e.get("value") for e in
           manifests.driver_job(inputs)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MENDEL_RUN_INDEX"] == "2"
