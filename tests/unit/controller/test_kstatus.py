"""The status as Flux's kstatus reads it (also Helm 4's --wait and `kubectl wait`).

`kstatus` is a port of the generic rules of fluxcd/cli-utils pkg/kstatus/status (for kinds
it has no built-in rules for), checked against Helm 4's compiled-in kstatus on the plane
(tests/cluster/test_operator.py). Every phase the reducer produces must read as a GitOps
tool should see it: accepted and executing is Current, not yet acted on is InProgress,
failure (or a refused spec change) is Failed.
"""

from __future__ import annotations

from typing import Any

import pytest

from mendel.controller.runs.observed import Observed
from mendel.controller.runs.status import Meta, reduce_status

from .builders import UID, parsed
from .test_status import CASES, DRIVER, NOW, RUN, T0


def kstatus(obj: dict[str, Any]) -> str:
    """Current, InProgress, Failed or Terminating, by kstatus's generic rules, in order."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    observed = status.get("observedGeneration")
    if observed is not None and observed != meta.get("generation"):
        return "InProgress"
    conditions = status.get("conditions") or []
    for cond in conditions:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return "InProgress"
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return "Failed"
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None:
        return "Current" if ready.get("status") == "True" else "InProgress"
    return "Current"


EXPECTED = {"Pending": "InProgress", "Queued": "Current", "Running": "Current",
            "Suspended": "Current", "Succeeded": "Current", "Failed": "Failed"}


def _object(status: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(("spec", "jobs", "pods", "phase", "kind", "cond", "reason"), CASES)
def test_kstatus_reads_every_phase_of_the_reducer_as_intended(
        spec: dict[str, Any], jobs: Any, pods: Any, phase: str, kind: str, cond: str,
        reason: str) -> None:
    reduced = reduce_status(meta=Meta("QDEvolution", 3, UID), spec=parsed("QDEvolution", **spec),
                            observed=Observed(jobs=jobs, pods=pods), run=RUN,
                            previous={"startTime": T0} if spec.get("runPolicy") else {},
                            now=NOW, driver_job=DRIVER)
    assert kstatus(_object(reduced.status)) == EXPECTED[reduced.status["phase"]]
    # An object the operator has not seen at its newest generation is never Current.
    assert kstatus(_object(reduced.status, generation=4)) == "InProgress"


def test_kstatus_fails_an_invalid_spec_and_a_refused_change() -> None:
    invalid = reduce_status(meta=Meta("QDEvolution", 1, UID), spec=None, observed=Observed(),
                            run=RUN, previous={}, now=NOW, invalid="spec.experts: too few")
    assert kstatus(_object(invalid.status, generation=1)) == "Failed"
    refused = reduce_status(meta=Meta("QDEvolution", 2, UID), spec=parsed("QDEvolution"),
                            observed=Observed(), run=RUN, previous={}, now=NOW,
                            refused="spec.seed is immutable", driver_job=DRIVER)
    stalled = {c["type"]: c for c in refused.status["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "ImmutableFieldChanged")
    assert kstatus(_object(refused.status, generation=2)) == "Failed"


def test_ready_and_stalled_post_no_events_of_their_own() -> None:
    reduced = reduce_status(meta=Meta("QDEvolution", 1, UID), spec=None, observed=Observed(),
                            run=RUN, previous={}, now=NOW, invalid="spec.experts: too few")
    assert {t.type for t in reduced.transitions} & {"Ready", "Stalled"} == set()


def test_a_status_without_the_summary_conditions_reads_current() -> None:
    """Why the summary conditions matter: before them, kstatus saw a Failed run as Current."""
    old_failed = {"observedGeneration": 1, "phase": "Failed",
                  "conditions": [{"type": "Failed", "status": "True"}]}
    assert kstatus(_object(old_failed, generation=1)) == "Current"
