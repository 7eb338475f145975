"""Operator-wide Kopf handlers: login, settings at start-up, liveness and clean-up.

- `operator_login`: credentials from the injected kubeconfig (or the in-cluster account).
- `operator_configure` (startup): Mendel's own finalizer and annotation prefixes (day-0
  choices: changing them later re-triggers handlers), timeouts, event level, standalone
  peering, server capabilities, the metrics endpoint.
- `operator_watch_age` (probe): seconds since the last watch event, so a stuck watch
  shows in /healthz instead of a green light.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import kopf

from mendel.api.kinds import GROUP
from mendel.controller.config import Capabilities
from mendel.controller.runtime.context import OperatorContext

__all__ = ["FINALIZER", "register"]

FINALIZER = f"{GROUP}/finalizer"


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
    major, minor = await asyncio.to_thread(ctx.kube.server_version)
    capabilities = Capabilities.from_version(major, minor)
    ctx.config = dataclasses.replace(ctx.config, capabilities=capabilities)
    if ctx.config.metrics_port:
        ctx.metrics.serve(ctx.config.metrics_port)
    logger.info(f"API server {major}.{minor}: {capabilities}")


async def operator_watch_age(memo: kopf.Memo, **_: Any) -> float:
    """Seconds since the operator last heard from a watch."""
    return round(time.monotonic() - _ctx(memo).last_event, 1)


def register(registry: kopf.OperatorRegistry, login: Any) -> None:
    """Add the operator-wide handlers; `login` returns a kopf.ConnectionInfo."""
    kopf.on.login(id="operator_login", registry=registry)(login)
    kopf.on.startup(id="operator_configure", registry=registry)(operator_configure)
    kopf.on.probe(id="operator_watch_age", registry=registry)(operator_watch_age)
