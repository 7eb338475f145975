"""The bounded mirror of what the workload reported to MLflow: progress, latest metrics,
checkpoint, registered model and the kind's own summary.

Pure: a `RunSnapshot` (metrics and tags of the parent run) in, wire-form status fragments
out. Names of metrics and tags come from `mendel.tracking.contract` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mendel.api.envelope import SpecEnvelope
from mendel.api.qdevolution import QDEvolutionSpec
from mendel.controller.runs import specs
from mendel.tracking import contract
from mendel.tracking.runs import RunSnapshot

__all__ = ["checkpoint", "fmt", "kind_summary", "latest_metrics", "mlflow_status", "progress"]

MAX_METRICS = 32


def fmt(value: float) -> str:
    """A metric value as a short string (Kubernetes status carries no floats)."""
    return f"{value:.6g}"


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def progress(spec: SpecEnvelope | None, run: RunSnapshot, *, elapsed: float | None,
             finished: bool) -> dict[str, Any]:
    """step / total / percent and an ETA from the average step rate so far."""
    metrics = run.metrics
    step = int(metrics.get(contract.METRIC_PROGRESS_STEP, 0))
    total = int(metrics.get(contract.METRIC_PROGRESS_TOTAL, 0))
    if not total and spec is not None:
        total = specs.budget(spec) or 0
    out: dict[str, Any] = {"step": max(step, 0), "total": max(total, 0)}
    out["percent"] = min(100, step * 100 // total) if total > 0 and step > 0 else 0
    if not finished and elapsed and step > 0 and total > step:
        out["estimatedRemainingSeconds"] = int(elapsed / step * (total - step))
    updated = _time(run.updated_ms)
    if updated:
        out["lastUpdateTime"] = updated
    return out


def latest_metrics(run: RunSnapshot) -> list[dict[str, str]]:
    """Latest values, sorted by name, at most MAX_METRICS (per-task bests are summarised
    elsewhere)."""
    names = sorted(n for n in run.metrics if not n.startswith("qd/best/"))
    return [{"name": n[:128], "value": fmt(run.metrics[n])} for n in names[:MAX_METRICS]]


def checkpoint(run: RunSnapshot) -> dict[str, Any] | None:
    """The newest checkpoint the workload tagged, if any."""
    uri = run.tags.get(contract.TAG_CHECKPOINT_URI)
    if not uri:
        return None
    out: dict[str, Any] = {"uri": uri[:1024]}
    try:
        out["step"] = max(0, int(run.tags.get(contract.TAG_CHECKPOINT_STEP, "0")))
    except ValueError:
        out["step"] = 0
    return out


def mlflow_status(run: RunSnapshot, previous: Mapping[str, Any]) -> dict[str, Any]:
    """Experiment and run ids and the link; the previous ones while MLflow is down."""
    if run.run_id is None:
        return {k: v for k, v in previous.items() if k in ("experimentId", "runId", "runUrl",
                                                           "registeredModel")}
    out: dict[str, Any] = {"experimentId": run.experiment_id, "runId": run.run_id}
    if run.url:
        out["runUrl"] = run.url
    name = run.tags.get(contract.TAG_REGISTERED_NAME)
    version = run.tags.get(contract.TAG_REGISTERED_VERSION)
    if name and version:
        out["registeredModel"] = {"name": name[:256], "version": version[:32]}
    return out


def _count(metrics: Mapping[str, float], metric: str, tags: Mapping[str, str],
           tag: str) -> int:
    """A non-negative count from a metric, else from a tag, else 0."""
    if metric in metrics:
        return max(0, int(metrics[metric]))
    text = tags.get(tag, "")
    return int(text) if text.isdigit() else 0


def kind_summary(kind: str, spec: SpecEnvelope | None, run: RunSnapshot) -> dict[str, Any]:
    """The kind's own block: archive (QDEvolution), library or training summary."""
    m, tags = run.metrics, run.tags
    if kind == "QDEvolution":
        tasks = [t.name for t in spec.tasks] if isinstance(spec, QDEvolutionSpec) else []
        best = [{"task": t[:32], "score": fmt(m[contract.best_metric(t)])}
                for t in tasks if contract.best_metric(t) in m]
        return {"archive": {
            "cells": int(m.get(contract.METRIC_QD_CELLS, 0)),
            "filled": int(m.get(contract.METRIC_QD_FILLED, 0)),
            "coverage": fmt(m.get(contract.METRIC_QD_COVERAGE, 0.0)),
            "qdScore": fmt(m.get(contract.METRIC_QD_SCORE, 0.0)),
            "best": best[:8],
        }}
    if kind == "ExperienceLibrary":
        # Latest metrics first (they move during the run); the tags of the registered
        # final library stand in when the workload logged no metric. status.library.configMap
        # is the operator's own (status.py): it names what the operator has written.
        library: dict[str, Any] = {
            "size": _count(m, contract.METRIC_LIBRARY_SIZE, tags, contract.TAG_LIBRARY_SIZE),
            "version": _count(m, contract.METRIC_LIBRARY_VERSION, tags,
                              contract.TAG_LIBRARY_VERSION),
        }
        if contract.METRIC_SCORE_BEFORE in m:
            library["scoreBefore"] = fmt(m[contract.METRIC_SCORE_BEFORE])
        if contract.METRIC_SCORE_AFTER in m:
            library["scoreAfter"] = fmt(m[contract.METRIC_SCORE_AFTER])
        return {"library": library}
    if kind == "CompressorTraining":
        training: dict[str, Any] = {}
        if contract.METRIC_TRAIN_LOSS in m:
            training["loss"] = fmt(m[contract.METRIC_TRAIN_LOSS])
        if contract.METRIC_EVAL_SCORE in m:
            training["evalScore"] = fmt(m[contract.METRIC_EVAL_SCORE])
        if tags.get(contract.TAG_STAGE):
            training["stage"] = tags[contract.TAG_STAGE][:32]
        return {"training": training}
    return {}
