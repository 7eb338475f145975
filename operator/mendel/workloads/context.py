"""Where a workload runs and reports: the resource's identity and its MLflow parent run.

In a driver Pod the operator has already created the parent run and passes its id in the
environment; `mendel run` creates (or finds again) one itself. Both look the run up by the
resource's uid tag first, so a retry or a second `mendel run` never makes a duplicate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mendel.tracking import contract
from mendel.tracking.runs import ensure_parent_run, experiment_name, make_client

__all__ = ["RunContext", "WorkloadError"]


class WorkloadError(Exception):
    """A workload cannot run with what it was given (exit code 2: do not retry)."""


@dataclass
class RunContext:
    """Identity, tracking and scratch space of one workload run.

    Attributes:
        kind, namespace, name, uid: The resource.
        client: An explicitly constructed MLflow client (never the fluent global run).
        run_id, experiment_id: The parent run everything is logged to.
        work_dir: Local scratch: checkpoints, downloads, saved models.
        output_uri: Where checkpoints persist beyond this process (None: MLflow artifacts).
    """

    kind: str
    namespace: str
    name: str
    uid: str
    client: Any
    run_id: str
    experiment_id: str
    work_dir: Path
    output_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        resource: Mapping[str, Any],
        *,
        tracking_uri: str,
        work_dir: Path,
        uid: str | None = None,
        run_id: str | None = None,
        output_uri: str | None = None,
        run_index: int = 0,
    ) -> RunContext:
        """Find or create the parent run of a resource and return the context."""
        meta = resource.get("metadata") or {}
        kind, name = str(resource["kind"]), str(meta["name"])
        namespace = str(meta.get("namespace") or "local")
        spec = resource.get("spec") or {}
        local_uid = f"local-{contract.spec_hash({'k': kind, 'n': name, 's': spec})}"
        uid = uid or str(meta.get("uid") or local_uid)
        tracking = (spec.get("tracking") or {}).get("mlflow") or {}
        tags = {
            contract.TAG_KIND: kind, contract.TAG_NAMESPACE: namespace, contract.TAG_NAME: name,
            contract.TAG_UID: uid, contract.TAG_GENERATION: str(meta.get("generation", 1)),
            contract.TAG_SPEC_HASH: contract.spec_hash(spec),
            contract.TAG_RUN_INDEX: str(run_index),
        }
        client = make_client(tracking_uri)
        snapshot = ensure_parent_run(
            client,
            experiment=experiment_name(kind, namespace, tracking.get("experiment")),
            tags=tags, run_name=name, known_run_id=run_id,
            parent_run_id=tracking.get("parentRunId"),
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        return cls(kind=kind, namespace=namespace, name=name, uid=uid, client=client,
                   run_id=str(snapshot.run_id), experiment_id=str(snapshot.experiment_id),
                   work_dir=work_dir, output_uri=output_uri, tags=tags)

    @classmethod
    def from_environment(cls, resource: Mapping[str, Any], work_dir: Path) -> RunContext:
        """The context of a driver Pod, from the variables the operator sets."""
        tracking_uri = os.environ.get(contract.ENV_TRACKING_URI)
        if not tracking_uri:
            raise WorkloadError(f"{contract.ENV_TRACKING_URI} is not set")
        return cls.open(
            resource, tracking_uri=tracking_uri, work_dir=work_dir,
            uid=os.environ.get(contract.ENV_UID) or None,
            run_id=os.environ.get(contract.ENV_RUN_ID) or None,
            output_uri=os.environ.get(contract.ENV_OUTPUT_URI) or None,
            run_index=int(os.environ.get(contract.ENV_RUN_INDEX) or 0),
        )
