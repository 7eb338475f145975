"""Prometheus metrics of the operator, on a registry of its own (no global state).

Label cardinality stays at kind / phase / condition (never names or namespaces), so the
series count does not grow with the number of resources.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]


class _PhaseCollector(Collector):
    """`mendel_resources`, counted from the phase table when scraped.

    Building the family at collect time means a scrape never sees a half-updated gauge
    (clearing and re-setting a Gauge races with the HTTP thread).
    """

    def __init__(self, phases: dict[str, tuple[str, str]], lock: threading.Lock) -> None:
        self._phases = phases
        self._lock = lock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            counts = Tally(self._phases.values())
        family = GaugeMetricFamily("mendel_resources", "Run resources by kind and phase.",
                                   labels=["kind", "phase"])
        for (kind, phase), count in sorted(counts.items()):
            family.add_metric([kind, phase], count)
        yield family


class Metrics:
    """The operator's metrics and the per-resource phase table behind the phase gauge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._phases: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.registry.register(_PhaseCollector(self._phases, self._lock))
        self._server: Any = None
        self.transitions = Counter("mendel_condition_transitions_total",
                                   "Condition changes (one Event each).",
                                   ["kind", "type", "status"], registry=self.registry)
        self.reconcile_seconds = Histogram("mendel_reconcile_seconds",
                                           "Time of one reconcile pass.", ["kind"],
                                           registry=self.registry)
        self.mlflow_errors = Counter("mendel_mlflow_errors_total",
                                     "Failed calls to MLflow.", registry=self.registry)
        self.api_errors = Counter("mendel_api_errors_total",
                                  "Failed calls to the Kubernetes API.", ["verb"],
                                  registry=self.registry)

    def serve(self, port: int) -> None:
        """Expose /metrics on the port (a daemon thread) until `close`.

        Raises:
            OSError: the port is taken.
        """
        self._server, _ = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        """Stop serving /metrics and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def observe_phase(self, uid: str, kind: str, phase: str | None) -> None:
        """Record a resource's phase (None: it is gone)."""
        with self._lock:
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = (kind, phase)
