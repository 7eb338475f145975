"""The QDEvolution workload: CycleQD wired to models, evaluators, MLflow and checkpoints.

`run_qdevolution` loads the base model and experts once, keeps one resident model for
every child, scores children with the spec's evaluators, records every accepted child's
lineage and each generation's metrics on the parent run, mirrors checkpoints to durable
storage, and at the end logs real weights for each task's elite and the final model
(registered under the spec's name, if any).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mendel.api.qdevolution import QDEvolutionSpec
from mendel.tracking import contract
from mendel.tracking.lineage import ModelLineage
from mendel.workloads.checkpoints import CheckpointSync
from mendel.workloads.context import RunContext
from mendel.workloads.fetch import fetch_model
from mendel.workloads.heatmap import archive_image

if TYPE_CHECKING:
    from mendel.engines.cycleqd.observer import Evaluate

__all__ = ["QDTracker", "run_qdevolution"]

logger = logging.getLogger(__name__)


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
        state = json.loads((path / "state.json").read_text())
        for task, archive in (state.get("archives") or {}).items():
            self.ctx.client.log_image(self.ctx.run_id, archive_image(archive),
                                      artifact_file=f"archives/{path.name}/{task}.png")
        self.sync.saved(path, self.last_generation)

    def on_finished(self, final: Any, scores: Mapping[str, float] | None) -> None:
        self.lineage.record(final, scores or {})


def run_qdevolution(spec: QDEvolutionSpec, ctx: RunContext,
                    on_summary: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run (or resume) CycleQD for a spec; returns a JSON-ready summary."""
    import torch

    from mendel.engines import cycleqd

    models_dir = ctx.work_dir / "models"
    base_dir = fetch_model(spec.base_model, models_dir)
    expert_dirs = {e.name: fetch_model(e, models_dir) for e in spec.experts}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base, experts = cycleqd.load_experts(base_dir, expert_dirs)
    identities = {e.name: f"expert={e.uri}@{e.revision}|base={spec.base_model.uri}"
                  f"@{spec.base_model.revision}" for e in spec.experts}
    bank = cycleqd.build_bank(base, experts, rank=spec.algorithm.mutation.rank,
                              svd_provider=cycleqd.SvdCache(ctx.work_dir / "svd", identities))
    del base, experts
    model = cycleqd.load_resident_model(base_dir, spec.precision).to(device)
    bank = cycleqd.place_bank(bank, model)  # once, so no child copies the bank to the device
    evaluate = _evaluator(spec, model, base_dir, ctx.work_dir / "eval-model")
    lineage = ModelLineage(ctx.client, ctx.run_id, ctx.experiment_id)
    lineage.reload()
    sync = CheckpointSync(ctx.client, ctx.run_id, ctx.work_dir / "checkpoints",
                          Path(ctx.output_uri) if ctx.output_uri and
                          ctx.output_uri.startswith("/") else None)
    resumed_from = sync.restore()
    tracker = QDTracker(ctx, lineage, sync, on_summary)
    engine = cycleqd.CycleQD(spec, bank, model, evaluate, checkpoint_dir=sync.engine_dir,
                             observer=tracker)
    result = engine.run()
    saved = _log_models(spec, ctx, lineage, result, model, bank, base_dir)
    return {
        "kind": "QDEvolution", "name": ctx.name, "runId": ctx.run_id,
        "resumedFrom": resumed_from, "generations": result.summary.generation,
        "coverage": round(result.summary.coverage, 4),
        "qdScore": round(result.summary.qd_score, 4),
        "best": result.summary.best, "final": {"scores": result.final_scores, **saved},
        "experts": {k: dict(v) for k, v in result.state.expert_scores.items()},
    }


def _evaluator(spec: QDEvolutionSpec, resident: Any, base_dir: Path,
               save_dir: Path) -> Evaluate:
    from transformers import AutoTokenizer

    from mendel.evaluators import build_evaluator
    from mendel.llm.local import LocalCausalLM

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    backend = LocalCausalLM(resident, tokenizer)
    evaluators = {t.name: build_evaluator(t.evaluator, t.name) for t in spec.tasks}

    def evaluate(model: Any) -> Mapping[str, float]:
        model_dir = None
        if any(e.needs_model_dir for e in evaluators.values()):
            model.save_pretrained(str(save_dir))
            tokenizer.save_pretrained(str(save_dir))
            model_dir = save_dir
        return {name: e.evaluate(backend, model_dir=model_dir) for name, e in evaluators.items()}

    return evaluate


def _log_models(spec: QDEvolutionSpec, ctx: RunContext, lineage: ModelLineage, result: Any,
                model: Any, bank: Any, base_dir: Path) -> dict[str, Any]:
    """Real weights for the final model (already in `model`) and each task's elite."""
    from mendel.engines import cycleqd

    uris = {e.name: e.uri for e in spec.experts}
    out = ctx.work_dir / "models-out"
    final_dir = cycleqd.save_model(model, out / "final", result.final,
                                   scores=result.final_scores, base_uri=spec.base_model.uri,
                                   expert_uris=uris, tokenizer_dir=base_dir)
    final_id = lineage.attach_weights(result.final.id, final_dir)
    registered = _register(spec, ctx, final_id)
    store = result.state.store
    for task, archive in result.state.archives.items():
        best = archive.best()
        if best is None or lineage.model_ids.get(best.genome_id) is None:
            continue
        cycleqd.materialize(store.recipe(best.genome_id), model, bank, store.recipe)
        genome = store.get(best.genome_id)
        elite_dir = cycleqd.save_model(model, out / f"elite-{task}", genome,
                                       scores=best.scores, base_uri=spec.base_model.uri,
                                       expert_uris=uris, tokenizer_dir=base_dir)
        lineage.attach_weights(best.genome_id, elite_dir)
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
