"""References to models, datasets and Secrets.

A model or dataset is named by one URI string, so manifests stay short and the same
reference works in `mendel run` on a laptop and in a driver Pod:

- a Hugging Face id, optionally `hf://`-prefixed, pinned with `revision`;
- an absolute path on a volume mounted into the Pod (`/models/llama-3-8b`);
- an object-store URI (`s3://bucket/prefix`);
- an MLflow registry URI (`models:/name/3` or `models:/name@alias`);
- for datasets only, `builtin:<name>`: data that ships with the worker (e.g. HumanEval).

Secrets are only ever referenced, never written inline.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mendel.api.base import ApiModel, cel

__all__ = [
    "DatasetRef",
    "ModelRef",
    "SecretKeyRef",
    "SecretRef",
    "Source",
    "reject_inline_secret",
    "source_of",
]

Source = Literal["huggingface", "volume", "s3", "mlflow", "builtin"]

_HF = r"(hf://)?[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+"
_VOLUME = r"/[^\s]*"
_S3 = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?"
_MLFLOW = r"models:/[A-Za-z0-9_.-]+(/[0-9]+|@[A-Za-z0-9_-]+)"
_BUILTIN = r"builtin:[a-z0-9][a-z0-9_-]*"
MODEL_URI_PATTERN = f"^({_HF}|{_VOLUME}|{_S3}|{_MLFLOW})$"
DATASET_URI_PATTERN = f"^({_HF}|{_VOLUME}|{_S3}|{_MLFLOW}|{_BUILTIN})$"
_URI_FORMS = (
    "a Hugging Face id such as 'org/name', an absolute path on a mounted volume, "
    "'s3://bucket/prefix' or 'models:/name/<version>' / 'models:/name@<alias>'"
)
_HF_ONLY_REVISION = cel(
    "!has(self.revision) || !(self.uri.startsWith('/') || self.uri.startsWith('s3://') "
    "|| self.uri.startsWith('models:/') || self.uri.startsWith('builtin:'))",
    "revision applies to Hugging Face ids only",
)


def source_of(uri: str) -> Source:
    """Classify a reference URI by where its content lives."""
    if uri.startswith("builtin:"):
        return "builtin"
    if uri.startswith("s3://"):
        return "s3"
    if uri.startswith("models:/"):
        return "mlflow"
    if uri.startswith("/"):
        return "volume"
    return "huggingface"


class SecretRef(ApiModel):
    """A Secret in the resource's namespace whose keys become environment variables."""

    name: str = Field(
        description="Name of the Secret; each key is exposed to the workload as an environment "
        "variable (e.g. HF_TOKEN, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )


class SecretKeyRef(ApiModel):
    """One key of a Secret in the resource's namespace."""

    name: str = Field(
        description="Name of the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    key: str = Field(
        description="Key within the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


def reject_inline_secret(value: Any, field: str) -> Any:
    """Turn an inline secret string into a clear error that says how to reference one."""
    if isinstance(value, str):
        raise ValueError(
            f"{field} must not be given inline; reference a Secret instead: "
            f"{field}: {{name: <secret>, key: <key>}}"
        )
    return value


class _Ref(ApiModel):
    @model_validator(mode="after")
    def _revision_only_for_hub(self) -> _Ref:
        revision = getattr(self, "revision", None)
        if revision is not None and source_of(self.uri) != "huggingface":  # type: ignore[attr-defined]
            raise ValueError("revision applies to Hugging Face ids only; remove it or use an hf id")
        return self


class ModelRef(_Ref):
    """Where a model's weights come from."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_HF_ONLY_REVISION]}}

    uri: str = Field(
        description=f"The model: {_URI_FORMS}.",
        min_length=1,
        max_length=512,
        pattern=MODEL_URI_PATTERN,
    )
    revision: str | None = Field(
        default=None,
        description="Hugging Face revision (branch, tag or commit) to pin; Hugging Face ids only.",
        max_length=128,
    )
    credentials: SecretRef | None = Field(
        default=None,
        description="Secret with the credentials needed to read the model (HF_TOKEN or S3 keys).",
    )

    @property
    def source(self) -> Source:
        """Where the weights live."""
        return source_of(self.uri)


class DatasetRef(_Ref):
    """Where a dataset comes from, and which split of it is used."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_HF_ONLY_REVISION]}}

    uri: str = Field(
        description=f"The dataset: {_URI_FORMS}, or 'builtin:<name>' for data shipped with the "
        "worker image (e.g. builtin:humaneval). Files are JSON Lines.",
        min_length=1,
        max_length=512,
        pattern=DATASET_URI_PATTERN,
    )
    revision: str | None = Field(
        default=None,
        description="Hugging Face revision to pin; Hugging Face ids only.",
        max_length=128,
    )
    split: Literal["train", "validation", "test"] = Field(
        default="train",
        description="Which split to read. Reading a 'test' split to drive optimisation is "
        "refused unless the resource sets allowTestSplit.",
    )
    limit: int | None = Field(
        default=None,
        description="Use at most this many records (taken in file order).",
        ge=1,
        le=10_000_000,
    )
    credentials: SecretRef | None = Field(
        default=None,
        description="Secret with the credentials needed to read the data (HF_TOKEN or S3 keys).",
    )

    @property
    def source(self) -> Source:
        """Where the data lives."""
        return source_of(self.uri)
