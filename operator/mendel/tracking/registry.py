"""Registering a LoggedModel in MLflow's model registry, once.

A retried or resumed workload registers the same model again; looking the version up by
its source first keeps one registry version per model instead of one per attempt.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register_model"]


def register_model(client: Any, *, name: str, alias: str, model_id: str,
                   run_id: str) -> dict[str, str]:
    """Register `models:/<model_id>` under `name` (once) and point `alias` at it."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"models:/{model_id}"
    existing = [v for v in client.search_model_versions(f"name = '{name}'")
                if v.source == source]
    version = existing[0] if existing else client.create_model_version(
        name, source, run_id=run_id, model_id=model_id)
    client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": str(version.version), "alias": alias}
