"""One reconcile pass of a run resource: gather, plan, apply.

Gathers the inputs (the resource body, the observed children from the Kopf indexes, the
MLflow parent run), calls the pure `plan_run`, applies its creates and deletes, publishes
an experience library the plan says is due, and hands the new status, transitions and
notices back to the Kopf layer, which writes and posts them. Blocking clients run in
worker threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mendel.api.envelope import SpecEnvelope
from mendel.api.kinds import KINDS
from mendel.api.validation import InvalidResource, check_name, parse_spec
from mendel.controller.config import OperatorConfig
from mendel.controller.runs import library
from mendel.controller.runs.apply import KubeError
from mendel.controller.runs.manifests import RunRef
from mendel.controller.runs.observed import Observed
from mendel.controller.runs.plan import Plan, PlanInputs, current_attempt, plan_run
from mendel.controller.runtime.context import OperatorContext
from mendel.tracking import contract
from mendel.tracking import runs as tracking

__all__ = ["Outcome", "end_tracking", "reconcile", "status_patch"]


@dataclass(frozen=True)
class Outcome:
    """What the Kopf layer writes and posts after a pass."""

    plan: Plan
    patch: dict[str, Any]
    invalid: str | None = None
    api_error: str | None = None
    library_notice: library.Notice | None = None
    """What publishing the experience library did or why it could not (an Event)."""


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from `old` to `new` (keys only in `old` become None)."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = status_patch(before, value)
            if nested:
                out[key] = nested
        elif value != before:
            out[key] = value
    for key in old:
        if key not in new and key != "kopf":
            out[key] = None
    return out


def _parse(kind: str, name: str, spec: Mapping[str, Any], config: OperatorConfig,
           ) -> tuple[SpecEnvelope | None, str | None]:
    """The parsed spec, or why this operator cannot run the resource at all."""
    name_error = check_name(name)
    if name_error:
        return None, str(name_error)
    try:
        parsed = parse_spec(KINDS[kind], dict(spec))
    except InvalidResource as invalid:
        return None, str(invalid)
    if not isinstance(parsed, SpecEnvelope):
        return None, "not a run spec"
    refused = _tracking_refusal(parsed, config)
    return (None, refused) if refused else (parsed, None)


def _tracking_refusal(spec: SpecEnvelope, config: OperatorConfig) -> str | None:
    """Why the spec's tracking server is off-limits to this operator, if it is.

    Checked before any connection: the operator's MLflow credentials and its filesystem
    (a `sqlite:///` or `file:` store) go only where the platform team pointed them.
    """
    uri = spec.tracking.mlflow.tracking_uri
    if not uri or config.tracking_allowed(uri):
        return None
    listed = ", ".join(_redacted(a) for a in config.allowed_uris) or "none configured"
    return (f"spec.tracking.mlflow.trackingUri: {_redacted(uri)!r} is not a tracking server "
            f"this operator may use (allowed: {listed}); remove the field to use the "
            "operator's default, or ask the platform team to add it to the operator's "
            "allowed tracking URIs (--allowed-tracking-uri)")


def _redacted(uri: str) -> str:
    """The URI without user info, so a password in it never reaches status or Events."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _tracking_uri(ctx: OperatorContext, spec: SpecEnvelope) -> str | None:
    return spec.tracking.mlflow.tracking_uri or ctx.config.tracking_uri


async def _tracking(ctx: OperatorContext, ref: RunRef, spec: SpecEnvelope,
                    spec_wire: Mapping[str, Any], previous: Mapping[str, Any],
                    run_index: int = 0) -> tracking.RunSnapshot:
    """The parent run of run `run_index` of the resource: found, or created.

    Run n > 0 (a restart after an experiment-defining change) is linked to run n-1, which
    is ended KILLED if it was still running: its Jobs are being stopped.
    """
    uri = _tracking_uri(ctx, spec)
    if not uri:
        return tracking.RunSnapshot()
    tags = {
        contract.TAG_KIND: ref.kind, contract.TAG_NAMESPACE: ref.namespace,
        contract.TAG_NAME: ref.name, contract.TAG_UID: ref.uid,
        contract.TAG_GENERATION: str(ref.generation),
        contract.TAG_SPEC_HASH: contract.spec_hash(dict(spec_wire)),
        contract.TAG_RUN_INDEX: str(run_index),
    }
    experiment = tracking.experiment_name(ref.kind, ref.namespace,
                                          spec.tracking.mlflow.experiment)
    client = ctx.mlflow(uri)
    same_run = int(previous.get("run") or 0) == run_index
    known = (previous.get("mlflow") or {}).get("runId") if same_run else None
    try:
        previous_run_id = None
        if run_index and not known:  # this run's parent run may not exist yet: link it
            previous_run_id = await asyncio.to_thread(
                tracking.find_run, client, experiment, ref.uid, run_index - 1)
            if previous_run_id:
                await asyncio.to_thread(tracking.end_run, client, previous_run_id, "KILLED")
        return await asyncio.to_thread(
            tracking.ensure_parent_run, client,
            experiment=experiment, tags=tags, run_name=f"{ref.namespace}/{ref.name}",
            known_run_id=known,
            parent_run_id=spec.tracking.mlflow.parent_run_id,
            base_url=ctx.config.tracking_url or uri, previous_run_id=previous_run_id,
        )
    except tracking.TrackingUnavailable as error:
        ctx.metrics.mlflow_errors.inc()
        return tracking.RunSnapshot(error=str(error))


async def reconcile(ctx: OperatorContext, body: Mapping[str, Any], observed: Observed,
                    ) -> Outcome:
    """Bring one resource's children and status in line with its spec.

    Args:
        ctx: The operator context (clients, settings, metrics).
        body: The resource as Kopf delivers it.
        observed: Its children, from the indexes.

    Returns:
        The plan that was applied and the status patch to write.
    """
    started = time.monotonic()
    meta = body["metadata"]
    ref = RunRef(kind=body["kind"], name=meta["name"], namespace=meta["namespace"],
                 uid=meta["uid"], generation=int(meta.get("generation") or 1))
    async with ctx.lock(ref.uid):
        written = dict(body.get("status") or {})
        previous = ctx.statuses.get(ref.uid, written)
        spec_wire = dict(body.get("spec") or {})
        spec, invalid = _parse(ref.kind, ref.name, spec_wire, ctx.config)
        run, chosen = tracking.RunSnapshot(), None
        if spec is not None:
            chosen = current_attempt(ref.kind, ref.name, ref.uid, spec, observed, previous)
            run = await _tracking(ctx, ref, spec, spec_wire, previous, chosen.run)
        observed = await _with_create_failures(ctx, ref, observed)
        plan = plan_run(PlanInputs(run=ref, spec_wire=spec_wire, spec=spec, observed=observed,
                                   mlflow=run, previous=previous, now=datetime.now(UTC),
                                   config=ctx.config, invalid=invalid, attempt=chosen))
        api_error = await _apply(ctx, ref, plan)
        notice = None
        if spec is not None and plan.publish is not None:
            notice = await _publish_library(ctx, ref, spec, plan.publish)
        status = plan.reduced.status
        if spec is not None:
            await _sync_run_status(ctx, spec, run, status["phase"])
        ctx.statuses[ref.uid] = status
    ctx.metrics.observe_phase(ref.uid, ref.kind, status["phase"])
    for change in plan.reduced.transitions:
        ctx.metrics.transitions.labels(ref.kind, change.type, change.status).inc()
    ctx.metrics.reconcile_seconds.labels(ref.kind).observe(time.monotonic() - started)
    return Outcome(plan, status_patch(written, status), invalid, api_error, notice)


async def _publish_library(ctx: OperatorContext, ref: RunRef, spec: SpecEnvelope,
                           wanted: library.Publication) -> library.Notice | None:
    """Write the library version the plan asks for to its ConfigMap, if that may be done.

    Reads the ConfigMap by name first: one that is not this resource's library is left
    alone (a Warning), and one that already holds the version (the index lags a write)
    costs no write. Nothing here fails the resource: MLflow or API errors are retried by
    the next pass, which finds the same gap.

    Returns:
        The Event to post: published, refused or not yet possible; None when up to date.
    """
    uri = _tracking_uri(ctx, spec)
    try:
        existing = await asyncio.to_thread(ctx.kube.read_config_map, ref.namespace,
                                           wanted.config_map)
        held = library.ownership(existing, ref, wanted)
        if held == "foreign":
            return library.conflict(ref, wanted)
        if held == "current" or not uri:
            return None
        text = await asyncio.to_thread(tracking.load_prompt_text, ctx.mlflow(uri),
                                       wanted.prompt_name, wanted.prompt_version)
        version = ((existing or {}).get("metadata") or {}).get("resourceVersion")
        body = library.config_map(ref, wanted, text, version)
        if library.too_large(body):
            return library.not_loaded(wanted, f"its data is over {library.MAX_DATA_BYTES} "
                                      "bytes, more than a ConfigMap holds")
        await asyncio.to_thread(ctx.kube.write_config_map, body)
    except KubeError as error:
        ctx.metrics.api_errors.labels(error.verb).inc()
        return library.not_loaded(wanted, str(error))
    except tracking.TrackingUnavailable as error:
        ctx.metrics.mlflow_errors.inc()
        return library.not_loaded(wanted, f"MLflow: {error}")
    return library.published_notice(body, wanted)


# What the parent run's MLflow status should be in each phase of the resource.
_RUN_STATUS = {"Succeeded": "FINISHED", "Failed": "FAILED", "Pending": "RUNNING",
               "Queued": "RUNNING", "Running": "RUNNING"}


async def _sync_run_status(ctx: OperatorContext, spec: SpecEnvelope, run: tracking.RunSnapshot,
                           phase: str) -> None:
    """End the parent run with the resource's outcome, once; reopen it on a resume.

    The snapshot read at the start of this pass says whether anything is to do, so a
    steady run costs no extra request. A Suspended run keeps its MLflow status.
    """
    wanted = _RUN_STATUS.get(phase)
    uri = _tracking_uri(ctx, spec)
    if not wanted or not run.run_id or not uri or run.status == wanted:
        return
    client = ctx.mlflow(uri)
    try:
        if wanted == "RUNNING":
            if run.status in tracking.TERMINAL_STATUSES:
                await asyncio.to_thread(tracking.reopen_run, client, run.run_id)
        elif run.status == "RUNNING":
            await asyncio.to_thread(tracking.end_run, client, run.run_id, wanted)
    except tracking.TrackingUnavailable:
        ctx.metrics.mlflow_errors.inc()  # the next pass sees the same gap and retries


async def _with_create_failures(ctx: OperatorContext, ref: RunRef, observed: Observed,
                                ) -> Observed:
    """Add why the Job controller cannot create Pods for Jobs that have none.

    A Job whose Pods are refused (a missing ServiceAccount, a quota, an admission webhook)
    says so only in Warning Events; without them the status would wait forever. Asked
    only for live Jobs with no Pod, so a healthy run costs nothing.
    """
    with_pods = {p.job for p in observed.pods}
    stuck = [j.name for j in observed.jobs
             if not (j.finished or j.suspended or j.deleting or j.active)
             and j.name not in with_pods]
    if not stuck:
        return observed
    try:
        failures = await asyncio.to_thread(ctx.kube.job_create_failures, ref.namespace, stuck)
    except KubeError as error:
        ctx.metrics.api_errors.labels(error.verb).inc()
        return observed
    return replace(observed, create_failures=failures) if failures else observed


async def _apply(ctx: OperatorContext, ref: RunRef, plan: Plan) -> str | None:
    try:
        if plan.creates:
            await asyncio.to_thread(ctx.kube.create_all, plan.creates)
        if plan.deletes:
            await asyncio.to_thread(ctx.kube.delete_jobs, ref.namespace, plan.deletes)
    except KubeError as error:
        ctx.metrics.api_errors.labels(error.verb).inc()
        return str(error)
    return None


async def end_tracking(ctx: OperatorContext, body: Mapping[str, Any]) -> str | None:
    """End the resource's parent run as KILLED (it is being deleted), unless it has ended.

    Returns:
        None when done (or nothing to do), else why MLflow could not be reached.
    """
    meta, spec_wire = body["metadata"], dict(body.get("spec") or {})
    ctx.metrics.observe_phase(meta["uid"], body["kind"], None)
    spec, _ = _parse(body["kind"], meta["name"], spec_wire, ctx.config)
    # A refused spec falls back to the operator's own server, never the spec's.
    uri = _tracking_uri(ctx, spec) if spec else ctx.config.tracking_uri
    previous = ctx.statuses.get(meta["uid"], dict(body.get("status") or {}))
    run_id = (previous.get("mlflow") or {}).get("runId")
    if not uri:
        ctx.forget(meta["uid"])
        return None
    try:
        if not run_id and spec is not None:
            ref = RunRef(body["kind"], meta["name"], meta["namespace"], meta["uid"])
            index = int(previous.get("run") or 0)
            found = await _tracking(ctx, ref, spec, spec_wire, {"run": index}, index)
            run_id = found.run_id
            if found.error:
                return found.error
        if run_id:
            await asyncio.to_thread(tracking.end_run, ctx.mlflow(uri), run_id, "KILLED")
    except tracking.TrackingUnavailable as error:
        ctx.metrics.mlflow_errors.inc()
        return str(error)
    ctx.forget(meta["uid"])
    return None
