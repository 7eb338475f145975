"""The Kopf layer of the run kinds: thin handlers over `reconciler`.

Per kind (ids are persisted state; renaming one needs a migration note):

- `<kind>_reconcile` on create, update and resume: one reconcile pass; an invalid spec
  ends in `kopf.PermanentError` after its Failed/InvalidSpec status and Event are written.
- `<kind>_observe`, a daemon per resource: a reconcile pass whenever a child Job or Pod
  changes (the indexes wake it) and at least every `reconcile_interval` seconds.
- `<kind>_delete`: end the MLflow parent run as KILLED; children go by garbage collection.

Children are observed through four indexes (`run_jobs`, `run_pods`, `run_snapshots`,
`run_libraries`) keyed by the owner's uid; nothing is ever written on a Job or Pod.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from mendel.api.kinds import GROUP, KINDS, VERSION, KindInfo
from mendel.controller.runs import naming
from mendel.controller.runs.library import Notice
from mendel.controller.runs.observed import (
    Observed,
    summarize_config_map,
    summarize_job,
    summarize_library,
    summarize_pod,
)
from mendel.controller.runs.reconciler import Outcome, end_tracking, reconcile
from mendel.controller.runtime.context import OperatorContext

__all__ = ["register"]

_CHILD: dict[str, Any] = {naming.LABEL_UID: kopf.PRESENT,
                          "app.kubernetes.io/managed-by": naming.MANAGED_BY}


logger = logging.getLogger(__name__)


def _ctx(memo: kopf.Memo) -> OperatorContext:
    context: OperatorContext = memo["mendel"]
    return context


def _observed(uid: str, run_jobs: kopf.Index[str, Any], run_pods: kopf.Index[str, Any],
              run_snapshots: kopf.Index[str, Any],
              run_libraries: kopf.Index[str, Any]) -> Observed:
    return Observed(jobs=tuple(run_jobs.get(uid, ())), pods=tuple(run_pods.get(uid, ())),
                    snapshots=tuple(run_snapshots.get(uid, ())),
                    libraries=tuple(run_libraries.get(uid, ())))


async def _pass(memo: kopf.Memo, body: kopf.Body, **indexes: Any) -> Outcome:
    ctx = _ctx(memo)
    outcome = await reconcile(ctx, body, _observed(body["metadata"]["uid"], **indexes))
    meta = body["metadata"]
    plural = KINDS[body["kind"]].plural
    await asyncio.to_thread(ctx.kube.patch_status, plural, meta["namespace"], meta["name"],
                            outcome.patch)
    for change in outcome.plan.reduced.transitions:
        kopf.event(body, type="Warning" if change.warning else "Normal",
                   reason=change.reason, message=f"{change.type}={change.status}: "
                   f"{change.message}"[:1024])
    _report_api_error(ctx, body, outcome.api_error)
    _report_library(ctx, body, outcome.library_notice)
    return outcome


def _report_library(ctx: OperatorContext, body: kopf.Body, notice: Notice | None) -> None:
    """An Event per library publication; a Warning (a name taken, MLflow not answering)
    once per resource and message, since every pass until it is resolved says it again."""
    uid = body["metadata"]["uid"]
    if notice is None or not notice.warning:
        ctx.library_warnings.pop(uid, None)
    if notice is None or ctx.library_warnings.get(uid) == notice.message:
        return
    if notice.warning:
        ctx.library_warnings[uid] = notice.message
        logger.warning("%s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"],
                       notice.message)
    kopf.event(body, type="Warning" if notice.warning else "Normal", reason=notice.reason,
               message=notice.message[:1024])


def _report_api_error(ctx: OperatorContext, body: kopf.Body, error: str | None) -> None:
    """A Warning Event and a log line the first time a resource meets a given API error
    (e.g. RBAC forbids creating Jobs), so it is not only a metric; retries stay quiet."""
    uid = body["metadata"]["uid"]
    if error is None:
        ctx.api_errors.pop(uid, None)
    elif ctx.api_errors.get(uid) != error:
        ctx.api_errors[uid] = error
        logger.warning("%s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"],
                       error)
        kopf.warn(body, reason="ApiError", message=error[:1024])


async def run_reconcile(memo: kopf.Memo, body: kopf.Body, run_jobs: kopf.Index[str, Any],
                        run_pods: kopf.Index[str, Any], run_snapshots: kopf.Index[str, Any],
                        run_libraries: kopf.Index[str, Any], **_: Any) -> None:
    """One reconcile pass; PermanentError for an invalid spec, TemporaryError on API errors."""
    outcome = await _pass(memo, body, run_jobs=run_jobs, run_pods=run_pods,
                          run_snapshots=run_snapshots, run_libraries=run_libraries)
    if outcome.invalid:
        raise kopf.PermanentError(f"invalid spec: {outcome.invalid}")
    if outcome.api_error:
        raise kopf.TemporaryError(outcome.api_error, delay=5)


async def run_observe(memo: kopf.Memo, body: kopf.Body, stopped: kopf.DaemonStopped,
                      run_jobs: kopf.Index[str, Any], run_pods: kopf.Index[str, Any],
                      run_snapshots: kopf.Index[str, Any], run_libraries: kopf.Index[str, Any],
                      **_: Any) -> None:
    """Reconcile whenever a child changes, and at least every reconcile_interval seconds."""
    ctx = _ctx(memo)
    nudge = ctx.nudge(body["metadata"]["uid"])
    while not stopped:
        waits = [asyncio.ensure_future(nudge.wait()), asyncio.ensure_future(stopped.wait())]
        await asyncio.wait(waits, timeout=ctx.config.reconcile_interval,
                           return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        if stopped:
            break
        await asyncio.sleep(0.2)  # let a burst of child events settle into one pass
        nudge.clear()
        await _pass(memo, body, run_jobs=run_jobs, run_pods=run_pods,
                    run_snapshots=run_snapshots, run_libraries=run_libraries)


async def run_delete(memo: kopf.Memo, body: kopf.Body, retry: int, logger: kopf.Logger,
                     **_: Any) -> None:
    """End the MLflow parent run as KILLED; give up (with a warning) after a few tries."""
    problem = await end_tracking(_ctx(memo), body)
    if problem and retry < 3:
        raise kopf.TemporaryError(f"MLflow: {problem}", delay=5)
    if problem:
        logger.warning(f"could not mark the MLflow run KILLED, deleting anyway: {problem}")


async def run_jobs(body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo,
                   **_: Any) -> dict[str, Any]:
    """Index: owner uid -> JobView."""
    _ctx(memo).touch(labels[naming.LABEL_UID])
    return {labels[naming.LABEL_UID]: summarize_job(body)}


async def run_pods(body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo,
                   **_: Any) -> dict[str, Any]:
    """Index: owner uid -> PodView."""
    _ctx(memo).touch(labels[naming.LABEL_UID])
    return {labels[naming.LABEL_UID]: summarize_pod(body)}


async def run_snapshots(body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo,
                        **_: Any) -> dict[str, Any]:
    """Index: owner uid -> SnapshotView (spec snapshot ConfigMaps)."""
    _ctx(memo).touch()
    return {labels[naming.LABEL_UID]: summarize_config_map(body)}


async def run_libraries(body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo,
                        **_: Any) -> dict[str, Any]:
    """Index: owner uid -> LibraryView (published library ConfigMaps); a change wakes the
    observer, so status.library.configMap follows a write at once."""
    _ctx(memo).touch(labels[naming.LABEL_UID])
    return {labels[naming.LABEL_UID]: summarize_library(body)}


def _register_kind(registry: kopf.OperatorRegistry, info: KindInfo) -> None:
    where: dict[str, Any] = {"group": GROUP, "version": VERSION, "plural": info.plural,
                             "registry": registry}
    name = info.singular
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(**where, id=f"{name}_reconcile", backoff=5)(cast(Any, run_reconcile))
    kopf.daemon(**where, id=f"{name}_observe", cancellation_timeout=5,
                initial_delay=1)(cast(Any, run_observe))
    kopf.on.delete(**where, id=f"{name}_delete", backoff=5)(run_delete)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add every run kind's handlers and the child indexes to a registry."""
    for info in KINDS.values():
        _register_kind(registry, info)
    kopf.index("batch", "v1", "jobs", labels=_CHILD, id="run_jobs", registry=registry)(run_jobs)
    kopf.index("v1", "pods", labels=_CHILD, id="run_pods", registry=registry)(run_pods)
    snapshots: dict[str, Any] = {**_CHILD, naming.LABEL_ROLE: naming.ROLE_SPEC}
    kopf.index("v1", "configmaps", labels=snapshots,
               id="run_snapshots", registry=registry)(run_snapshots)
    libraries: dict[str, Any] = {**_CHILD, naming.LABEL_ROLE: naming.ROLE_LIBRARY}
    kopf.index("v1", "configmaps", labels=libraries,
               id="run_libraries", registry=registry)(run_libraries)
