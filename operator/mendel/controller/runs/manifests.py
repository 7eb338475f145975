"""Pure builders of a run's children: the spec snapshot ConfigMap and the driver Job.

Each function takes plain values and returns the object as a dict, ready for the API
server; no I/O, no clock. Multi-node CompressorTraining reuses `pod_template` from here
(see `multinode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from mendel.api.envelope import SpecEnvelope
from mendel.api.kinds import API_VERSION
from mendel.api.pod import (
    SCRATCH_MOUNT,
    SCRATCH_VOLUME,
    SHM_MOUNT,
    SHM_VOLUME,
    SPEC_MOUNT,
    SPEC_VOLUME,
)
from mendel.controller.config import Capabilities
from mendel.controller.runs import naming, specs
from mendel.tracking import contract

__all__ = ["JobInputs", "RunRef", "config_map", "driver_job", "job", "metadata", "owner_reference",
           "pod_template"]

CONTAINER = "worker"
WORKER_COMMAND = ("mendel", "worker")


@dataclass(frozen=True)
class RunRef:
    """Identity of the resource that owns the children."""

    kind: str
    name: str
    namespace: str
    uid: str
    generation: int = 1


@dataclass(frozen=True)
class JobInputs:
    """Everything a child Job of one attempt depends on."""

    run: RunRef
    spec: SpecEnvelope
    attempt: int = 0
    run_id: str | None = None
    tracking_uri: str | None = None
    image: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    deadline_seconds: int | None = None
    budget: int | None = None
    service_account: str | None = None
    """The operator's worker ServiceAccount, used when the resource names none."""
    run_index: int = 0
    """Which run of the resource (one more per restart after an experiment change)."""

    @property
    def output_uri(self) -> str:
        """Per-run prefix under spec.output.uri (empty: the MLflow artifact store)."""
        base = self.spec.output.uri
        if not base:
            return ""
        prefix = f"{base.rstrip('/')}/{self.run.namespace}/{self.run.name}/{self.run.uid}"
        # A restarted run must never resume from the checkpoints of the run it replaced.
        return prefix if not self.run_index else f"{prefix}/run-{self.run_index}"

    def name(self, role: str) -> str:
        """Deterministic name of this attempt's child with that role."""
        return naming.child_name(self.run.name, role, self.run.uid, self.attempt)


def owner_reference(run: RunRef) -> dict[str, Any]:
    """Controller owner reference: children are garbage-collected with the resource."""
    return {
        "apiVersion": API_VERSION,
        "kind": run.kind,
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(inputs: JobInputs, role: str, name: str) -> dict[str, Any]:
    """Metadata of a child: name, allow-listed labels, attempt annotations, owner."""
    run = inputs.run
    annotations = {
        naming.ANNOTATION_ATTEMPT: str(inputs.attempt),
        naming.ANNOTATION_GENERATION: str(run.generation),
        naming.ANNOTATION_RUN: str(inputs.run_index),
    }
    if inputs.budget is not None:
        annotations[naming.ANNOTATION_BUDGET] = str(inputs.budget)
    return {
        "name": name,
        "namespace": run.namespace,
        "labels": naming.child_labels(run.kind, run.name, run.uid, role),
        "annotations": annotations,
        "ownerReferences": [owner_reference(run)],
    }


def config_map(inputs: JobInputs, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec snapshot of one attempt: the resource as YAML, immutable once created."""
    run = inputs.run
    meta = metadata(inputs, naming.ROLE_SPEC, inputs.name(naming.ROLE_SPEC))
    meta["annotations"][naming.ANNOTATION_SPEC_HASH] = contract.spec_hash(spec)
    document = {
        "apiVersion": API_VERSION,
        "kind": run.kind,
        "metadata": {"name": run.name, "namespace": run.namespace, "uid": run.uid,
                     "generation": run.generation},
        "spec": spec,
    }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {contract.SPEC_FILE: yaml.safe_dump(document, sort_keys=False)},
    }
    if inputs.capabilities.immutable_config_maps:
        body["immutable"] = True
    return body


def driver_job(inputs: JobInputs) -> dict[str, Any]:
    """The single driver Job of a QDEvolution, ExperienceLibrary or one-node training."""
    role = naming.ROLE_DRIVER
    return job(inputs, role, pod_template(inputs, role))


def job(inputs: JobInputs, role: str, template: dict[str, Any], *, parallelism: int = 1,
        indexed: bool = False) -> dict[str, Any]:
    """A batch/v1 Job around a Pod template, with the run policy and Kueue labels."""
    spec = inputs.spec
    meta = metadata(inputs, role, inputs.name(role))
    scheduling = spec.scheduling
    if scheduling.queue_name:
        meta["labels"]["kueue.x-k8s.io/queue-name"] = scheduling.queue_name
    if scheduling.priority_class:
        meta["labels"]["kueue.x-k8s.io/priority-class"] = scheduling.priority_class
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.run_policy.backoff_limit,
        "parallelism": parallelism,
        "completions": parallelism,
        "template": template,
    }
    if indexed:
        job_spec["completionMode"] = "Indexed"
    if scheduling.queue_name:
        job_spec["suspend"] = True  # Kueue admits it; without Kueue it would never start
    if inputs.deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(1, inputs.deadline_seconds)
    if spec.run_policy.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.run_policy.ttl_seconds_after_finished
    if inputs.capabilities.pod_failure_policy:
        job_spec["podFailurePolicy"] = _pod_failure_policy()
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {
                "containerName": CONTAINER, "operator": "In",
                "values": [contract.EXIT_INVALID_SPEC]}},
        ]
    }


def pod_template(inputs: JobInputs, role: str,
                 extra_env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Pod of one role: worker container, volumes, placement and the user's patch."""
    spec = inputs.spec
    patch = spec.pod_template_patch
    labels = {**patch.labels, **naming.child_labels(inputs.run.kind, inputs.run.name,
                                                    inputs.run.uid, role)}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        # The worker never calls the Kubernetes API: it gets no token to leak.
        "automountServiceAccountToken": False,
        "containers": [_container(inputs, role, extra_env or [])],
        "volumes": _volumes(inputs),
    }
    service_account = patch.service_account_name or inputs.service_account
    if service_account:
        pod["serviceAccountName"] = service_account
    if spec.scheduling.node_selector:
        pod["nodeSelector"] = dict(spec.scheduling.node_selector)
    if spec.scheduling.tolerations:
        pod["tolerations"] = [t.to_wire() for t in spec.scheduling.tolerations]
    if patch.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in patch.image_pull_secrets]
    meta: dict[str, Any] = {"labels": labels}
    if patch.annotations:
        meta["annotations"] = dict(patch.annotations)
    return {"metadata": meta, "spec": pod}


def _container(inputs: JobInputs, role: str, extra_env: list[dict[str, Any]]) -> dict[str, Any]:
    spec = inputs.spec
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or inputs.image,
        "command": list(WORKER_COMMAND),
        "env": _env(inputs, role) + extra_env,
        "resources": _resources(spec),
        "volumeMounts": _mounts(spec),
        "terminationMessagePath": contract.TERMINATION_LOG_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    env_from = [{"secretRef": {"name": n}} for n in specs.secret_refs(spec)]
    if env_from:
        container["envFrom"] = env_from
    return container


def _env(inputs: JobInputs, role: str) -> list[dict[str, Any]]:
    run = inputs.run
    user = [e.to_wire() for e in inputs.spec.pod_template_patch.env]
    secrets = [
        {"name": contract.secret_env(path),
         "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        for path, ref in specs.secret_key_refs(inputs.spec)
        if not path.startswith("spec.podTemplatePatch")
    ]
    ours = {
        contract.ENV_KIND: run.kind,
        contract.ENV_NAMESPACE: run.namespace,
        contract.ENV_NAME: run.name,
        contract.ENV_UID: run.uid,
        contract.ENV_RUN_ID: inputs.run_id or "",
        contract.ENV_RUN_INDEX: str(inputs.run_index),
        contract.ENV_TRACKING_URI: inputs.tracking_uri or "",
        contract.ENV_OUTPUT_URI: inputs.output_uri,
        contract.ENV_SPEC_PATH: f"{SPEC_MOUNT}/{contract.SPEC_FILE}",
        contract.ENV_TERMINATION_LOG: contract.TERMINATION_LOG_PATH,
        contract.ENV_ROLE: role,
        # Caches (Hugging Face, torch, pip) follow HOME; /tmp is the writable scratch volume.
        "HOME": SCRATCH_MOUNT,
        "TMPDIR": SCRATCH_MOUNT,
    }
    mine = [{"name": k, "value": v} for k, v in ours.items()]
    # Later entries win on duplicate names: the contract cannot be overridden by the patch.
    return user + secrets + mine


def _resources(spec: SpecEnvelope) -> dict[str, Any]:
    role = specs.role_resources(spec)
    requests: dict[str, str] = {"cpu": role.cpu, "memory": role.memory,
                                "ephemeral-storage": role.ephemeral_storage}
    limits: dict[str, str] = {"memory": role.memory}
    if role.gpus:
        requests[role.gpu_resource] = str(role.gpus)
        limits[role.gpu_resource] = str(role.gpus)
    return {"requests": requests, "limits": limits}


def _volumes(inputs: JobInputs) -> list[dict[str, Any]]:
    role = specs.role_resources(inputs.spec)
    volumes: list[dict[str, Any]] = [
        {"name": SPEC_VOLUME, "configMap": {"name": inputs.name(naming.ROLE_SPEC)}},
        {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": role.ephemeral_storage}},
    ]
    shm = role.shared_memory
    if shm:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
    for volume in inputs.spec.pod_template_patch.volumes:
        if volume.persistent_volume_claim:
            source: dict[str, Any] = {
                "persistentVolumeClaim": {"claimName": volume.persistent_volume_claim}}
        elif volume.secret_name:
            source = {"secret": {"secretName": volume.secret_name}}
        elif volume.config_map_name:
            source = {"configMap": {"name": volume.config_map_name}}
        else:
            source = {"emptyDir": {"sizeLimit": volume.empty_dir}}
        volumes.append({"name": volume.name, **source})
    return volumes


def _mounts(spec: SpecEnvelope) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": SPEC_VOLUME, "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT},
    ]
    if specs.role_resources(spec).shared_memory:
        mounts.append({"name": SHM_VOLUME, "mountPath": SHM_MOUNT})
    for mount in spec.pod_template_patch.volume_mounts:
        mounts.append({"name": mount.name, "mountPath": mount.mount_path,
                       "readOnly": mount.read_only})
    return mounts
