"""Turning a ModelRef into a local directory of Hugging Face files.

Volume paths are used as they are; Hub ids, S3 prefixes and MLflow models are downloaded
once into a cache directory. Each client is imported only when its scheme is used.
Credentials come from the environment, where the operator exposes the referenced Secret.
"""

from __future__ import annotations

from pathlib import Path

from mendel.api.references import ModelRef
from mendel.workloads.context import WorkloadError

__all__ = ["fetch_model"]


def fetch_model(ref: ModelRef, cache_dir: Path) -> Path:
    """A local directory holding the referenced model.

    Raises:
        WorkloadError: the model cannot be found or downloaded.
    """
    if ref.source == "volume":
        path = Path(ref.uri)
        if not (path / "config.json").is_file():
            raise WorkloadError(f"model {ref.uri} not found: no config.json in that directory")
        return path
    target = cache_dir / _slug(ref)
    if (target / "config.json").is_file():
        return target
    try:
        if ref.source == "huggingface":
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=ref.uri.removeprefix("hf://"), revision=ref.revision,
                              local_dir=str(target))
        elif ref.source == "mlflow":
            import mlflow.artifacts

            mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(target))
        elif ref.source == "s3":
            _download_s3_prefix(ref.uri, target)
    except Exception as error:  # network, auth, missing: all end the same way for the user
        raise WorkloadError(f"cannot fetch model {ref.uri}: {error}") from error
    found = next((p.parent for p in target.rglob("config.json")), None)
    if found is None:
        raise WorkloadError(f"model {ref.uri} was fetched but holds no config.json")
    return found


def _slug(ref: ModelRef) -> str:
    text = f"{ref.uri}@{ref.revision or ''}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:200]


def _download_s3_prefix(uri: str, target: Path) -> None:
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix):].lstrip("/")
            if relative:
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(destination))
