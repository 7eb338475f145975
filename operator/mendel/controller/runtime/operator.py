"""Run the operator: build the context and registry, log in, and hand over to Kopf.

`run` is what `mendel operator` calls; tests call it in a thread with a stop flag. The
Kubernetes credentials come from a kubeconfig path or the in-cluster service account.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config

from mendel.controller.config import OperatorConfig
from mendel.controller.runs import handlers as run_handlers
from mendel.controller.runs.apply import KubeGateway
from mendel.controller.runtime import handlers as runtime_handlers
from mendel.controller.runtime.context import OperatorContext

__all__ = ["bearer_token", "build_registry", "kube_configuration", "run"]

# MLflow's client defaults (120 s timeout, 5 retries with backoff) would stall a reconcile
# for minutes while the server is down; the operator wants a fast "not now".
MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def kube_configuration(kubeconfig: Path | None) -> client.Configuration:
    """Client configuration from a kubeconfig, or the in-cluster account."""
    cfg = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=cfg)
    cfg.connection_pool_maxsize = 16
    return cfg


def bearer_token(cfg: client.Configuration) -> str | None:
    """The bare token of a client configuration, whatever its header's prefix.

    A kubeconfig stores `Bearer <token>` under `authorization`; the in-cluster loader
    stores `bearer <token>` (lower case) under `BearerToken`. Kopf adds its own `Bearer `,
    so the scheme is stripped case-insensitively (RFC 7235: auth schemes are).
    """
    keys = cfg.api_key or {}
    header = (keys.get("authorization") or keys.get("BearerToken") or "").strip()
    scheme, _, rest = header.partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header
    return token or None


def _login(cfg: client.Configuration) -> Any:
    async def operator_login(**_: Any) -> kopf.ConnectionInfo:
        # Kopf logs in again after a 401: re-read a rotated in-cluster token file first.
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = bearer_token(cfg)
        return kopf.ConnectionInfo(
            server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
            token=token, certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
            default_namespace="default",
        )
    return operator_login


def build_registry(cfg: client.Configuration) -> kopf.OperatorRegistry:
    """A fresh registry with every Mendel handler (nothing is registered on import)."""
    registry = kopf.OperatorRegistry()
    runtime_handlers.register(registry, _login(cfg))
    run_handlers.register(registry)
    return registry


def run(settings: OperatorConfig, kubeconfig: Path | None = None, *,
        stop_flag: threading.Event | None = None, ready_flag: threading.Event | None = None,
        liveness_endpoint: str | None = None, context: OperatorContext | None = None) -> None:
    """Run the operator until stopped (SIGINT/SIGTERM or `stop_flag`)."""
    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    cfg = kube_configuration(kubeconfig)
    ctx = context or OperatorContext(config=settings, kube=KubeGateway(client.ApiClient(cfg)))
    memo = kopf.Memo(mendel=ctx)
    asyncio.run(kopf.operator(
        registry=build_registry(cfg), memo=memo, standalone=True,
        clusterwide=settings.clusterwide,
        namespaces=[] if settings.clusterwide else list(settings.namespaces),
        stop_flag=stop_flag, ready_flag=ready_flag, liveness_endpoint=liveness_endpoint,
    ))
