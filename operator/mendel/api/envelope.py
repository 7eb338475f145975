"""The envelope every Mendel kind shares: run policy, scheduling, resources, pod patch,
tracking and output.

These fields say how a run is placed and kept, never what it computes; each kind adds
its own method block beside them (see `qdevolution`, `experience`, `compressor`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mendel.api.base import ApiModel, immutable
from mendel.api.pod import PodTemplatePatch
from mendel.api.references import SecretRef

__all__ = [
    "Output",
    "SpecEnvelope",
    "RegisteredModel",
    "RoleResources",
    "RunPolicy",
    "Scheduling",
    "Toleration",
    "Tracking",
    "MlflowTracking",
]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"


class RunPolicy(ApiModel):
    """How long a run may take and how its child Jobs are retried and cleaned up."""

    active_deadline_seconds: int | None = Field(
        default=None,
        description="Wall-clock limit for the whole run; past it the run ends Failed "
        "(DeadlineExceeded). Unset means no limit.",
        ge=60,
        le=31_536_000,
    )
    backoff_limit: int = Field(
        default=3,
        description="How often a failed driver Pod is retried. Each retry resumes from the "
        "last checkpoint, not from the start.",
        ge=0,
        le=100,
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        description="Delete the run's child Jobs and Pods this long after it finishes. The "
        "resource itself is never deleted (GitOps tools own it).",
        ge=0,
        le=31_536_000,
    )
    on_spec_change: Literal["Refuse", "Restart"] = Field(
        default="Refuse",
        description="What a change to an experiment-defining (otherwise immutable) field "
        "does. Refuse: the change is rejected (the run goes on with the spec it started "
        "with). Restart: the current run is stopped and a new run starts with the new spec, "
        "with its own MLflow run linked to the previous one (retraining driven from Git). "
        "Raising a budget always resumes the same run.",
    )


class Toleration(ApiModel):
    """A Pod toleration, as in core/v1."""

    key: str | None = Field(default=None, description="Taint key to tolerate.", max_length=253)
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Exists matches any value; Equal matches value."
    )
    value: str | None = Field(default=None, description="Taint value to match.", max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated.", ge=0
    )


class Scheduling(ApiModel):
    """Where and in which queue the run's Pods are placed."""

    queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue for the child Jobs (label kueue.x-k8s.io/queue-name). "
        "Fixed for the lifetime of the resource.",
        max_length=63,
        pattern=_DNS_LABEL,
        json_schema_extra=immutable("scheduling.queueName"),
    )
    priority_class: str | None = Field(
        default=None,
        description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class); "
        "may change while the run goes on.",
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the Pods must match. Leave empty under Kueue: its "
        "ResourceFlavors set node selectors at admission.",
        json_schema_extra={"maxProperties": 32},
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Tolerations added to every Pod of the run.",
        max_length=16,
    )


class RoleResources(ApiModel):
    """Compute for one role of a run (the driver, or each trainer Pod)."""

    gpus: int = Field(
        default=1,
        description="GPUs per Pod; requested and limited alike (GPUs cannot be overcommitted).",
        ge=0,
        le=16,
    )
    gpu_resource: str = Field(
        default="nvidia.com/gpu",
        description="Extended resource name of the GPU (e.g. nvidia.com/gpu, amd.com/gpu).",
        max_length=253,
        pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
    )
    cpu: str = Field(
        default="4",
        description="CPU request per Pod, as a Kubernetes quantity (e.g. '8' or '500m').",
        max_length=32,
        pattern=_QUANTITY,
    )
    memory: str = Field(
        default="32Gi",
        description="Memory request and limit per Pod, as a Kubernetes quantity (e.g. '64Gi').",
        max_length=32,
        pattern=_QUANTITY,
    )
    shared_memory: str | None = Field(
        default=None,
        description="Size of a memory-backed /dev/shm (needed by NCCL and data loaders).",
        max_length=32,
        pattern=_QUANTITY,
    )
    ephemeral_storage: str = Field(
        default="64Gi",
        description="Node-local scratch disk per Pod (requested, and the size limit of its "
        "/tmp volume): models are downloaded and checkpoints staged there, since the "
        "container's root filesystem is read-only. Size it for the models of the run.",
        max_length=32,
        pattern=_QUANTITY,
    )


class RegisteredModel(ApiModel):
    """Where the run's final model is registered in the MLflow Model Registry."""

    name: str = Field(
        description="Registered model name; a new version is added per finished run.",
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    alias: str = Field(
        default="candidate",
        description="Alias set on the new version. Promotion to e.g. 'champion' is left to "
        "people or CI.",
        max_length=63,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
    )

    @field_validator("alias")
    @classmethod
    def _not_latest(cls, alias: str) -> str:
        if alias.lower() == "latest":
            raise ValueError("'latest' is reserved by MLflow; pick another alias")
        return alias


class MlflowTracking(ApiModel):
    """MLflow experiment, parent run and registry settings."""

    experiment: str | None = Field(
        default=None,
        description="Experiment name (created if missing). Default: mendel/<namespace>/<kind>.",
        max_length=256,
    )
    tracking_uri: str | None = Field(
        default=None,
        description="Tracking server URI; default: the operator's configured server.",
        max_length=512,
        pattern=r"^(https?://|file:|sqlite:|databricks).*",
    )
    parent_run_id: str | None = Field(
        default=None,
        description="Attach the run's parent run under this existing run (e.g. a pipeline run).",
        max_length=64,
        pattern=r"^[a-f0-9]{32}$",
    )
    registered_model: RegisteredModel | None = Field(
        default=None, description="Register the run's final model under this name."
    )
    credentials: SecretRef | None = Field(
        default=None,
        description="Secret with MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD.",
    )


class Tracking(ApiModel):
    """Experiment tracking."""

    mlflow: MlflowTracking = Field(
        default_factory=MlflowTracking, description="MLflow settings."
    )


class Output(ApiModel):
    """Where checkpoints and large artifacts go."""

    uri: str | None = Field(
        default=None,
        description="Base URI for checkpoints and artifacts ('s3://bucket/prefix' or an "
        "absolute path on a mounted volume); the operator appends <namespace>/<name>/<uid>. "
        "Default: the MLflow run's artifact store.",
        max_length=512,
        pattern=r"^(s3://[^\s]+|/[^\s]*)$",
    )
    credentials: SecretRef | None = Field(
        default=None, description="Secret with the S3 credentials for uri."
    )


class SpecEnvelope(ApiModel):
    """Fields every kind's spec carries beside its own method block."""

    suspend: bool = Field(
        default=False,
        description="Pause the run: its Pods are removed and it resumes from the last "
        "checkpoint when set back to false.",
    )
    image: str | None = Field(
        default=None,
        description="Worker image for the run's Pods; default: the operator's configured image.",
        max_length=512,
        json_schema_extra=immutable("image"),
    )
    seed: int = Field(
        default=42,
        description="Seed for every random choice of the run; the same seed on the same "
        "hardware repeats the run.",
        ge=0,
        le=2**31 - 1,
        json_schema_extra=immutable("seed"),
    )
    allow_test_split: bool = Field(
        default=False,
        description="Allow data marked split 'test' to drive optimisation. Off by default so "
        "that reported test scores stay uncontaminated.",
    )
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy, description="Deadline, retries and clean-up of the run."
    )
    scheduling: Scheduling = Field(
        default_factory=Scheduling, description="Queue, priority and placement of the Pods."
    )
    pod_template_patch: PodTemplatePatch = Field(
        default_factory=PodTemplatePatch,
        description="Restricted additions to the Pods: service account, env, volumes.",
    )
    tracking: Tracking = Field(default_factory=Tracking, description="Experiment tracking.")
    output: Output = Field(default_factory=Output, description="Checkpoint and artifact location.")
