"""The CompressorTraining workload: CLaRa wired to data, processes, MLflow and storage.

`run_compressor_training` reads the stages' records (refusing bad ones before any model
loads), trains every stage in this process or through torchrun, mirrors the state
directory (checkpoints and each stage's model) to durable storage, then compresses the
held-out documents into a store with the trained compressor, answers the held-out
questions from it, against raw text and against no context, and logs the adapters as an
MLflow model with a card (registered when the spec names a model).

Durable storage is the spec's output volume when there is one (every rank writes there
directly), or else the parent run's artifacts: each complete checkpoint is uploaded with its
COMPLETE marker last and then named in the run's checkpoint tag, so a resumed Pod downloads
exactly one complete checkpoint per stage plus the finished stages' models.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mendel.api.compressor import CompressorTrainingSpec
from mendel.tracking import contract
from mendel.workloads import compressor_ranks as ranks
from mendel.workloads import torchrun
from mendel.workloads.compressor_outputs import evaluate_and_log, log_model
from mendel.workloads.context import RunContext, WorkloadError
from mendel.workloads.fetch import fetch_model

__all__ = ["TrainingProgress", "run_compressor_training"]

logger = logging.getLogger(__name__)
_STATE = "clara"
_SYNTHESIS = "synthesis"
_KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class TrainingProgress:
    """What a progress bar or a log line shows after an optimizer step."""

    generation: int
    total: int
    stage: str
    loss: float
    recall: float | None = None

    def describe(self) -> str:
        recall = f", Recall@k {self.recall:.2f}" if self.recall is not None else ""
        return f"{self.stage} loss {self.loss:.3f}{recall}"


def run_compressor_training(spec: CompressorTrainingSpec, ctx: RunContext,
                            on_summary: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train (or resume) every stage of a spec, evaluate, log; returns a JSON summary."""
    ranks.compute_dtype(spec)  # refuses float16 before any work
    processes = spec.distribution.num_nodes * spec.distribution.num_proc_per_node
    data_dir = ctx.work_dir / "data"
    worker = os.environ.get(contract.ENV_ROLE) == "worker"  # a multi-node worker Pod
    state = StateSync.open(ctx)
    synthesised = _stage_one_records(spec, ctx, state, wait=worker)
    plans = ranks.stage_plans(spec, data_dir, processes, synthesised)
    held_out = _held_out(spec, data_dir)
    base_dir = fetch_model(spec.base_model, ctx.work_dir / "models")
    if worker:  # trains only; the leader tracks, evaluates and logs
        _train_with_torchrun(spec, ctx, base_dir, data_dir, state, None, synthesised)
        return {"kind": "CompressorTraining", "name": ctx.name, "role": "worker"}
    tracker = TrainingTracker(ctx, state, on_summary,
                              total=sum(plan.settings.steps for plan in plans),
                              offsets=_offsets(plans))
    if ranks.needs_torchrun(spec):
        _train_with_torchrun(spec, ctx, base_dir, data_dir, state, tracker, synthesised)
    else:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        ranks.train(spec, plans, base_dir, state.root, device, tracker.on_step)
    tracker.flush()
    final = _final_dir(state.root, plans)
    ctx.client.set_tag(ctx.run_id, contract.TAG_STAGE, "evaluation")
    evaluation = evaluate_and_log(ctx, spec, base_dir, final, held_out) if held_out else None
    model = log_model(ctx, spec, final, evaluation)
    ctx.client.set_tag(ctx.run_id, contract.TAG_STAGE, "done")
    return {
        "kind": "CompressorTraining", "name": ctx.name, "runId": ctx.run_id,
        "stages": tracker.stage_summary(), "evaluation": evaluation, **model,
    }


def _stage_one_records(spec: CompressorTrainingSpec, ctx: RunContext, state: StateSync, *,
                       wait: bool) -> Path | None:
    """Stage I's synthesised records, when the spec asks for synthesis: written by the
    driver (or the leader Pod) next to the checkpoints, so that a retried Pod resumes the
    journal; a multi-node worker Pod waits for the leader's file on the shared volume."""
    if spec.stages.pretraining.synthesis is None:
        return None
    from mendel.workloads.compressor_synthesis import records_path, synthesize_stage_one

    directory = state.root / _SYNTHESIS
    if wait:
        path = records_path(spec, directory)
        while not path.is_file():
            time.sleep(10.0)
        return path
    ctx.client.set_tag(ctx.run_id, contract.TAG_STAGE, "synthesis")
    try:
        return synthesize_stage_one(spec, directory, data_dir=ctx.work_dir / "data",
                                    models_dir=ctx.work_dir / "models")
    finally:
        state.save_folder(directory)


def _held_out(spec: CompressorTrainingSpec, data_dir: Path) -> list[Any]:
    if spec.evaluation is None:
        return []
    from mendel.datasets import DatasetError, load_records
    from mendel.engines.clara.records import RecordError, qa_examples

    try:
        return qa_examples(load_records(spec.evaluation, cache_dir=data_dir))
    except (DatasetError, RecordError) as error:
        raise WorkloadError(f"spec.evaluation: {error}") from error


def _offsets(plans: list[Any]) -> dict[str, int]:
    offsets, total = {}, 0
    for plan in plans:
        offsets[plan.name] = total
        total += plan.settings.steps
    return offsets


def _final_dir(root: Path, plans: list[Any]) -> Path:
    from mendel.engines.clara.pipeline import final_model

    final = final_model(root, plans[-1].name)
    if final is None:
        raise RuntimeError(f"training ended without a model for stage {plans[-1].name}")
    return final


def _train_with_torchrun(spec: CompressorTrainingSpec, ctx: RunContext, base_dir: Path,
                         data_dir: Path, state: StateSync, tracker: TrainingTracker | None,
                         stage_one_records: Path | None) -> None:
    progress = state.root / ranks.PROGRESS_FILE
    state.root.mkdir(parents=True, exist_ok=True)
    offset = progress.stat().st_size if progress.is_file() else 0
    plan = ranks.RankPlan(spec.model_dump(mode="json", by_alias=True), str(base_dir),
                          str(data_dir), str(state.root),
                          str(stage_one_records) if stage_one_records else None)
    process = ranks.launch(spec, plan, ctx.work_dir / "rank-plan.json")
    torchrun.supervise(process, progress, offset, None if tracker is None else tracker.on_line)


class StateSync:
    """The run's state directory, kept durable: on the output volume as written, or
    mirrored into the parent run's artifacts (and brought back on resume)."""

    def __init__(self, ctx: RunContext, root: Path, upload: bool) -> None:
        self.ctx = ctx
        self.root = root
        self.upload = upload
        self.known: set[Path] = set()

    @classmethod
    def open(cls, ctx: RunContext) -> StateSync:
        if ctx.output_uri and ctx.output_uri.startswith("/"):
            sync = cls(ctx, Path(ctx.output_uri) / _STATE, upload=False)
        else:
            sync = cls(ctx, ctx.work_dir / _STATE, upload=True)
            sync.restore()
        sync.known = set(sync._complete())
        return sync

    def restore(self) -> None:
        """Download the finished stages' models and the checkpoint named in the run's tags
        (only what a resume reads)."""
        from mendel.engines.clara.pipeline import FINAL_DIR, STAGE_ORDER

        client, run = self.ctx.client, self.ctx.run_id
        wanted = [f"{_STATE}/{stage}/{FINAL_DIR}" for stage in STAGE_ORDER]
        wanted.append(f"{_STATE}/{_SYNTHESIS}")
        tag = str(client.get_run(run).data.tags.get(contract.TAG_CHECKPOINT_URI, ""))
        if tag.startswith(f"runs:/{run}/"):
            wanted.append(tag.removeprefix(f"runs:/{run}/"))
        for path in wanted:
            local = self.ctx.work_dir / path
            if local.exists() or not client.list_artifacts(run, path):
                continue
            local.parent.mkdir(parents=True, exist_ok=True)  # MLflow keeps only the last name
            client.download_artifacts(run, path, str(local.parent))

    def save_folder(self, path: Path) -> None:
        """Upload a folder of the state as it is now (synthesis journals and records)."""
        if self.upload and path.is_dir():
            self.ctx.client.log_artifacts(self.ctx.run_id, str(path),
                                          f"{_STATE}/{path.relative_to(self.root)}")

    def _complete(self) -> list[Path]:
        from mendel.engines.clara.checkpoint import COMPLETE_MARKER

        markers = [*self.root.glob(f"*/*/*/{COMPLETE_MARKER}"),
                   *self.root.glob(f"*/*/{COMPLETE_MARKER}")]
        return sorted(marker.parent for marker in markers
                      if not marker.parent.name.startswith("."))

    def poll(self) -> None:
        """Mirror every newly completed checkpoint or stage model, then prune old ones."""
        for path in self._complete():
            if path in self.known:
                continue
            self.known.add(path)
            relative = path.relative_to(self.root)
            if self.upload:
                self._upload(path, f"{_STATE}/{relative}")
            if path.parent.name == "checkpoints":
                self.ctx.client.set_tag(self.ctx.run_id, contract.TAG_CHECKPOINT_URI,
                                        self._uri(relative))
                self.ctx.client.set_tag(self.ctx.run_id, contract.TAG_CHECKPOINT_STEP,
                                        path.name.removeprefix("step-").lstrip("0") or "0")
                self._prune(path.parent)

    def _uri(self, relative: Path) -> str:
        if not self.upload:
            return str(self.root / relative)
        return f"runs:/{self.ctx.run_id}/{_STATE}/{relative}"

    def _upload(self, path: Path, artifact_path: str) -> None:
        """Every file, the COMPLETE marker last: an interrupted upload is never complete."""
        from mendel.engines.clara.checkpoint import COMPLETE_MARKER

        files = sorted(p for p in path.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == COMPLETE_MARKER)
        for file in files:
            folder = file.parent.relative_to(path)
            target = artifact_path if str(folder) == "." else f"{artifact_path}/{folder}"
            self.ctx.client.log_artifact(self.ctx.run_id, str(file), target)

    def _prune(self, checkpoints: Path) -> None:
        complete = sorted(p for p in self.known if p.parent == checkpoints)
        for old in complete[:-_KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
            self.known.discard(old)


class TrainingTracker:
    """Step reports to MLflow metrics, progress callbacks and the state mirror."""

    def __init__(self, ctx: RunContext, state: StateSync,
                 on_summary: Callable[[Any], None] | None, total: int,
                 offsets: dict[str, int]) -> None:
        self.ctx = ctx
        self.state = state
        self.on_summary = on_summary
        self.total = total
        self.offsets = offsets
        self.stages: dict[str, dict[str, Any]] = {}
        self.stage: str | None = None

    def on_step(self, stage: str, report: Any) -> None:
        """The in-process observer."""
        from dataclasses import asdict

        self.on_line({"stage": stage, **asdict(report)})

    def on_line(self, line: dict[str, Any]) -> None:
        """One step of one stage, as rank 0 reports it."""
        from mlflow.entities import Metric

        stage = str(line["stage"])
        if stage != self.stage:
            self.stage = stage
            self.ctx.client.set_tag(self.ctx.run_id, contract.TAG_STAGE, stage)
        step = self.offsets.get(stage, 0) + int(line["step"])
        values = {contract.METRIC_TRAIN_LOSS: line["loss"],
                  "train/cross_entropy": line["cross_entropy"], "train/mse": line["mse"],
                  "train/learning_rate": line["learning_rate"],
                  "train/grad_norm": line["grad_norm"],
                  contract.METRIC_PROGRESS_STEP: step,
                  contract.METRIC_PROGRESS_TOTAL: self.total}
        if line.get("recall") is not None:
            values["train/recall_at_k"] = line["recall"]
        now = int(time.time() * 1000)
        self.ctx.client.log_batch(self.ctx.run_id, metrics=[
            Metric(key, float(value), now, step) for key, value in values.items()])
        self.stages[stage] = {"steps": int(line["step"]), "loss": round(float(line["loss"]), 4),
                              **({"recallAtK": round(float(line["recall"]), 4)}
                                 if line.get("recall") is not None else {})}
        self.state.poll()
        if self.on_summary is not None:
            self.on_summary(TrainingProgress(step, self.total, stage, float(line["loss"]),
                                             line.get("recall")))

    def flush(self) -> None:
        """After training: mirror what the last steps wrote (the final stage models)."""
        self.state.poll()

    def stage_summary(self) -> dict[str, dict[str, Any]]:
        return dict(self.stages)
