"""The reconcile plan: what to create, what to delete and the new status, from data only.

`plan_run` is the whole decision of one reconcile pass. The handler gathers the inputs
(the resource, the Kopf indexes, the MLflow snapshot, the clock), calls it and applies the
result; running it twice on the same inputs gives the same answer, so a retried or
restarted reconcile never does anything twice.

Attempts: a run normally has one attempt (0). Raising the budget of a Succeeded run starts
attempt n+1, which gets its own snapshot and Jobs (names carry a hash of uid and attempt);
the attempt number is read back from the children's annotations, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from mendel.api.envelope import SpecEnvelope
from mendel.api.kinds import KINDS
from mendel.api.mutability import changed_immutable_fields
from mendel.api.validation import InvalidResource, parse_spec
from mendel.controller.config import OperatorConfig
from mendel.controller.runs import library, manifests, multinode, naming, specs
from mendel.controller.runs.manifests import JobInputs, RunRef
from mendel.controller.runs.observed import Observed, SnapshotView
from mendel.controller.runs.status import Meta, Reduced, parse_time, reduce_status
from mendel.tracking.runs import RunSnapshot

__all__ = ["Attempt", "Plan", "PlanInputs", "current_attempt", "plan_run"]


@dataclass(frozen=True)
class PlanInputs:
    """Everything one reconcile pass decides from."""

    run: RunRef
    spec_wire: Mapping[str, Any]
    spec: SpecEnvelope | None
    observed: Observed
    mlflow: RunSnapshot
    previous: Mapping[str, Any]
    now: datetime
    config: OperatorConfig = field(default_factory=OperatorConfig)
    invalid: str | None = None
    attempt: Attempt | None = None
    """`current_attempt` of these inputs, when the caller already decided it (the
    reconciler needs the run index before planning, to find the MLflow run)."""


@dataclass(frozen=True)
class Plan:
    """What one reconcile pass does."""

    attempt: int
    creates: tuple[dict[str, Any], ...]
    deletes: tuple[str, ...]
    """Names of Jobs to delete (with their Pods)."""
    reduced: Reduced
    refused: str | None = None
    run_index: int = 0
    publish: library.Publication | None = None
    """The experience library version to publish to its ConfigMap, if one is due."""


def _snapshot_spec(kind: str, snapshot: SnapshotView | None) -> SpecEnvelope | None:
    if snapshot is None or not snapshot.data:
        return None
    try:
        document = yaml.safe_load(snapshot.data)
        spec = parse_spec(KINDS[kind], document.get("spec"))
    except (yaml.YAMLError, AttributeError, InvalidResource):
        return None
    return spec if isinstance(spec, SpecEnvelope) else None


def _refusal(fields: list[str], generation: int | None) -> str:
    which = ", ".join(fields)
    verb = "is" if len(fields) == 1 else "are"
    return (f"{which} {verb} immutable and changed since the run started; the run goes on with "
            f"the spec it started with. Revert the change or create a new resource.")


def _finished_ok(observed: Observed, previous: Mapping[str, Any], attempt: int, expected: int,
                 leader: str) -> bool:
    jobs = [j for j in observed.jobs if j.attempt == attempt]
    if jobs:
        return sum(1 for j in jobs if j.complete) >= expected
    return previous.get("phase") == "Succeeded" and \
        (previous.get("children") or {}).get("driverJob") == leader


def _lead_role(spec: SpecEnvelope | None) -> str:
    if spec is not None and specs.num_nodes(spec) > 1:
        return naming.ROLE_LEADER
    return naming.ROLE_DRIVER


@dataclass(frozen=True)
class Attempt:
    """Which attempt and run a pass works on, and why a spec change was refused."""

    number: int
    run: int
    """Run index: 0, then one more per restart after an experiment-defining change."""
    refused: str | None = None
    restarted: bool = False


def current_attempt(kind: str, name: str, uid: str, spec: SpecEnvelope | None,
                    observed: Observed, previous: Mapping[str, Any],
                    invalid: str | None = None) -> Attempt:
    """The attempt and run of this pass, from the children (never from stored state).

    A new attempt starts when the budget of a finished run was raised (same run, resumed)
    or, under runPolicy.onSpecChange Restart, when an experiment-defining field changed
    (a new run). Under Refuse such a change is refused and the run goes on.
    """
    attempt = max([j.attempt for j in observed.jobs] + [s.attempt for s in observed.snapshots],
                  default=0)
    snapshots = {s.attempt: s for s in observed.snapshots}
    run_index = _run_index(observed, attempt, previous)
    if spec is None or invalid is not None:
        return Attempt(attempt, run_index)
    frozen = _snapshot_spec(kind, snapshots.get(attempt))
    changed = changed_immutable_fields(frozen, spec) if frozen is not None else []
    if changed and spec.run_policy.on_spec_change == "Restart":
        return Attempt(attempt + 1, run_index + 1, restarted=True)
    if changed:
        return Attempt(attempt, run_index, refused=_refusal(changed, None))
    expected = 2 if specs.num_nodes(spec) > 1 else 1
    lead = naming.child_name(name, _lead_role(spec), uid, attempt)
    budget, frozen_budget = specs.budget(spec), getattr(snapshots.get(attempt), "budget", None)
    if budget is not None and frozen_budget is not None and budget > frozen_budget \
            and _finished_ok(observed, previous, attempt, expected, lead):
        return Attempt(attempt + 1, run_index)
    return Attempt(attempt, run_index)


def _run_index(observed: Observed, attempt: int, previous: Mapping[str, Any]) -> int:
    runs = [s.run for s in observed.snapshots if s.attempt == attempt]
    runs += [j.run for j in observed.jobs if j.attempt == attempt]
    return runs[0] if runs else int(previous.get("run") or 0)


def plan_run(inputs: PlanInputs) -> Plan:
    """Decide one reconcile pass.

    Args:
        inputs: The resource, its observed children, the MLflow snapshot and the time.

    Returns:
        The Plan: objects to get-or-create, Jobs to delete, the library to publish and the
        new status.
    """
    run, spec, observed = inputs.run, inputs.spec, inputs.observed
    chosen = inputs.attempt or current_attempt(run.kind, run.name, run.uid, spec, observed,
                                               inputs.previous, inputs.invalid)
    attempt, refused = chosen.number, chosen.refused
    lead = naming.child_name(run.name, _lead_role(spec), run.uid, attempt)
    reduced = reduce_status(
        meta=Meta(run.kind, run.generation, run.uid), spec=spec, observed=observed,
        run=inputs.mlflow, previous=inputs.previous, now=inputs.now, invalid=inputs.invalid,
        refused=refused, attempt=attempt, driver_job=lead, run_index=chosen.run,
        library_config_map=library.published(run, spec, observed),
    )
    phase = reduced.status["phase"]
    live = [j for j in observed.jobs if not j.deleting and not j.finished]
    # An earlier attempt still running was replaced by a restart: stop it.
    deletes = tuple(j.name for j in live if j.attempt < attempt)
    creates: tuple[dict[str, Any], ...] = ()
    if phase in ("Failed", "Suspended"):
        deletes += tuple(j.name for j in live if j.attempt == attempt)
    elif phase not in ("Succeeded",) and spec is not None and not refused:
        creates = _creates(inputs, spec, attempt, reduced, chosen.run)
    return Plan(attempt, creates, deletes, reduced, refused, run_index=chosen.run,
                publish=library.publication(run, spec, inputs.mlflow, observed))


def _creates(inputs: PlanInputs, spec: SpecEnvelope, attempt: int,
             reduced: Reduced, run_index: int) -> tuple[dict[str, Any], ...]:
    observed = inputs.observed
    job_inputs = _job_inputs(inputs, spec, attempt, reduced, run_index)
    wanted = multinode.run_jobs(job_inputs)
    seen = {j.name for j in observed.jobs}
    missing = [o for o in wanted if o["kind"] == "Job" and o["metadata"]["name"] not in seen]
    if not missing:
        return ()
    out: list[dict[str, Any]] = []
    if not any(s.attempt == attempt for s in observed.snapshots):
        out.append(manifests.config_map(job_inputs, dict(inputs.spec_wire)))
    out.extend(o for o in wanted if o["kind"] != "Job")
    out.extend(missing)
    return tuple(out)


def _job_inputs(inputs: PlanInputs, spec: SpecEnvelope, attempt: int,
                reduced: Reduced, run_index: int) -> JobInputs:
    config = inputs.config
    deadline = spec.run_policy.active_deadline_seconds
    begun = parse_time(reduced.status.get("startTime"))
    if deadline is not None and begun is not None:
        deadline -= int((inputs.now - begun).total_seconds())
    return JobInputs(
        run=inputs.run,
        spec=spec,
        attempt=attempt,
        run_id=inputs.mlflow.run_id,
        tracking_uri=spec.tracking.mlflow.tracking_uri or config.tracking_uri,
        image=config.image,
        capabilities=config.capabilities,
        deadline_seconds=deadline,
        budget=specs.budget(spec),
        service_account=config.worker_service_account,
        run_index=run_index,
    )
