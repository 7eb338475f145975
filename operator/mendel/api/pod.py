"""The restricted Pod template patch: what a resource may add to its Pods.

Images, commands, security context and resources stay under the operator's control;
a resource may add a service account, environment (secrets only by reference), volumes
and labels. This keeps the CRD small and the Pods safe to run in shared namespaces.
"""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from mendel.api.base import ApiModel, FieldValueError, cel
from mendel.api.references import SecretKeyRef, SecretRef

__all__ = ["ConfigMapKeyRef", "EnvVar", "EnvVarSource", "PodTemplatePatch", "Volume", "VolumeMount"]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
_SECRET_LIKE = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL)", re.IGNORECASE)


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


# Mounted by the operator into every worker (controller/runs/manifests.py): the spec
# snapshot, the writable scratch space (the root filesystem is read-only) and /dev/shm.
# A resource's podTemplatePatch may not take these names or paths.
SPEC_VOLUME, SPEC_MOUNT = "mendel-spec", "/etc/mendel/spec"
SCRATCH_VOLUME, SCRATCH_MOUNT = "mendel-scratch", "/tmp"
SHM_VOLUME, SHM_MOUNT = "dshm", "/dev/shm"
RESERVED_VOLUMES = frozenset({SPEC_VOLUME, SCRATCH_VOLUME, SHM_VOLUME})
RESERVED_MOUNT_PATHS = frozenset({SPEC_MOUNT, SCRATCH_MOUNT, SHM_MOUNT})


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
        for index, volume in enumerate(self.volumes):
            if volume.name in RESERVED_VOLUMES:
                raise FieldValueError(
                    f"volumes[{index}].name", f"'{volume.name}' is reserved for the operator's "
                    f"own volumes ({', '.join(sorted(RESERVED_VOLUMES))}); pick another name")
        for index, mount in enumerate(self.volume_mounts):
            if mount.mount_path.rstrip("/") in RESERVED_MOUNT_PATHS:
                raise FieldValueError(
                    f"volumeMounts[{index}].mountPath",
                    f"'{mount.mount_path}' is where the operator mounts its own volumes "
                    f"({', '.join(sorted(RESERVED_MOUNT_PATHS))}); mount below or elsewhere")
            if mount.name not in known:
                raise FieldValueError(
                    f"volumeMounts[{index}].name",
                    f"'{mount.name}' names no volume; known volumes: "
                    f"{', '.join(sorted(known)) or 'none'}",
                )
        return self
