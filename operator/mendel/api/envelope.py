"""The envelope every Mendel kind shares: run policy, scheduling, resources, pod patch,
tracking and output.

These fields say how a run is placed and kept, never what it computes; each kind adds
its own method block beside them (see `qdevolution`, `experience`, `compressor`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mendel.api.base import ApiModel, cel, immutable
from mendel.api.references import SecretKeyRef, SecretRef

__all__ = [
    "ConfigMapKeyRef",
    "EnvVar",
    "EnvVarSource",
    "Output",
    "SpecEnvelope",
    "PodTemplatePatch",
    "RegisteredModel",
    "RoleResources",
    "RunPolicy",
    "Scheduling",
    "Toleration",
    "Tracking",
    "MlflowTracking",
    "Volume",
    "VolumeMount",
]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
_SECRET_LIKE = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL)", re.IGNORECASE)


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
        description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class); may change.",
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


class ConfigMapKeyRef(ApiModel):
    """One key of a ConfigMap in the resource's namespace."""

    name: str = Field(description="Name of the ConfigMap.", min_length=1, max_length=253)
    key: str = Field(description="Key within the ConfigMap.", min_length=1, max_length=253)


class EnvVarSource(ApiModel):
    """Where an environment variable's value is read from."""

    secret_key_ref: SecretKeyRef | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A key of a ConfigMap."
    )


class EnvVar(ApiModel):
    """An environment variable for the workload. Secret-looking names must use valueFrom."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.value) != has(self.valueFrom)",
                    "set exactly one of value and valueFrom",
                )
            ]
        }
    }

    name: str = Field(
        description="Variable name.",
        min_length=1,
        max_length=128,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
    )
    value: str | None = Field(
        default=None,
        description="Literal value. Not allowed for names that look like credentials "
        "(KEY, TOKEN, PASSWORD, SECRET, CREDENTIAL): use valueFrom.secretKeyRef.",
        max_length=4096,
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="Read the value from a Secret or ConfigMap key."
    )

    @model_validator(mode="after")
    def _one_source_and_no_inline_secret(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("set exactly one of value and valueFrom")
        if self.value is not None and _SECRET_LIKE.search(self.name):
            raise ValueError(
                f"{self.name} looks like a credential and must not be inline; use "
                "valueFrom: {secretKeyRef: {name: <secret>, key: <key>}}"
            )
        return self


class Volume(ApiModel):
    """A volume for the Pods: a PersistentVolumeClaim, Secret, ConfigMap or scratch space."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.persistentVolumeClaim), has(self.secretName), "
                    "has(self.configMapName), has(self.emptyDir)].filter(x, x).size() == 1",
                    "set exactly one of persistentVolumeClaim, secretName, configMapName, emptyDir",
                )
            ]
        }
    }

    name: str = Field(description="Volume name.", max_length=63, pattern=_DNS_LABEL)
    persistent_volume_claim: str | None = Field(
        default=None, description="Name of a PersistentVolumeClaim to mount.", max_length=253
    )
    secret_name: str | None = Field(
        default=None, description="Name of a Secret to mount as files.", max_length=253
    )
    config_map_name: str | None = Field(
        default=None, description="Name of a ConfigMap to mount as files.", max_length=253
    )
    empty_dir: str | None = Field(
        default=None,
        description="Size limit of a scratch directory that lives as long as the Pod.",
        max_length=32,
        pattern=_QUANTITY,
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Volume:
        sources = [self.persistent_volume_claim, self.secret_name, self.config_map_name,
                   self.empty_dir]
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "set exactly one of persistentVolumeClaim, secretName, configMapName, emptyDir"
            )
        return self


class VolumeMount(ApiModel):
    """Where a volume appears in the workload's container."""

    name: str = Field(description="Name of a volume in podTemplatePatch.volumes.", max_length=63)
    mount_path: str = Field(
        description="Absolute path in the container.", max_length=512, pattern=r"^/.*"
    )
    read_only: bool = Field(default=False, description="Mount read-only.")


class PodTemplatePatch(ApiModel):
    """The restricted set of Pod settings a resource may add; images, commands and security
    context stay under the operator's control."""

    service_account_name: str | None = Field(
        default=None,
        description="ServiceAccount the Pods run as (e.g. one bound to cloud storage).",
        max_length=253,
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment variables.", max_length=64
    )
    env_from_secrets: list[SecretRef] = Field(
        default_factory=list,
        description="Secrets whose keys all become environment variables.",
        max_length=16,
    )
    volumes: list[Volume] = Field(
        default_factory=list, description="Extra volumes.", max_length=16
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, description="Where the extra volumes are mounted.", max_length=16
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Pod labels (never copied from the resource itself).",
        json_schema_extra={"maxProperties": 32},
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Pod annotations.",
        json_schema_extra={"maxProperties": 32},
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Names of Secrets used to pull the worker image.",
        max_length=8,
    )

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> PodTemplatePatch:
        known = {v.name for v in self.volumes}
        for index, mount in enumerate(self.volume_mounts):
            if mount.name not in known:
                raise ValueError(
                    f"volumeMounts[{index}].name '{mount.name}' names no volume; "
                    f"known volumes: {sorted(known) or 'none'}"
                )
        return self


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
