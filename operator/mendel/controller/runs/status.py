"""The status reducer: observed state in, the resource's whole status out.

`reduce_status` is a pure function of the spec, the resource's metadata, the observed
children (Jobs, Pods, snapshots), the MLflow snapshot, the previous status and the time.
Phase and conditions are recomputed from scratch on every pass (never a state machine);
the previous status only supplies lastTransitionTime of unchanged conditions, start and
completion times, and the last known MLflow mirror while MLflow is unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mendel.api.envelope import SpecEnvelope
from mendel.api.kinds import KINDS
from mendel.controller.runs import library, specs, summary
from mendel.controller.runs.observed import JobView, Observed, PodView
from mendel.tracking.runs import RunSnapshot

__all__ = ["CONDITION_TYPES", "SUMMARY_TYPES", "Meta", "Reduced", "Transition", "iso", "parse_time",
           "reduce_status"]

CONDITION_TYPES = ("Admitted", "Running", "Suspended", "Complete", "Failed", "TrackingReady",
                   "Ready", "Stalled")
# Summaries of the others for generic readers (Flux's kstatus, Helm 4 --wait, kubectl wait):
# they post no Events of their own, since the condition they mirror already did.
SUMMARY_TYPES = ("Ready", "Stalled")
TERMINAL = ("Succeeded", "Failed")
_WARNING_REASONS = {"Unschedulable", "ImmutableFieldChanged", "MLflowUnavailable", "FailedCreate"}

Cond = tuple[str, str, str]  # status, reason, message


@dataclass(frozen=True)
class Meta:
    """What the reducer needs of the resource's metadata."""

    kind: str
    generation: int
    uid: str = ""
    deleting: bool = False


@dataclass(frozen=True)
class Transition:
    """A condition that changed status or reason: one Kubernetes Event."""

    type: str
    status: str
    reason: str
    message: str
    previous: str | None = None

    @property
    def warning(self) -> bool:
        """Whether the Event should be of type Warning."""
        bad_truth = self.type == "Failed" and self.status == "True"
        bad_falsity = self.type == "TrackingReady" and self.status == "False"
        return bad_truth or bad_falsity or self.reason in _WARNING_REASONS


@dataclass(frozen=True)
class Reduced:
    """The new status (wire form) and the condition changes that led to it."""

    status: dict[str, Any]
    transitions: tuple[Transition, ...] = ()


@dataclass(frozen=True)
class _Derived:
    phase: str
    conditions: dict[str, Cond] = field(default_factory=dict)


def iso(when: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """Parse an RFC 3339 time; None for None or garbage."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def reduce_status(
    *,
    meta: Meta,
    spec: SpecEnvelope | None,
    observed: Observed,
    run: RunSnapshot,
    previous: Mapping[str, Any],
    now: datetime,
    invalid: str | None = None,
    refused: str | None = None,
    attempt: int = 0,
    driver_job: str | None = None,
    run_index: int = 0,
    library_config_map: str | None = None,
) -> Reduced:
    """Compute the status of a run resource.

    Args:
        meta: The resource's kind, generation and uid.
        spec: The parsed spec, or None when it is invalid.
        observed: The resource's child Jobs, Pods and spec snapshots.
        run: The MLflow parent run snapshot (with `error` set when MLflow is down).
        previous: The status as last written (wire form), or {}.
        now: The current time (timezone-aware).
        invalid: Why the spec is invalid (field paths), if it is.
        refused: Why a spec change was refused (an immutable field changed), if it was.
        attempt: The current attempt; only its children count.
        driver_job: Name of the attempt's driver (or leader) Job.
        run_index: Which run of the resource (one more per restart after a spec change).
        library_config_map: The ConfigMap the operator published the library to, if any.

    Returns:
        The new status and the condition transitions.
    """
    jobs = [j for j in observed.jobs if j.attempt == attempt]
    names = {j.name for j in jobs}
    if int(previous.get("run") or 0) != run_index:
        # A restart: times, phase and mirrored results of the replaced run do not carry over.
        previous = {k: v for k, v in previous.items() if k in ("conditions", "history", "run")}
    pods = [p for p in observed.pods if p.job in names]
    expected = 2 if spec is not None and specs.num_nodes(spec) > 1 else 1
    start = previous.get("startTime") or min(
        (j.start_time for j in jobs if j.start_time), default=None)
    derived = _derive(spec, invalid, jobs, pods, previous, expected, driver_job,
                      _deadline_passed(spec, start, now), observed.create_failures)
    conditions = dict(derived.conditions)
    conditions["Admitted"] = _admitted(spec, invalid, refused, jobs, previous, derived.phase)
    conditions["TrackingReady"] = _tracking(run)
    conditions["Ready"], conditions["Stalled"] = _readiness(derived.phase, conditions)
    status = _assemble(meta, spec, derived.phase, jobs, run, previous, now, start, driver_job)
    if meta.kind == "ExperienceLibrary":
        library.mark_published(status, library_config_map)
    status["conditions"], transitions = _conditions(conditions, previous, meta.generation, now)
    status["run"] = run_index
    status["history"] = _history(previous, status, run_index, meta.generation, now)
    validated = KINDS[meta.kind].status_model.model_validate(status)
    return Reduced(validated.to_wire(), transitions)


def _deadline_passed(spec: SpecEnvelope | None, start: str | None, now: datetime) -> bool:
    begun = parse_time(start)
    if spec is None or begun is None or spec.run_policy.active_deadline_seconds is None:
        return False
    return (now - begun).total_seconds() >= spec.run_policy.active_deadline_seconds


def _derive(spec: SpecEnvelope | None, invalid: str | None, jobs: Sequence[JobView],
            pods: Sequence[PodView], previous: Mapping[str, Any], expected: int,
            driver_job: str | None, deadline_passed: bool,
            observed_failures: Mapping[str, tuple[str, str]]) -> _Derived:
    if spec is None or invalid:
        return _terminal("Failed", ("True", "InvalidSpec", invalid or "spec is invalid"))
    failed = [j for j in jobs if j.failed_for_good]
    if failed:
        return _terminal("Failed", ("True", *_failure(failed[0], pods)))
    complete = [j for j in jobs if j.complete]
    if jobs and len(complete) >= expected:
        return _terminal("Succeeded", ("True", *_success(pods)))
    if not jobs and previous.get("phase") in TERMINAL and driver_job is not None \
            and (previous.get("children") or {}).get("driverJob") == driver_job:
        return _kept(previous)  # the Jobs were cleaned up (TTL) after the run finished
    if deadline_passed:
        seconds = spec.run_policy.active_deadline_seconds
        return _terminal("Failed", ("True", "DeadlineExceeded",
                                    f"the run took longer than {seconds} s"))
    if spec.suspend:
        return _derived("Suspended", ("False", "Suspended", "suspended by spec.suspend"),
                        suspended=("True", "SuspendedByUser",
                                   "spec.suspend is true: Pods removed; the run resumes "
                                   "from its last checkpoint when set back to false"))
    live = [j for j in jobs if not j.deleting]
    if not live:
        return _derived("Pending", ("False", "Creating", "creating the run's Jobs"))
    if any(j.suspended for j in live):
        return _derived("Queued", ("False", "Queued", "waiting for the queue to admit the Job"))
    if any(p.phase == "Running" for p in pods):
        restarts = sum(j.failed for j in live)
        note = f" (after {restarts} failed Pod(s))" if restarts else ""
        return _derived("Running", ("True", "Running", f"Pods are running{note}"))
    return _derived("Pending", _pending(pods, live, observed_failures))


# False conditions of a live run carry fixed reasons: an Event is posted per reason change,
# and a phase change must not post three Events that say nothing new.
_NOT_SUSPENDED: Cond = ("False", "NotSuspended", "the run is not suspended")
_NOT_COMPLETE: Cond = ("False", "InProgress", "the run has not finished")
_NOT_FAILED: Cond = ("False", "NoFailure", "the run has not failed")


def _derived(phase: str, running: Cond, suspended: Cond | None = None) -> _Derived:
    return _Derived(phase, {
        "Running": running,
        "Suspended": suspended or _NOT_SUSPENDED,
        "Complete": _NOT_COMPLETE,
        "Failed": _NOT_FAILED,
    })


def _terminal(phase: str, cond: Cond) -> _Derived:
    other = ("False", cond[1], "")
    return _Derived(phase, {
        "Running": ("False", "Finished", ""),
        "Suspended": ("False", "Finished", ""),
        "Complete": cond if phase == "Succeeded" else other,
        "Failed": cond if phase == "Failed" else other,
    })


def _kept(previous: Mapping[str, Any]) -> _Derived:
    conds = {c["type"]: (c["status"], c["reason"], c.get("message", ""))
             for c in previous.get("conditions") or [] if c.get("type") in CONDITION_TYPES}
    return _Derived(str(previous["phase"]), {
        t: conds.get(t, ("False", "Finished", ""))
        for t in ("Running", "Suspended", "Complete", "Failed")
    })


def _pending(pods: Sequence[PodView], jobs: Sequence[JobView] = (),
             create_failures: Mapping[str, tuple[str, str]] | None = None) -> Cond:
    for job in jobs:
        failure = (create_failures or {}).get(job.name)
        if failure and not any(p.job == job.name for p in pods):
            reason = failure[0] if failure[0].isalnum() else "FailedCreate"
            return ("False", reason, f"Job {job.name} cannot create its Pods: {failure[1]}")
    for pod in pods:
        if pod.scheduled and pod.scheduled[0] == "False":
            reason = pod.scheduled[1] or "Unschedulable"
            return ("False", reason, f"Pod {pod.name}: {pod.scheduled[2]}")
    if pods:
        return ("False", "PodStarting", f"Pod {pods[0].name} is {pods[0].phase}")
    return ("False", "PodsPending", "waiting for the Job's Pods")


def _summary_of(pods: Sequence[PodView]) -> tuple[str | None, int | None]:
    ended = [p for p in pods if p.exit_code is not None]
    if not ended:
        return None, None
    last = ended[-1]
    return last.termination_message, last.exit_code


def _failure(job: JobView, pods: Sequence[PodView]) -> tuple[str, str]:
    _, reason, message = job.conditions.get("Failed", ("True", "", ""))
    text, code = _summary_of(pods)
    detail = f"Job {job.name}: {message or reason}"
    if text:
        detail += f"; last Pod said: {text.strip()}"
    if code == 2:
        return "InvalidSpec", detail
    known = {"BackoffLimitExceeded", "DeadlineExceeded"}
    return (reason if reason in known else "ChildJobFailed"), detail


def _success(pods: Sequence[PodView]) -> tuple[str, str]:
    text, _ = _summary_of(pods)
    reason = "Completed"
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and str(parsed.get("reason", "")).isalnum():
            reason = str(parsed["reason"])
    return reason, (text or "").strip()


def _admitted(spec: SpecEnvelope | None, invalid: str | None, refused: str | None,
              jobs: Sequence[JobView], previous: Mapping[str, Any], phase: str) -> Cond:
    if spec is None or invalid:
        return ("False", "InvalidSpec", "the spec is invalid")
    if refused:
        return ("False", "ImmutableFieldChanged", refused)
    if not spec.scheduling.queue_name:
        return ("True", "NoQueue", "no queue: the Pods go straight to the scheduler")
    live = [j for j in jobs if not j.deleting]
    if any(not j.suspended for j in live):
        return ("True", "QuotaReserved", f"admitted by queue {spec.scheduling.queue_name}")
    if live:
        return ("False", "WaitingForQuota", f"queued in {spec.scheduling.queue_name}")
    for cond in previous.get("conditions") or []:
        if cond.get("type") == "Admitted" and phase in TERMINAL:
            return (cond["status"], cond["reason"], cond.get("message", ""))
    return ("False", "NotSubmitted", "no Job in the queue")


# A run that is accepted and executing (or done well) is Ready: a GitOps tool waiting for
# "healthy" must not block on a training run that takes days. Only "not acted on yet" and
# failure are not Ready; failure, and a spec change that is refused, are Stalled.
_READY_PHASES = ("Queued", "Running", "Suspended", "Succeeded")
_NOT_STALLED: Cond = ("False", "NotStalled", "the run is not stuck")


def _readiness(phase: str, conditions: Mapping[str, Cond]) -> tuple[Cond, Cond]:
    """Ready and Stalled, as kstatus reads them, from the phase and the other conditions."""
    admitted = conditions["Admitted"]
    if admitted[1] == "ImmutableFieldChanged":
        refused: Cond = ("True", admitted[1], admitted[2])
        return ("False", admitted[1], admitted[2]), refused
    if phase == "Failed":
        _, reason, message = conditions["Failed"]
        return ("False", reason, message), ("True", reason, message)
    if phase in _READY_PHASES:
        return ("True", phase, _READY_MESSAGES[phase]), _NOT_STALLED
    _, reason, message = conditions["Running"]  # Pending: why the Pods are not running
    return ("False", reason, message), _NOT_STALLED


_READY_MESSAGES = {
    "Queued": "admitted, waiting in its queue",
    "Running": "the run is running",
    "Suspended": "suspended by spec.suspend",
    "Succeeded": "the run succeeded",
}


def _tracking(run: RunSnapshot) -> Cond:
    if run.error:
        return ("False", "MLflowUnavailable",
                f"{run.error}; the run goes on and is attached when MLflow is back")
    if run.run_id:
        return ("True", "RunTracked", f"MLflow parent run {run.run_id}")
    return ("False", "TrackingDisabled", "no MLflow tracking URI is configured")


def _assemble(meta: Meta, spec: SpecEnvelope | None, phase: str, jobs: Sequence[JobView],
              run: RunSnapshot, previous: Mapping[str, Any], now: datetime,
              start: str | None, driver_job: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": meta.generation, "phase": phase}
    if start:
        status["startTime"] = start
    if phase in TERMINAL:
        done = previous.get("completionTime") if previous.get("phase") in TERMINAL else None
        ends = [j.completion_time for j in jobs if j.completion_time]
        status["completionTime"] = done or (max(ends) if ends else iso(now))
    began = parse_time(start)
    elapsed = (now - began).total_seconds() if began else None
    if run.run_id:
        status["progress"] = summary.progress(spec, run, elapsed=elapsed,
                                              finished=phase in TERMINAL)
        status["metrics"] = summary.latest_metrics(run)
        point = summary.checkpoint(run)
        if point:
            status["checkpoint"] = point
        status.update(summary.kind_summary(meta.kind, spec, run))
    else:
        for key in ("progress", "metrics", "checkpoint", "archive", "library", "training"):
            if previous.get(key) is not None:
                status[key] = previous[key]
    status["mlflow"] = summary.mlflow_status(run, previous.get("mlflow") or {})
    status["children"] = {
        "activeJobs": sum(1 for j in jobs if not j.finished and not j.deleting),
        "restarts": sum(j.failed for j in jobs),
    }
    if driver_job:
        status["children"]["driverJob"] = driver_job
    if spec is not None:
        role = specs.role_resources(spec)
        status["scheduling"] = {
            "admitted": any(not j.suspended and not j.deleting for j in jobs),
            "gpus": role.gpus * specs.num_nodes(spec),
        }
        if spec.scheduling.queue_name:
            status["scheduling"]["queueName"] = spec.scheduling.queue_name
    return status


MAX_HISTORY = 10


def _history(previous: Mapping[str, Any], status: Mapping[str, Any], run_index: int,
             generation: int, now: datetime) -> list[dict[str, Any]]:
    """The latest runs, oldest first: the earlier ones as they ended, then this one.

    A run replaced by a restart before it finished is recorded as Superseded.
    """
    earlier = []
    for record in previous.get("history") or []:
        if record.get("run", 0) >= run_index:
            continue
        record = dict(record)
        if record.get("phase") not in TERMINAL:
            record["phase"] = "Superseded"
        record.setdefault("completionTime", iso(now))
        earlier.append(record)
    same = [r for r in previous.get("history") or [] if r.get("run") == run_index]
    current: dict[str, Any] = {
        "run": run_index,
        "generation": same[0].get("generation", generation) if same else generation,
        "phase": status["phase"],
    }
    for key, value in (("runId", (status.get("mlflow") or {}).get("runId")),
                       ("startTime", status.get("startTime")),
                       ("completionTime", status.get("completionTime"))):
        if value:
            current[key] = value
    return (earlier + [current])[-MAX_HISTORY:]


def _conditions(new: Mapping[str, Cond], previous: Mapping[str, Any], generation: int,
                now: datetime) -> tuple[list[dict[str, Any]], tuple[Transition, ...]]:
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    out, transitions = [], []
    for kind in CONDITION_TYPES:
        status, reason, message = new[kind]
        # Never an empty message: the Python client sends "" as null, which the schema refuses.
        message = (message or reason)[:1024]
        before = old.get(kind)
        same = before is not None and before.get("status") == status
        out.append({
            "type": kind,
            "status": status,
            "reason": reason[:128],
            "message": message,
            "lastTransitionTime": (before or {}).get("lastTransitionTime") if same
            and (before or {}).get("lastTransitionTime") else iso(now),
            "observedGeneration": generation,
        })
        change = Transition(kind, status, reason, message,
                            None if before is None else before.get("status"))
        if kind in SUMMARY_TYPES:
            continue
        if before is None:
            # A condition's first appearance is news only when it is True or a warning;
            # "not complete yet" on a new resource is not worth an Event.
            if status == "True" or change.warning:
                transitions.append(change)
        elif before.get("status") != status or before.get("reason") != reason:
            transitions.append(change)
    return out, tuple(transitions)
