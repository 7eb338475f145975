"""Operator-wide Kopf handlers: login, settings at start-up, liveness and clean-up.

- `operator_login`: credentials from the injected kubeconfig (or the in-cluster account).
- `operator_configure` (startup): Mendel's own finalizer and annotation prefixes (day-0
  choices: changing them later re-triggers handlers), timeouts, event level, standalone
  peering, server capabilities, the metrics endpoint.
- `operator_watch_age` (probe): seconds since the last watch event (informational).
- `operator_api_reachable` (probe): the API server's version; it raises when the server
  cannot be reached, and Kopf then answers /healthz with 500.
- `operator_cleanup`: frees the metrics port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from mendel.api.kinds import GROUP
from mendel.controller.config import Capabilities
from mendel.controller.runtime.context import OperatorContext

__all__ = ["FINALIZER", "register"]

FINALIZER = f"{GROUP}/finalizer"
EXECUTOR_THREADS = 16
PROBE_TIMEOUT = 10.0


def _ctx(memo: kopf.Memo) -> OperatorContext:
    context: OperatorContext = memo["mendel"]
    return context


async def operator_configure(settings: kopf.OperatorSettings, memo: kopf.Memo,
                             logger: kopf.Logger, **_: Any) -> None:
    """Settings and server capabilities, once, before any resource is handled."""
    ctx = _ctx(memo)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.networking.request_timeout = ctx.config.request_timeout
    settings.watching.server_timeout = ctx.config.watch_timeout
    settings.watching.client_timeout = ctx.config.watch_timeout + 30
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    settings.scanning.disabled = not ctx.config.clusterwide
    # MLflow and Kubernetes calls run in the loop's default executor; its default size
    # (cpus + 4) queues hundreds of resources behind a few threads.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="mendel"))
    settings.execution.max_workers = EXECUTOR_THREADS
    major, minor = await asyncio.to_thread(ctx.kube.server_version)
    capabilities = Capabilities.from_version(major, minor)
    ctx.config = dataclasses.replace(ctx.config, capabilities=capabilities)
    if ctx.config.metrics_port:
        try:
            ctx.metrics.serve(ctx.config.metrics_port)
        except OSError as error:
            raise kopf.PermanentError(
                f"cannot serve metrics on port {ctx.config.metrics_port}: {error}") from error
    logger.info(f"API server {major}.{minor}: {capabilities}")


async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Free the metrics port when the operator stops."""
    _ctx(memo).metrics.close()


async def operator_watch_age(memo: kopf.Memo, **_: Any) -> float:
    """Seconds since the operator last heard from a watch (informational)."""
    return round(time.monotonic() - _ctx(memo).last_event, 1)


async def operator_api_reachable(memo: kopf.Memo, **_: Any) -> str:
    """The API server's version; raising makes /healthz answer 500, so a dead connection
    to the API server fails the liveness probe instead of showing green."""
    ctx = _ctx(memo)
    major, minor = await asyncio.wait_for(asyncio.to_thread(ctx.kube.server_version),
                                          timeout=PROBE_TIMEOUT)
    return f"{major}.{minor}"


def register(registry: kopf.OperatorRegistry, login: Any) -> None:
    """Add the operator-wide handlers; `login` returns a kopf.ConnectionInfo."""
    kopf.on.login(id="operator_login", registry=registry)(login)
    kopf.on.startup(id="operator_configure", registry=registry)(operator_configure)
    kopf.on.cleanup(id="operator_cleanup", registry=registry)(operator_cleanup)
    kopf.on.probe(id="operator_watch_age", registry=registry)(operator_watch_age)
    kopf.on.probe(id="operator_api_reachable", registry=registry)(operator_api_reachable)
