"""The QDEvolution workload: CycleQD wired to models, evaluators, MLflow and checkpoints.

`run_qdevolution` fetches the base model and experts, then evolves in this process, or,
when the driver Pod has several GPUs, in one torchrun process per GPU, each holding its
own resident model and evaluating its share of every generation's children (see
`qd_ranks`). Either way this process records every accepted child's lineage and each
generation's metrics on the parent run, mirrors checkpoints to durable storage, and at
the end logs real weights for each task's elite and the final model (registered under the
spec's name, if any).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mendel.api.qdevolution import QDEvolutionSpec
from mendel.tracking import contract
from mendel.tracking.lineage import ModelLineage
from mendel.workloads import qd_ranks, torchrun
from mendel.workloads.checkpoints import CheckpointSync
from mendel.workloads.context import RunContext
from mendel.workloads.fetch import fetch_model
from mendel.workloads.heatmap import archive_image

__all__ = ["QDTracker", "run_qdevolution"]

logger = logging.getLogger(__name__)
_KEEP_CHECKPOINTS = 2


class QDTracker:
    """The engine's observer: metrics, lineage, checkpoints and heatmaps to MLflow."""

    def __init__(self, ctx: RunContext, lineage: ModelLineage, sync: CheckpointSync,
                 on_summary: Callable[[Any], None] | None = None) -> None:
        self.ctx = ctx
        self.lineage = lineage
        self.sync = sync
        self.on_summary = on_summary
        self.last_generation = 0

    def on_generation(self, summary: Any) -> None:
        from mlflow.entities import Metric

        self.last_generation = summary.generation
        values = {
            contract.METRIC_PROGRESS_STEP: summary.generation,
            contract.METRIC_PROGRESS_TOTAL: summary.total,
            contract.METRIC_QD_CELLS: summary.cells,
            contract.METRIC_QD_FILLED: summary.filled,
            contract.METRIC_QD_COVERAGE: summary.coverage,
            contract.METRIC_QD_SCORE: summary.qd_score,
            "qd/failed": summary.failed,
            **{contract.best_metric(task): score for task, score in summary.best.items()},
        }
        metrics = [Metric(key, float(value), _now_ms(), summary.generation)
                   for key, value in values.items()]
        self.ctx.client.log_batch(self.ctx.run_id, metrics=metrics)
        if self.on_summary is not None:
            self.on_summary(summary)

    def on_child_accepted(self, genome: Any, scores: Mapping[str, float],
                          cells: Mapping[str, Any]) -> None:
        self.lineage.record(genome, scores, cells)

    def on_child_rejected(self, genome: Any, scores: Mapping[str, float]) -> None:
        logger.debug("child %s entered no archive: %s", genome.id, dict(scores))

    def on_child_failed(self, genome: Any, error: Exception) -> None:
        logger.warning("evaluating %s failed: %s", genome.id, error)

    def on_checkpoint(self, path: Path) -> None:
        """Heatmaps and the durable copy; then older checkpoints go (torchrun's rank 0
        keeps them all, since this process reads them after it moved on)."""
        from mendel.engines.cycleqd import prune_checkpoints

        state = json.loads((path / "state.json").read_text())
        for task, archive in (state.get("archives") or {}).items():
            self.ctx.client.log_image(self.ctx.run_id, archive_image(archive),
                                      artifact_file=f"archives/{path.name}/{task}.png")
        self.sync.saved(path, self.last_generation)
        prune_checkpoints(path.parent, _KEEP_CHECKPOINTS, upto=path.name)

    def on_finished(self, final: Any, scores: Mapping[str, float] | None) -> None:
        self.lineage.record(final, scores or {})


def run_qdevolution(spec: QDEvolutionSpec, ctx: RunContext,
                    on_summary: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run (or resume) CycleQD for a spec; returns a JSON-ready summary."""
    models_dir = ctx.work_dir / "models"
    base_dir = fetch_model(spec.base_model, models_dir)
    expert_dirs = {e.name: str(fetch_model(e, models_dir)) for e in spec.experts}
    lineage = ModelLineage(ctx.client, ctx.run_id, ctx.experiment_id)
    lineage.reload()
    sync = CheckpointSync(ctx.client, ctx.run_id, ctx.work_dir / "checkpoints",
                          Path(ctx.output_uri) if ctx.output_uri and
                          ctx.output_uri.startswith("/") else None)
    resumed_from = sync.restore()
    tracker = QDTracker(ctx, lineage, sync, on_summary)
    plan = qd_ranks.RankPlan(
        spec=spec.model_dump(mode="json", by_alias=True), base_dir=str(base_dir),
        expert_dirs=expert_dirs, work_dir=str(ctx.work_dir),
        checkpoint_dir=str(sync.engine_dir), out_dir=str(ctx.work_dir / "models-out"),
        result=str(ctx.work_dir / "qd-result.json"), threads=_threads(),
        svd_dir=str(svd_cache_dir(ctx)))
    processes = qd_ranks.process_count(spec)
    if processes > 1:
        outputs = _evolve_with_torchrun(plan, processes, tracker, ctx.work_dir)
    else:
        outputs = _evolve_here(plan, tracker)
    saved = _log_models(spec, ctx, lineage, outputs)
    return {
        "kind": "QDEvolution", "name": ctx.name, "runId": ctx.run_id,
        "resumedFrom": resumed_from, "generations": outputs["generations"],
        "processes": processes, "coverage": round(outputs["coverage"], 4),
        "qdScore": round(outputs["qdScore"], 4), "best": outputs["best"],
        "final": {"scores": outputs["final"]["scores"], **saved},
        "experts": outputs["experts"],
    }


def svd_cache_dir(ctx: RunContext) -> Path:
    """Where the experts' SVD bases are kept. They outlive a run: on the output volume they
    sit beside the runs' own folders (the operator appends <namespace>/<name>/<uid> to
    output.uri), so a later run of the same experts reuses them (the cache keys each file
    by expert, base, rank and shapes, and writes it atomically)."""
    if ctx.output_uri and ctx.output_uri.startswith("/"):
        output = Path(ctx.output_uri)
        return (output.parents[2] if len(output.parts) > 4 else output) / "svd-cache"
    return ctx.work_dir / "svd"


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _evolve_here(plan: qd_ranks.RankPlan, tracker: QDTracker) -> dict[str, Any]:
    import torch

    from mendel.engines.cycleqd import SINGLE_PROCESS

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    outputs = qd_ranks.evolve(plan, device, SINGLE_PROCESS, tracker)
    if outputs is None:
        raise RuntimeError("the evolution returned no outputs")
    return outputs


def _evolve_with_torchrun(plan: qd_ranks.RankPlan, processes: int, tracker: QDTracker,
                          work_dir: Path) -> dict[str, Any]:
    """Start the ranks, replay rank 0's progress lines into the tracker, read the result."""
    progress, result = work_dir / qd_ranks.PROGRESS_FILE, Path(plan.result)
    result.unlink(missing_ok=True)
    offset = progress.stat().st_size if progress.is_file() else 0
    logger.info("evolving on %d torchrun processes", processes)
    process = qd_ranks.launch(plan, work_dir / "qd-rank-plan.json", processes)
    torchrun.supervise(process, progress, offset, lambda line: qd_ranks.replay(line, tracker))
    if not result.is_file():
        raise RuntimeError("torchrun exited without rank 0's result; see the log above")
    outputs: dict[str, Any] = json.loads(result.read_text())
    return outputs


def _log_models(spec: QDEvolutionSpec, ctx: RunContext, lineage: ModelLineage,
                outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Attach the saved weights of the final model and of each task's best elite to their
    lineage models, and register the final one."""
    final = outputs["final"]
    final_id = lineage.attach_weights(final["id"], Path(final["dir"]))
    registered = _register(spec, ctx, final_id)
    for elite in outputs["elites"]:
        if lineage.model_ids.get(elite["genomeId"]) is not None:
            lineage.attach_weights(elite["genomeId"], Path(elite["dir"]))
    return {"modelId": final_id, "registered": registered}


def _register(spec: QDEvolutionSpec, ctx: RunContext, model_id: str) -> dict[str, str] | None:
    target = spec.tracking.mlflow.registered_model
    if target is None:
        return None
    client = ctx.client
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(target.name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"models:/{model_id}"
    existing = [v for v in client.search_model_versions(f"name = '{target.name}'")
                if v.source == source]
    version = existing[0] if existing else client.create_model_version(
        target.name, source, run_id=ctx.run_id, model_id=model_id)
    client.set_registered_model_alias(target.name, target.alias, version.version)
    return {"name": target.name, "version": str(version.version), "alias": target.alias}


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
