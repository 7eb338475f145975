"""The ExperienceLibrary workload: Training-Free GRPO wired to LLMs, MLflow and storage.

`run_experience_library` opens the agent, learner and judge backends, loads the practice
and held-out records, and runs the engine with its phases kept in the output location
(a mounted volume, or the parent run's artifacts, uploaded after every phase). Each step's
metrics and library go to the parent run; the final library is registered in MLflow's
Prompt Registry, and the run's tags tell the operator which prompt version to publish to
the resource's ConfigMap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mendel.api.experience import ExperienceLibrarySpec
from mendel.tracking import contract
from mendel.workloads.backends import BackendPool, sampling_of
from mendel.workloads.context import RunContext, WorkloadError

__all__ = ["LibraryProgress", "run_experience_library"]

logger = logging.getLogger(__name__)
_STORE = "tfgrpo"
_LEARNER_MIN_TOKENS = 512
"""A learner reply holds a summary or a JSON plan; an agent budget of 128 tokens (a small
model on arithmetic) would truncate them, so the default learner gets at least this."""


@dataclass(frozen=True)
class LibraryProgress:
    """What a progress bar or a log line shows after a step."""

    generation: int
    total: int
    library: int
    reward: float
    score: float | None = None

    def describe(self) -> str:
        score = f", held-out score {self.score:.3f}" if self.score is not None else ""
        return f"library {self.library}, practice reward {self.reward:.2f}{score}"


def run_experience_library(spec: ExperienceLibrarySpec, ctx: RunContext,
                           on_summary: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run (or resume) Training-Free GRPO for a spec; returns a JSON-ready summary."""
    return asyncio.run(_run(spec, ctx, on_summary))


async def _run(spec: ExperienceLibrarySpec, ctx: RunContext,
               on_summary: Callable[[Any], None] | None) -> dict[str, Any]:
    from mendel.datasets import DatasetError, load_records
    from mendel.engines.tfgrpo import Agent, Learner, PhaseStore, PracticeConfig, TrainingFreeGRPO

    try:
        records = load_records(spec.dataset, cache_dir=ctx.work_dir / "data")
        held_out = (load_records(spec.evaluation.dataset, cache_dir=ctx.work_dir / "data")
                    if spec.evaluation.dataset is not None else [])
    except DatasetError as error:
        raise WorkloadError(f"spec.dataset: {error}") from error
    _check_records(records, "spec.dataset")
    _check_records(held_out, "spec.evaluation.dataset")
    pool = BackendPool(ctx.work_dir / "models")
    try:
        concurrency = spec.practice.rollout_concurrency
        agent_backend = pool.get(spec.agent, "spec.agent", concurrency=concurrency)
        if spec.learner is None:
            learner_backend = agent_backend
            learner_sampling = sampling_of(spec.agent, temperature=0.0,
                                           min_tokens=_LEARNER_MIN_TOKENS)
        else:
            learner_backend = pool.get(spec.learner, "spec.learner", concurrency=concurrency)
            learner_sampling = sampling_of(spec.learner)
        agent = Agent(agent_backend, _verifier(spec, pool), sampling_of(spec.agent),
                      timeout_seconds=spec.practice.task_timeout_seconds,
                      tool=_tool(spec), max_turns=spec.tools.max_turns)
        config = PracticeConfig(
            epochs=spec.practice.epochs, batch_size=spec.practice.batch_size,
            group_size=spec.practice.group_size,
            max_operations_per_group=spec.practice.max_operations_per_group,
            max_failed_call_fraction=spec.practice.max_failed_call_fraction,
            max_experiences=spec.library.max_experiences, max_words=spec.library.max_words,
            seed=spec.seed)
        learner = Learner(learner_backend, learner_sampling,
                          max_operations=config.max_operations_per_group,
                          max_words=config.max_words, max_experiences=config.max_experiences,
                          seed=config.seed)
        sync = _StoreSync.open(ctx)
        tracker = LibraryTracker(ctx, pool, sync, on_summary)
        engine = TrainingFreeGRPO(config, agent, learner, records, PhaseStore(sync.root),
                                  tracker)
        try:
            library = await engine.run(held_out, samples=spec.evaluation.samples_per_question,
                                       every_epochs=spec.evaluation.every_epochs)
        except BaseException:
            sync.flush()  # answers of the unfinished phase survive for the retry
            raise
        return _finish(spec, ctx, library, engine.total_steps, tracker, pool)
    finally:
        await pool.aclose()


def _check_records(records: list[dict[str, Any]], field: str) -> None:
    for number, record in enumerate(records):
        missing = [key for key in ("question", "answer") if key not in record]
        if missing:
            raise WorkloadError(f"{field}: record {number} lacks {', '.join(missing)}; "
                                "each line must be {\"question\": ..., \"answer\": ...}")


def _verifier(spec: ExperienceLibrarySpec, pool: BackendPool) -> Any:
    from mendel.evaluators.verifiers import build_verifier

    judge = None
    if spec.verifier.type == "llmJudge" and spec.verifier.judge is not None:
        judge_backend = pool.get(spec.verifier.judge, "spec.verifier.judge",
                                 concurrency=spec.practice.rollout_concurrency)
        judge = (judge_backend, sampling_of(spec.verifier.judge))
    if judge is None:
        return build_verifier(spec.verifier)
    return build_verifier(spec.verifier, judge=judge[0], judge_sampling=judge[1])


def _tool(spec: ExperienceLibrarySpec) -> Any:
    if not spec.tools.python:
        return None
    from mendel.llm.tools import PythonTool

    return PythonTool.from_spec(spec.tools)


class _StoreSync:
    """Keeps the engine's store durable: on a volume as it is written, or uploaded to the
    parent run's artifacts after every phase (and downloaded again on resume)."""

    def __init__(self, ctx: RunContext, root: Path, upload: bool) -> None:
        self.ctx = ctx
        self.root = root
        self.upload = upload

    @classmethod
    def open(cls, ctx: RunContext) -> _StoreSync:
        if ctx.output_uri and ctx.output_uri.startswith("/"):
            return cls(ctx, Path(ctx.output_uri) / _STORE, upload=False)
        root = ctx.work_dir / _STORE
        if not root.exists() and ctx.client.list_artifacts(ctx.run_id, _STORE):
            ctx.client.download_artifacts(ctx.run_id, _STORE, str(ctx.work_dir))
        return cls(ctx, root, upload=True)

    def flush(self) -> None:
        """Upload everything kept so far, journals of unfinished phases included."""
        if self.upload and self.root.exists():
            self.ctx.client.log_artifacts(self.ctx.run_id, str(self.root), _STORE)

    def saved(self, relative: str) -> None:
        if self.upload and (self.root / relative).exists():
            self.ctx.client.log_artifacts(self.ctx.run_id, str(self.root / relative),
                                          f"{_STORE}/{relative}")


class LibraryTracker:
    """The engine's observer: metrics and libraries to MLflow, durable phases, progress."""

    def __init__(self, ctx: RunContext, pool: BackendPool, sync: _StoreSync,
                 on_summary: Callable[[Any], None] | None) -> None:
        self.ctx = ctx
        self.pool = pool
        self.sync = sync
        self.on_summary = on_summary
        self.evaluations: dict[int, dict[str, Any]] = {}
        self.last_score: float | None = None
        self.last_step = 0
        self.rejected: dict[str, float] = {}

    def on_phase_saved(self, step: int, phase: str) -> None:
        self.sync.saved(f"step-{step:05d}")

    def on_step(self, report: Any) -> None:
        self.last_step = report.step
        for key, value in report.metrics.items():
            reason = key.removeprefix("ops/rejected/")
            if reason != key:
                self.rejected[reason] = self.rejected.get(reason, 0.0) + value
        if not report.resumed:
            usage = self.pool.usage()
            values = {**report.metrics,
                      contract.METRIC_PROGRESS_STEP: report.step,
                      contract.METRIC_PROGRESS_TOTAL: report.total_steps,
                      contract.METRIC_LIBRARY_VERSION: report.step,
                      "tokens/prompt": usage.get("prompt_tokens", 0),
                      "tokens/completion": usage.get("completion_tokens", 0)}
            self.log_metrics(values, report.step)
            self.ctx.client.log_dict(self.ctx.run_id, report.library.to_json(),
                                     f"library/step-{report.step:05d}.json")
        if self.on_summary is not None:
            self.on_summary(LibraryProgress(report.step, report.total_steps, len(report.library),
                                            report.metrics.get("practice/reward_mean", 0.0),
                                            self.last_score))

    def on_evaluation(self, label: str, step: int, result: Mapping[str, Any]) -> None:
        self.evaluations[step] = dict(result)
        self.last_score = float(result["mean"])
        values = {"eval/mean_at_k": result["mean"], "eval/pass_at_k": result["pass"],
                  contract.METRIC_SCORE_AFTER if step else contract.METRIC_SCORE_BEFORE:
                  result["mean"]}
        self.log_metrics(values, step)
        self.sync.saved("evaluations")

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.ctx.client.log_batch(self.ctx.run_id, metrics=[
            Metric(key, float(value), now, step) for key, value in values.items()])


def _finish(spec: ExperienceLibrarySpec, ctx: RunContext, library: Any, total_steps: int,
            tracker: LibraryTracker, pool: BackendPool) -> dict[str, Any]:
    from mendel.tracking.library import register_library

    target = spec.tracking.mlflow.registered_model
    name = target.name if target else f"{ctx.namespace}-{ctx.name}-experiences"
    alias = target.alias if target else "candidate"
    registered = register_library(
        ctx.client, name=name, alias=alias, text=library.render(), run_id=ctx.run_id,
        step=total_steps, size=len(library),
        extra_tags={contract.TAG_NAMESPACE: ctx.namespace, contract.TAG_NAME: ctx.name})
    tracker.log_metrics({contract.METRIC_LIBRARY_SIZE: len(library),
                  contract.METRIC_LIBRARY_VERSION: total_steps}, total_steps)
    ctx.client.log_dict(ctx.run_id, library.to_json(), "library/final.json")
    for key, value in {contract.TAG_LIBRARY_PROMPT_URI: registered.uri,
                       contract.TAG_LIBRARY_SIZE: str(len(library)),
                       contract.TAG_LIBRARY_VERSION: str(total_steps)}.items():
        ctx.client.set_tag(ctx.run_id, key, value)
    before = tracker.evaluations.get(0)
    after = tracker.evaluations.get(total_steps)
    return {
        "kind": "ExperienceLibrary", "name": ctx.name, "runId": ctx.run_id,
        "steps": total_steps, "library": len(library), "libraryVersion": total_steps,
        "prompt": {"uri": registered.uri, "alias": f"prompts:/{name}@{alias}"},
        "before": _scores(before), "after": _scores(after),
        "rejected": {k: int(v) for k, v in sorted(tracker.rejected.items())},
        "usage": pool.usage(),
        "experiences": [{"id": e.id, "text": e.text} for e in library.entries],
    }


def _scores(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {"meanAtK": round(float(result["mean"]), 4), "passAtK": round(float(result["pass"]), 4),
            "questions": result["questions"], "samples": result["samples"]}
