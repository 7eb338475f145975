"""Downloading dataset files from S3, the Hugging Face Hub and MLflow.

Each client is imported only when its scheme is used, so a worker image needs only the
clients its datasets use. Credentials come from the environment (the Secret a
DatasetRef names is exposed there by the operator).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mendel.api.references import DatasetRef

__all__ = ["download"]


def download(ref: DatasetRef, cache_dir: Path | None = None) -> Path:
    """Fetch the file or folder a remote reference names and return its local path."""
    target = cache_dir or Path(tempfile.mkdtemp(prefix="mendel-data-"))
    target.mkdir(parents=True, exist_ok=True)
    if ref.source == "s3":
        return _from_s3(ref.uri, target)
    if ref.source == "mlflow":
        import mlflow.artifacts

        return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(target)))
    if ref.source == "huggingface":
        from huggingface_hub import snapshot_download

        repo = ref.uri.removeprefix("hf://")
        return Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=ref.revision,
                                      local_dir=str(target / repo.replace("/", "--"))))
    raise ValueError(f"{ref.uri}: not a remote dataset")


def _from_s3(uri: str, target: Path) -> Path:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    destination = target / Path(key).name
    client.download_file(bucket, key, str(destination))
    return destination
