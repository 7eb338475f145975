"""The operator's shared state, kept in the Kopf memo (never in module globals).

One `OperatorContext` per operator process: settings, the injected clients, metrics, the
time of the last watch event (for the liveness probe) and, per resource, a lock and the
status last written (so a timer and a change handler never act on a stale status).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mendel.controller.config import OperatorConfig
from mendel.controller.runs.apply import KubeGateway
from mendel.controller.runtime.metrics import Metrics
from mendel.tracking import runs as tracking

__all__ = ["OperatorContext"]


@dataclass
class OperatorContext:
    """Everything the handlers share."""

    config: OperatorConfig
    kube: KubeGateway
    metrics: Metrics = field(default_factory=Metrics)
    client_factory: Callable[[str], Any] = tracking.make_operator_client
    last_event: float = field(default_factory=time.monotonic)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    nudges: dict[str, asyncio.Event] = field(default_factory=dict)
    api_errors: dict[str, str] = field(default_factory=dict)
    library_warnings: dict[str, str] = field(default_factory=dict)
    """Per resource, the last library publishing Warning posted (posted once, not per pass)."""
    _clients: dict[str, Any] = field(default_factory=dict)

    def mlflow(self, uri: str) -> Any:
        """The (cached) MLflow client of a tracking URI."""
        if uri not in self._clients:
            self._clients[uri] = self.client_factory(uri)
        return self._clients[uri]

    def lock(self, uid: str) -> asyncio.Lock:
        """The lock that serialises reconciles of one resource."""
        return self.locks.setdefault(uid, asyncio.Lock())

    def touch(self, uid: str | None = None) -> None:
        """Note that a watch event arrived (for a resource's child: wake its observer)."""
        self.last_event = time.monotonic()
        if uid is not None:
            self.nudge(uid).set()

    def nudge(self, uid: str) -> asyncio.Event:
        """The event that wakes a resource's observer early."""
        return self.nudges.setdefault(uid, asyncio.Event())

    def forget(self, uid: str) -> None:
        """Drop what is kept for a deleted resource."""
        self.statuses.pop(uid, None)
        self.locks.pop(uid, None)
        self.nudges.pop(uid, None)
        self.api_errors.pop(uid, None)
        self.library_warnings.pop(uid, None)
