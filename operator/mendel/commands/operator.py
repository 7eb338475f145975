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
        "--all-namespaces", "-A", help="Watch every namespace (needs cluster-wide RBAC).")] = False,
    image: Annotated[str | None, typer.Option(
        help="Default worker image (MENDEL_WORKER_IMAGE).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="Default MLflow tracking URI (MLFLOW_TRACKING_URI).")] = None,
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

    env_namespaces = [n for n in os.environ.get("MENDEL_NAMESPACES", "").split(",") if n]
    settings = OperatorConfig(
        image=image or os.environ.get("MENDEL_WORKER_IMAGE", DEFAULT_IMAGE),
        tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        namespaces=tuple(namespace or env_namespaces or ["default"]),
        clusterwide=all_namespaces,
        reconcile_interval=interval,
        metrics_port=metrics_port,
    )
    # Kopf's own logging set-up: per-object lines (retries, API errors) reach stderr.
    kopf.configure(verbose=False)
    run(settings, kubeconfig, liveness_endpoint=liveness)


def register(app: typer.Typer) -> None:
    """Add `mendel operator` to the CLI."""
    app.command("operator")(operator)
