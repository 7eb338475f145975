"""Prometheus metrics of the operator, on a registry of its own (no global state).

Label cardinality stays at kind / phase / condition (never names or namespaces), so the
series count does not grow with the number of resources.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]


class Metrics:
    """The operator's metrics and the per-resource phase table behind the phase gauge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.resources = Gauge("mendel_resources", "Run resources by kind and phase.",
                               ["kind", "phase"], registry=self.registry)
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
        self._phases: dict[str, tuple[str, str]] = {}

    def serve(self, port: int) -> None:
        """Expose /metrics on the port (a daemon thread)."""
        start_http_server(port, registry=self.registry)

    def observe_phase(self, uid: str, kind: str, phase: str | None) -> None:
        """Record a resource's phase (None: it is gone) and refresh the gauge."""
        if phase is None:
            self._phases.pop(uid, None)
        else:
            self._phases[uid] = (kind, phase)
        counts = Tally(self._phases.values())
        self.resources.clear()
        for (k, p), n in counts.items():
            self.resources.labels(kind=k, phase=p).set(n)
