"""One reconcile pass with fake Kubernetes and MLflow clients: what the operator connects
to, how it ends the parent run, and what it says when a Job cannot create its Pods."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mendel.controller.config import OperatorConfig
from mendel.controller.runs import naming
from mendel.controller.runs.observed import JobView, Observed, PodView
from mendel.controller.runs.reconciler import end_tracking, reconcile
from mendel.controller.runtime.context import OperatorContext

from .builders import UID, wire_spec
from .test_reconciler import FakeMlflow

OWN = "http://mlflow.mlflow:5000"
DRIVER = naming.child_name("demo", "driver", UID, 0)


class FakeKube:
    """The KubeGateway calls a pass makes, recorded."""

    def __init__(self, failures: dict[str, tuple[str, str]] | None = None) -> None:
        self.created: list[dict[str, Any]] = []
        self.failures = failures or {}
        self.asked: list[str] = []

    def create_all(self, objects: Any) -> list[str]:
        self.created.extend(objects)
        return []

    def delete_jobs(self, namespace: str, names: Any) -> list[str]:
        return list(names)

    def job_create_failures(self, namespace: str, names: Any) -> dict[str, tuple[str, str]]:
        self.asked.extend(names)
        return {n: self.failures[n] for n in names if n in self.failures}


class Factory:
    """An MLflow client factory that records every URI the operator connects to."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self.client = FakeMlflow()

    def __call__(self, uri: str) -> FakeMlflow:
        self.uris.append(uri)
        return self.client


def _ctx(kube: FakeKube | None = None, **config: Any) -> tuple[OperatorContext, Factory]:
    factory = Factory()
    settings = OperatorConfig(tracking_uri=OWN, namespaces=("team-a",), **config)
    return OperatorContext(config=settings, kube=kube or FakeKube(),  # type: ignore[arg-type]
                           client_factory=factory), factory


def _body(name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {"kind": "QDEvolution", "spec": wire_spec("QDEvolution", **spec), "status": {},
            "metadata": {"name": name, "namespace": "team-a", "uid": UID, "generation": 1}}


def _cond(patch: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in patch["conditions"] if c["type"] == kind)


@pytest.mark.parametrize("uri", [
    pytest.param("http://attacker.example:80", id="another-server"),
    pytest.param("https://user:secret@mlflow.mlflow:5000", id="own-host-other-credentials"),
    pytest.param("sqlite:////var/run/operator.db", id="operator-filesystem"),
])
def test_a_tracking_uri_outside_the_allow_list_is_refused_before_any_connection(
        uri: str) -> None:
    kube = FakeKube()
    ctx, factory = _ctx(kube)
    outcome = asyncio.run(reconcile(ctx, _body(tracking={"mlflow": {"trackingUri": uri}}),
                                    Observed()))
    assert factory.uris == [] and kube.created == []
    failed = _cond(outcome.patch, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidSpec")
    assert failed["message"].startswith("spec.tracking.mlflow.trackingUri: ")
    assert "secret" not in failed["message"]  # credentials in a URI never reach status
    assert outcome.invalid
    asyncio.run(end_tracking(ctx, _body(tracking={"mlflow": {"trackingUri": uri}})))
    assert uri not in factory.uris


def test_allowed_tracking_uris_include_the_default_and_the_listed_ones() -> None:
    other = "http://mlflow.team-b:5000/"
    ctx, factory = _ctx(allowed_tracking_uris=(OWN, other.rstrip("/")))
    outcome = asyncio.run(reconcile(ctx, _body(tracking={"mlflow": {"trackingUri": other}}),
                                    Observed()))
    assert outcome.invalid is None and factory.uris == [other]
    ctx, factory = _ctx()
    asyncio.run(reconcile(ctx, _body(), Observed()))
    assert factory.uris == [OWN]


@pytest.mark.parametrize(("job", "phase", "mlflow_status"), [
    pytest.param(JobView(DRIVER, "driver", 0, succeeded=1,
                         conditions={"Complete": ("True", "", "")}), "Succeeded", "FINISHED",
                 id="succeeded"),
    pytest.param(JobView(DRIVER, "driver", 0, failed=1,
                         conditions={"Failed": ("True", "BackoffLimitExceeded", "")}),
                 "Failed", "FAILED", id="failed"),
])
def test_the_parent_run_ends_with_the_outcome_exactly_once(job: JobView, phase: str,
                                                           mlflow_status: str) -> None:
    ctx, factory = _ctx()
    body = _body()
    asyncio.run(reconcile(ctx, body, Observed(jobs=(JobView(DRIVER, "driver", 0, active=1),))))
    (run,) = factory.client.runs.values()
    assert run.info.status == "RUNNING"
    calls: list[str] = []
    terminate = factory.client.set_terminated
    factory.client.set_terminated = lambda rid, status: (calls.append(status),  # type: ignore
                                                         terminate(rid, status))
    for _ in range(3):
        outcome = asyncio.run(reconcile(ctx, body, Observed(jobs=(job,))))
        assert outcome.patch.get("phase", phase) == phase
    assert run.info.status == mlflow_status and calls == [mlflow_status]
    asyncio.run(end_tracking(ctx, body))  # deleting the finished resource
    assert run.info.status == mlflow_status and calls == [mlflow_status]


def test_a_finished_run_resumed_by_a_new_attempt_is_running_again() -> None:
    ctx, factory = _ctx()
    asyncio.run(reconcile(ctx, _body(), Observed()))
    (run,) = factory.client.runs.values()
    run.info.status = "FINISHED"
    factory.client.update_run = lambda rid, status: setattr(  # type: ignore[attr-defined]
        factory.client.runs[rid].info, "status", status)
    asyncio.run(reconcile(ctx, _body(), Observed(jobs=(JobView(DRIVER, "driver", 0,
                                                               active=1),))))
    assert run.info.status == "RUNNING"


def test_a_job_that_cannot_create_pods_says_why_in_status() -> None:
    message = 'Error creating: pods "x" is forbidden: serviceaccount "gone" not found'
    kube = FakeKube({DRIVER: ("FailedCreate", message)})
    ctx, _ = _ctx(kube)
    outcome = asyncio.run(reconcile(ctx, _body(), Observed(jobs=(JobView(DRIVER, "driver", 0),))))
    running = _cond(outcome.patch, "Running")
    assert running["reason"] == "FailedCreate"
    assert message in running["message"] and DRIVER in running["message"]
    (change,) = [t for t in outcome.plan.reduced.transitions if t.type == "Running"]
    assert change.warning
    # A Job whose Pod exists (or that runs) costs no Event lookup.
    kube.asked.clear()
    asyncio.run(reconcile(ctx, _body(), Observed(
        jobs=(JobView(DRIVER, "driver", 0, active=1),),
        pods=(PodView("p", "driver", "Running", job=DRIVER),))))
    assert kube.asked == []


@pytest.mark.parametrize("name", ["with.dots", "x" * 64])
def test_a_name_the_children_cannot_carry_fails_without_children(name: str) -> None:
    kube = FakeKube()
    ctx, factory = _ctx(kube)
    outcome = asyncio.run(reconcile(ctx, _body(name), Observed()))
    assert kube.created == [] and factory.uris == []
    failed = _cond(outcome.patch, "Failed")
    assert failed["message"].startswith("metadata.name: must be a DNS-1035 label")
    assert "no dots" in failed["message"] and "at most 40 characters" in failed["message"]


def test_a_restart_gets_its_own_mlflow_run_linked_to_the_previous_one() -> None:
    from mendel.tracking import contract

    from .test_plan import snapshot

    ctx, factory = _ctx()
    restart = {"backoffLimit": 3, "onSpecChange": "Restart"}
    body = _body(runPolicy=restart)
    first = asyncio.run(reconcile(ctx, body, Observed(
        jobs=(JobView(DRIVER, "driver", 0, active=1),), snapshots=(snapshot(),))))
    (old,) = factory.client.runs.values()
    body = {**_body(seed=7, runPolicy=restart), "status": first.plan.reduced.status}
    ctx.statuses.clear()
    second = asyncio.run(reconcile(ctx, body, Observed(
        jobs=(JobView(DRIVER, "driver", 0, active=1),), snapshots=(snapshot(),))))
    assert second.plan.run_index == 1 and second.plan.deletes == (DRIVER,)
    new = next(r for r in factory.client.runs.values() if r is not old)
    assert new.data.tags[contract.TAG_RUN_INDEX] == "1"
    assert new.data.tags[contract.TAG_PREVIOUS_RUN_ID] == old.info.run_id
    assert old.info.status == "KILLED"  # stopped with its Jobs
    status = second.plan.reduced.status
    assert status["mlflow"]["runId"] == new.info.run_id
    assert [(r["run"], r.get("runId")) for r in status["history"]] == [
        (0, old.info.run_id), (1, new.info.run_id)]
