"""Compact, immutable views of a run's children, as the Kopf indexes keep them.

The indexes hold these summaries rather than whole objects: a few hundred bytes per child,
and exactly the fields the status reducer and the planner read. `summarize_*` are pure and
take the raw object as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mendel.controller.runs import naming

__all__ = ["JobView", "LibraryView", "Observed", "PodView", "SnapshotView",
           "summarize_config_map", "summarize_job", "summarize_library", "summarize_pod"]


@dataclass(frozen=True)
class JobView:
    """What the reducer needs of a child Job."""

    name: str
    role: str
    attempt: int
    budget: int | None = None
    run: int = 0
    suspended: bool = False
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    completions: int = 1
    conditions: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)
    """type -> (status, reason, message) of the Job's conditions."""
    start_time: str | None = None
    completion_time: str | None = None
    deleting: bool = False

    def condition(self, kind: str) -> bool:
        """Whether the Job has that condition with status True."""
        return self.conditions.get(kind, ("False", "", ""))[0] == "True"

    @property
    def complete(self) -> bool:
        """Finished successfully."""
        return self.condition("Complete")

    @property
    def failed_for_good(self) -> bool:
        """Finished unsuccessfully (backoff limit, deadline, failure policy)."""
        return self.condition("Failed")

    @property
    def finished(self) -> bool:
        """Complete or failed."""
        return self.complete or self.failed_for_good


@dataclass(frozen=True)
class PodView:
    """What the reducer needs of a child Pod."""

    name: str
    role: str
    phase: str = "Pending"
    scheduled: tuple[str, str, str] | None = None
    """(status, reason, message) of PodScheduled, if reported."""
    termination_message: str | None = None
    exit_code: int | None = None
    job: str | None = None


@dataclass(frozen=True)
class SnapshotView:
    """A spec snapshot ConfigMap: which attempt it belongs to and what spec it froze."""

    name: str
    attempt: int
    budget: int | None = None
    data: str = ""
    run: int = 0


@dataclass(frozen=True)
class LibraryView:
    """A published experience library ConfigMap: its name and which prompt it holds."""

    name: str
    prompt_uri: str = ""
    version: str = ""
    owned: bool = False
    """Whether an owner reference names the resource its uid label names (a label alone
    can be copied onto any ConfigMap)."""


@dataclass(frozen=True)
class Observed:
    """Everything observed of one resource's children."""

    jobs: tuple[JobView, ...] = ()
    pods: tuple[PodView, ...] = ()
    snapshots: tuple[SnapshotView, ...] = ()
    create_failures: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Job name -> (reason, message) of the latest Warning Event of a Job that has no Pod,
    e.g. FailedCreate when a ServiceAccount is missing (read from Events, not indexed)."""
    libraries: tuple[LibraryView, ...] = ()


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _role(meta: Mapping[str, Any]) -> str:
    return str((meta.get("labels") or {}).get(naming.LABEL_ROLE, ""))


def _attempt(meta: Mapping[str, Any]) -> int:
    return _int((meta.get("annotations") or {}).get(naming.ANNOTATION_ATTEMPT), 0) or 0


def _run(meta: Mapping[str, Any]) -> int:
    return _int((meta.get("annotations") or {}).get(naming.ANNOTATION_RUN), 0) or 0


def summarize_job(body: Mapping[str, Any]) -> JobView:
    """A JobView of a batch/v1 Job."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    conditions = {
        str(c.get("type")): (str(c.get("status")), str(c.get("reason") or ""),
                             str(c.get("message") or ""))
        for c in status.get("conditions") or []
    }
    return JobView(
        name=str(meta.get("name", "")),
        role=_role(meta),
        attempt=_attempt(meta),
        budget=_int((meta.get("annotations") or {}).get(naming.ANNOTATION_BUDGET)),
        run=_run(meta),
        suspended=bool(spec.get("suspend")),
        active=_int(status.get("active"), 0) or 0,
        succeeded=_int(status.get("succeeded"), 0) or 0,
        failed=_int(status.get("failed"), 0) or 0,
        completions=_int(spec.get("completions"), 1) or 1,
        conditions=conditions,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def summarize_pod(body: Mapping[str, Any]) -> PodView:
    """A PodView of a core/v1 Pod."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    scheduled = None
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled":
            scheduled = (str(c.get("status")), str(c.get("reason") or ""),
                         str(c.get("message") or ""))
    message, code = None, None
    for cs in status.get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated:
            message = terminated.get("message")
            code = _int(terminated.get("exitCode"))
    return PodView(
        name=str(meta.get("name", "")),
        role=_role(meta),
        phase=str(status.get("phase") or "Pending"),
        scheduled=scheduled,
        termination_message=message,
        exit_code=code,
        job=(meta.get("labels") or {}).get("job-name"),
    )


def summarize_config_map(body: Mapping[str, Any]) -> SnapshotView:
    """A SnapshotView of a spec snapshot ConfigMap."""
    meta = body.get("metadata") or {}
    data = body.get("data") or {}
    return SnapshotView(
        name=str(meta.get("name", "")),
        attempt=_attempt(meta),
        budget=_int((meta.get("annotations") or {}).get(naming.ANNOTATION_BUDGET)),
        data=str(next(iter(data.values()), "")),
        run=_run(meta),
    )


def summarize_library(body: Mapping[str, Any]) -> LibraryView:
    """A LibraryView of a published experience library ConfigMap."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    uid = labels.get(naming.LABEL_UID)
    owners = meta.get("ownerReferences") or []
    return LibraryView(
        name=str(meta.get("name", "")),
        prompt_uri=str((meta.get("annotations") or {}).get(naming.ANNOTATION_PROMPT_URI, "")),
        version=str(labels.get(naming.LABEL_LIBRARY_VERSION, "")),
        owned=bool(uid) and any(o.get("uid") == uid for o in owners),
    )
