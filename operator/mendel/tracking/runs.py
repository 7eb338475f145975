"""Operator-side MLflow parent runs: find or create, end, and read back.

The operator creates one parent run per resource, tagged with the resource's uid, and
finds it again by that tag after a restart, so a run is never created twice. The workload
logs to that run (contract.py names the tags and metrics); the operator reads the latest
values back into the resource's status. The MLflow client is injected (an
`mlflow.MlflowClient` or a fake); mlflow itself is imported only where a client is built.

Failures map onto one exception:

    TrackingUnavailable   the server could not be reached or answered an error
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mendel.tracking import contract

__all__ = ["EXPERIMENT_KIND_TAG", "MODEL_DEVELOPMENT", "TERMINAL_STATUSES", "RunSnapshot",
           "TrackingUnavailable", "end_run", "ensure_parent_run", "experiment_name",
           "find_run", "load_prompt_text", "make_client", "make_operator_client", "read_run",
           "reopen_run", "run_url"]

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow's UI reads to choose between its GenAI and its model-training
("Machine learning") views; an experiment without it is guessed at, and Mendel's runs were
guessed as GenAI. MLflow spells the tag only in its UI code, not as a Python constant."""
MODEL_DEVELOPMENT = "custom_model_development"
"""The value of EXPERIMENT_KIND_TAG for the model-training view."""


class TrackingUnavailable(Exception):
    """MLflow could not be reached or refused the request (temporary: retry later)."""


@dataclass(frozen=True)
class RunSnapshot:
    """What the operator knows of a parent run, or why it knows nothing."""

    run_id: str | None = None
    experiment_id: str | None = None
    url: str | None = None
    status: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    updated_ms: int | None = None
    error: str | None = None


def make_client(tracking_uri: str) -> Any:
    """An MlflowClient for the URI (imports mlflow on first use)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def make_operator_client(tracking_uri: str) -> Any:
    """An MlflowClient whose registry (models, prompts) is the tracking server itself.

    MLflow would otherwise follow MLFLOW_REGISTRY_URI from the environment; the operator
    talks only to the tracking servers it was allowed (OperatorConfig.allowed_uris).
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_name(kind: str, namespace: str, configured: str | None) -> str:
    """The spec's experiment, or mendel/<namespace>/<kind>."""
    return configured or f"mendel/{namespace}/{kind}"


def run_url(base: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """Link to the run in the MLflow UI, when the tracking URI is a web server."""
    if not base or not experiment_id or not run_id or not base.startswith("http"):
        return None
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ensure_parent_run(
    client: Any,
    *,
    experiment: str,
    tags: Mapping[str, str],
    run_name: str,
    known_run_id: str | None = None,
    parent_run_id: str | None = None,
    base_url: str | None = None,
    previous_run_id: str | None = None,
) -> RunSnapshot:
    """The parent run of the resource's current run, found by id, then by the uid and run
    index tags, else created (linked to `previous_run_id`, the run a restart replaced).

    Raises:
        TrackingUnavailable: MLflow cannot be reached or fails.
    """
    index = tags.get(contract.TAG_RUN_INDEX, "0")
    try:
        if known_run_id:
            run = _get(client, known_run_id)
            if run is not None and _run_index(run) == index:
                return _snapshot(run, base_url)
        experiment_id = _experiment_id(client, experiment)
        found = [r for r in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{contract.TAG_UID}` = '{tags[contract.TAG_UID]}'",
            max_results=100,
            order_by=["attributes.start_time ASC"],
        ) if _run_index(r) == index]
        if found:
            return _snapshot(found[0], base_url)
        all_tags = dict(tags)
        if index != "0":
            run_name = f"{run_name} (run {index})"
        all_tags["mlflow.runName"] = run_name
        if previous_run_id:
            all_tags[contract.TAG_PREVIOUS_RUN_ID] = previous_run_id
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
        return _snapshot(run, base_url)
    except TrackingUnavailable:
        raise
    except Exception as error:  # MlflowException, requests errors: all mean "not now"
        raise TrackingUnavailable(_describe(error)) from error


def _run_index(run: Any) -> str:
    """The run index a parent run carries (runs made before restarts existed are run 0)."""
    return str(run.data.tags.get(contract.TAG_RUN_INDEX, "0"))


def find_run(client: Any, experiment: str, uid: str, index: int) -> str | None:
    """The id of run `index` of a resource, if it exists (to link a restart to it).

    Raises:
        TrackingUnavailable: MLflow cannot be reached or fails.
    """
    try:
        found = client.search_runs(
            [_experiment_id(client, experiment)],
            filter_string=f"tags.`{contract.TAG_UID}` = '{uid}'", max_results=100)
    except Exception as error:
        raise TrackingUnavailable(_describe(error)) from error
    return next((str(r.info.run_id) for r in found if _run_index(r) == str(index)), None)


def read_run(client: Any, run_id: str, base_url: str | None = None) -> RunSnapshot:
    """Latest metrics and tags of a run.

    Raises:
        TrackingUnavailable: MLflow cannot be reached or the run is gone.
    """
    try:
        run = _get(client, run_id)
    except Exception as error:
        raise TrackingUnavailable(_describe(error)) from error
    if run is None:
        raise TrackingUnavailable(f"run {run_id} does not exist")
    return _snapshot(run, base_url)


def end_run(client: Any, run_id: str, status: str = "KILLED") -> bool:
    """End a run with `status` (FINISHED, FAILED or KILLED), unless it has ended already.

    The first end wins: a run that FINISHED stays FINISHED when its resource is deleted
    later, so MLflow keeps the outcome the run actually had.

    Returns:
        Whether this call ended the run.

    Raises:
        TrackingUnavailable: MLflow cannot be reached.
    """
    try:
        run = _get(client, run_id)
        if run is None or run.info.status in TERMINAL_STATUSES:
            return False
        client.set_terminated(run_id, status=status)
    except Exception as error:
        raise TrackingUnavailable(_describe(error)) from error
    return True


def reopen_run(client: Any, run_id: str) -> bool:
    """Mark an ended run RUNNING again (a finished run resumed with a larger budget).

    Returns:
        Whether the run had ended and was reopened.

    Raises:
        TrackingUnavailable: MLflow cannot be reached.
    """
    try:
        run = _get(client, run_id)
        if run is None or run.info.status not in TERMINAL_STATUSES:
            return False
        client.update_run(run_id, status="RUNNING")
    except Exception as error:
        raise TrackingUnavailable(_describe(error)) from error
    return True


def load_prompt_text(client: Any, name: str, version: str) -> str:
    """The template of one version of a text prompt in the Prompt Registry.

    Raises:
        TrackingUnavailable: MLflow cannot be reached, the version does not exist, or it
            is a chat prompt (a list of messages), not text.
    """
    try:
        prompt = client.get_prompt_version(name, version)
    except Exception as error:
        raise TrackingUnavailable(_describe(error)) from error
    if prompt is None:
        raise TrackingUnavailable(f"prompt {name} version {version} does not exist")
    template = prompt.template
    if not isinstance(template, str):
        raise TrackingUnavailable(f"prompt {name} version {version} is not a text prompt")
    return template


def _get(client: Any, run_id: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _experiment_id(client: Any, name: str) -> str:
    """The id of the named experiment, created (or restored) if needed, and tagged for
    MLflow's model-training view."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
            # Made before Mendel tagged its experiments, or by someone who chose no view:
            # a kind someone did choose is left alone.
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                      MODEL_DEVELOPMENT)
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}))
    except MlflowException:
        # Another operator replica or a concurrent reconcile created it first.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _snapshot(run: Any, base_url: str | None) -> RunSnapshot:
    info, data = run.info, run.data
    metric_objects = getattr(data, "_metric_objs", None) or []
    updated = max((m.timestamp for m in metric_objects), default=None)
    return RunSnapshot(
        run_id=info.run_id,
        experiment_id=str(info.experiment_id),
        url=run_url(base_url, str(info.experiment_id), info.run_id),
        status=info.status,
        metrics=dict(data.metrics),
        tags=dict(data.tags),
        updated_ms=updated,
    )


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return f"{type(error).__name__}: {first}"[:300]
