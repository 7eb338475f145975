"""`mendel operator`: run the Kubernetes operator (Kopf) for the three run kinds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def operator(
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-n", help="Namespace to watch (repeatable). Default: the "
        "MENDEL_NAMESPACES list or 'default'.")] = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", envvar="MENDEL_ALL_NAMESPACES",
        help="Watch every namespace (needs cluster-wide RBAC).")] = False,
    image: Annotated[str | None, typer.Option(
        help="Default worker image (MENDEL_WORKER_IMAGE).")] = None,
    worker_service_account: Annotated[str | None, typer.Option(
        envvar="MENDEL_WORKER_SERVICE_ACCOUNT",
        help="ServiceAccount of worker Pods whose resource names none.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="Default MLflow tracking URI (MLFLOW_TRACKING_URI).")] = None,
    allowed_tracking_uri: Annotated[list[str] | None, typer.Option(
        "--allowed-tracking-uri", help="A tracking server the operator may talk to "
        "(repeatable; MENDEL_ALLOWED_TRACKING_URIS, comma-separated). Default: only "
        "--tracking-uri. Resources naming any other are refused.")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        help="Kubeconfig; default: in-cluster account, else KUBECONFIG / ~/.kube/config.")
    ] = None,
    interval: Annotated[float, typer.Option(
        help="Seconds between status refreshes of a resource.")] = 30.0,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve Prometheus metrics on this port.")] = None,
    liveness: Annotated[str | None, typer.Option(
        help="Serve the liveness probe, e.g. http://0.0.0.0:8080/healthz.")] = None,
) -> None:
    """Run the operator until interrupted."""
    import kopf

    from mendel.controller.config import DEFAULT_IMAGE, OperatorConfig
    from mendel.controller.runtime.operator import run

    env_namespaces = _env_list("MENDEL_NAMESPACES")
    allowed = allowed_tracking_uri or _env_list("MENDEL_ALLOWED_TRACKING_URIS")
    default_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    settings = OperatorConfig(
        image=image or os.environ.get("MENDEL_WORKER_IMAGE", DEFAULT_IMAGE),
        tracking_uri=default_uri,
        # The default server is always allowed: it is the platform team's own choice.
        allowed_tracking_uris=tuple(dict.fromkeys([*([default_uri] if default_uri else []),
                                                   *allowed])) if allowed else None,
        worker_service_account=worker_service_account or None,
        namespaces=tuple(namespace or env_namespaces or ["default"]),
        clusterwide=all_namespaces,
        reconcile_interval=interval,
        metrics_port=metrics_port,
    )
    # Kopf's own logging set-up: per-object lines (retries, API errors) reach stderr.
    kopf.configure(verbose=False)
    run(settings, kubeconfig, liveness_endpoint=liveness)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def register(app: typer.Typer) -> None:
    """Add `mendel operator` to the CLI."""
    app.command("operator")(operator)
