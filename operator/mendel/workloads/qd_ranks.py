"""QDEvolution's evolution processes: one in the driver, or one per GPU through torchrun.

`evolve` is the run itself, wherever it happens: load the bank and a resident model, run
CycleQD, then save the final model and each task's best elite to disk (the driver logs
them to MLflow). With several processes the driver writes a `RankPlan`, starts torchrun
with this module, and follows the JSON lines rank 0's `ProgressLines` appends; `replay`
turns each line back into the observer call it stands for, so MLflow metrics, lineage and
checkpoint mirroring happen in the driver exactly as in a one-process run.

Every rank breeds the same children and evaluates its share of each generation (see
`mendel.engines.cycleqd.distributed`); the result does not depend on the process count,
which is one per GPU, capped by the children there are to evaluate at once.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mendel.api.qdevolution import QDEvolutionSpec
from mendel.workloads import torchrun

if TYPE_CHECKING:
    from mendel.engines.cycleqd import Evaluate, Observer, Ranks

__all__ = ["COLLECTIVE_TIMEOUT", "PROGRESS_FILE", "ProgressLines", "RankPlan", "ReportedGenome",
           "evolve", "launch", "process_count", "replay"]

logger = logging.getLogger(__name__)

PROGRESS_FILE = "qd-progress.jsonl"
COLLECTIVE_TIMEOUT = timedelta(hours=24)
"""How long a rank may wait for the others: while rank 0 builds the first bank (hours of
SVD on a CPU, at 8B), or while the slowest rank evaluates a large model on its benchmarks.
A rank that dies does not leave the others waiting: torchrun stops them all."""


@dataclass(frozen=True)
class RankPlan:
    """Where a run's inputs and outputs are, for every process (written as JSON).

    Attributes:
        spec: The spec, as the API serialises it.
        base_dir: The fetched base model.
        expert_dirs: Expert name -> its fetched model.
        work_dir: Scratch space: each rank's model saved for evaluators.
        checkpoint_dir: Where the engine checkpoints (and resumes from).
        out_dir: Where rank 0 saves the final model and the elites.
        result: Where rank 0 writes `evolve`'s result for the driver.
        threads: CPU threads of the one-process run, which every rank uses too: on the
            CPU some results (MKL's SVD) change in their last bits with the thread count
            (torchrun would give each rank one), and so would a run's archives.
        svd_dir: The experts' SVD bases, shared by the runs that can reuse them.
    """

    spec: dict[str, Any]
    base_dir: str
    expert_dirs: dict[str, str]
    work_dir: str
    checkpoint_dir: str
    out_dir: str
    result: str
    threads: int
    svd_dir: str

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def read(cls, path: Path) -> RankPlan:
        return cls(**json.loads(path.read_text()))


def process_count(spec: QDEvolutionSpec) -> int:
    """`spec.processes` (one per GPU, no more than the children per generation), capped by
    the GPUs this machine has; without CUDA the processes share the CPU, on gloo."""
    import torch

    wanted = spec.processes
    if torch.cuda.is_available() and torch.cuda.device_count() < wanted:
        logger.warning("the spec asks for %d GPUs but %d are visible; evolving on %d "
                       "processes (the result is the same)", wanted,
                       torch.cuda.device_count(), torch.cuda.device_count())
        return max(1, torch.cuda.device_count())
    return wanted


def launch(plan: RankPlan, plan_path: Path, processes: int) -> subprocess.Popen[bytes]:
    """Start torchrun with this module on `processes` ranks of this node."""
    plan.write(plan_path)
    return torchrun.launch(__name__, [str(plan_path)], processes)


def evolve(plan: RankPlan, device: Any, ranks: Ranks, observer: Observer | None,
           keep_checkpoints: int | None = 2) -> dict[str, Any] | None:
    """Run (or resume) CycleQD on this rank; rank 0 saves the models and returns what the
    driver logs (the other ranks return None)."""
    from mendel.engines import cycleqd

    spec = QDEvolutionSpec.model_validate(plan.spec)
    base_dir, work_dir = Path(plan.base_dir), Path(plan.work_dir)
    model: Any = None
    bank: Any = None
    for turn in range(ranks.world):  # one rank at a time: host memory holds one bank, and
        if turn == ranks.rank:       # rank 0 fills the SVD cache that the others then read
            model = cycleqd.load_resident_model(base_dir, spec.precision).to(device)
            # where the GPU cannot also hold the base and leave room to evaluate, the base
            # stays in pinned host memory (one copy per rank) and is streamed per child
            bank = cycleqd.place_bank(_build_bank(spec, plan), model, base_on_host=None)
        ranks.all_gather(None)
    evaluate = _evaluator(spec, model, base_dir, work_dir / f"eval-model-{ranks.rank}")
    engine = cycleqd.CycleQD(spec, bank, model, evaluate,
                             checkpoint_dir=Path(plan.checkpoint_dir), observer=observer,
                             ranks=ranks, keep_checkpoints=keep_checkpoints)
    result = engine.run()
    if ranks.rank != 0:
        return None
    return _save_outputs(spec, plan, result, model, bank)


def _build_bank(spec: QDEvolutionSpec, plan: RankPlan) -> Any:
    from mendel.engines import cycleqd

    expert_dirs = {name: Path(path) for name, path in plan.expert_dirs.items()}
    base, experts = cycleqd.load_experts(Path(plan.base_dir), expert_dirs)
    identities = {e.name: f"expert={e.uri}@{e.revision}|base={spec.base_model.uri}"
                  f"@{spec.base_model.revision}" for e in spec.experts}
    cache = cycleqd.SvdCache(Path(plan.svd_dir), identities)
    return cycleqd.build_bank(base, experts, rank=spec.algorithm.mutation.rank,
                              svd_provider=cache)


def _evaluator(spec: QDEvolutionSpec, resident: Any, base_dir: Path,
               save_dir: Path) -> Evaluate:
    from transformers import AutoTokenizer

    from mendel.evaluators import build_evaluator
    from mendel.llm.local import LocalCausalLM

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    # Children are written into `resident` in place, so on a GPU one static cache and one
    # compiled decoding step serve every child (a new prompt shape compiles once, not a
    # new child); on the CPU compiling costs more than it saves.
    on_gpu = next(resident.parameters()).device.type == "cuda"
    backend = LocalCausalLM(resident, tokenizer, static_cache=on_gpu)
    evaluators = {t.name: build_evaluator(t.evaluator, t.name) for t in spec.tasks}

    def evaluate(model: Any) -> Mapping[str, float]:
        model_dir = None
        if any(e.needs_model_dir for e in evaluators.values()):
            model_dir = _save_for_evaluators(model, tokenizer, save_dir)
        return {name: e.evaluate(backend, model_dir=model_dir) for name, e in evaluators.items()}

    return evaluate


def _save_for_evaluators(model: Any, tokenizer: Any, directory: Path) -> Path:
    """The model as a Hugging Face directory, written the same way on every rank.

    `save_pretrained` writes nothing on ranks other than 0 once torch.distributed is
    initialised (transformers 5), so the files are written here: config, generation
    config, one safetensors file (shared tensors once) and the tokenizer.
    """
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(str(directory))
    save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory))
    return directory


def _save_outputs(spec: QDEvolutionSpec, plan: RankPlan, result: Any, model: Any,
                  bank: Any) -> dict[str, Any]:
    """Real weights of the final model (left in `model` by the run) and of each task's
    best elite, saved with model cards; and the numbers the run's summary reports."""
    from mendel.engines import cycleqd

    uris = {e.name: e.uri for e in spec.experts}
    out, base_dir = Path(plan.out_dir), Path(plan.base_dir)
    final_dir = cycleqd.save_model(model, out / "final", result.final,
                                   scores=result.final_scores, base_uri=spec.base_model.uri,
                                   expert_uris=uris, tokenizer_dir=base_dir)
    store, elites = result.state.store, []
    for task, archive in result.state.archives.items():
        best = archive.best()
        if best is None:
            continue
        cycleqd.materialize(store.recipe(best.genome_id), model, bank, store.recipe)
        elite_dir = cycleqd.save_model(model, out / f"elite-{task}", store.get(best.genome_id),
                                       scores=best.scores, base_uri=spec.base_model.uri,
                                       expert_uris=uris, tokenizer_dir=base_dir)
        elites.append({"task": task, "genomeId": best.genome_id, "dir": str(elite_dir)})
    summary = result.summary
    return {
        "generations": summary.generation, "coverage": summary.coverage,
        "qdScore": summary.qd_score, "best": summary.best,
        "experts": {k: dict(v) for k, v in result.state.expert_scores.items()},
        "final": {"id": result.final.id, "scores": result.final_scores, "dir": str(final_dir)},
        "elites": elites,
    }


@dataclass(frozen=True)
class ReportedGenome:
    """A genome as a progress line carries it: what lineage records (see LineageRecord)."""

    data: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def operator(self) -> str:
        return str(self.data["operator"])

    @property
    def generation(self) -> int:
        return int(self.data["generation"])

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(self.data["parents"])

    @property
    def parent_weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.data["parentWeights"])

    @property
    def seed(self) -> int | None:
        seed = self.data.get("seed")
        return None if seed is None else int(seed)

    @property
    def quality_task(self) -> str | None:
        task = self.data.get("qualityTask")
        return None if task is None else str(task)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


class ProgressLines:
    """Rank 0's observer under torchrun: one JSON line per callback, for `replay`."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self.write = write

    def on_generation(self, summary: Any) -> None:
        archives = [asdict(a) for a in summary.archives]
        self.write({"event": "generation", "generation": summary.generation,
                    "total": summary.total, "qualityTask": summary.quality_task,
                    "failed": summary.failed, "archives": archives})

    def on_child_accepted(self, genome: Any, scores: Mapping[str, float],
                          cells: Mapping[str, Any]) -> None:
        self.write({"event": "accepted", "genome": genome.to_dict(), "scores": dict(scores),
                    "cells": {task: list(cell) for task, cell in cells.items()}})

    def on_child_rejected(self, genome: Any, scores: Mapping[str, float]) -> None:
        self.write({"event": "rejected", "genome": genome.to_dict(), "scores": dict(scores)})

    def on_child_failed(self, genome: Any, error: Exception) -> None:
        self.write({"event": "failed", "genome": genome.to_dict(), "error": str(error)})

    def on_checkpoint(self, path: Path) -> None:
        self.write({"event": "checkpoint", "path": str(path)})

    def on_finished(self, final: Any, scores: Mapping[str, float] | None) -> None:
        self.write({"event": "finished", "genome": final.to_dict(),
                    "scores": None if scores is None else dict(scores)})


def replay(line: Mapping[str, Any], observer: Observer) -> None:
    """Make the observer call that a `ProgressLines` line stands for."""
    from mendel.engines.cycleqd import ArchiveSummary, EvaluationFailed, RunSummary

    event = line["event"]
    if event == "generation":
        archives = tuple(ArchiveSummary(**a) for a in line["archives"])
        observer.on_generation(RunSummary(int(line["generation"]), int(line["total"]),
                                          line["qualityTask"], int(line["failed"]), archives))
    elif event == "checkpoint":
        observer.on_checkpoint(Path(line["path"]))
    else:
        genome: Any = ReportedGenome(line["genome"])
        if event == "accepted":
            cells = {task: tuple(cell) for task, cell in line["cells"].items()}
            observer.on_child_accepted(genome, line["scores"], cells)
        elif event == "rejected":
            observer.on_child_rejected(genome, line["scores"])
        elif event == "failed":
            observer.on_child_failed(genome, EvaluationFailed(line["error"]))
        elif event == "finished":
            observer.on_finished(genome, line["scores"])
        else:
            raise ValueError(f"unknown progress event {event!r}")


def main(argv: list[str]) -> int:
    """A torchrun rank: join the process group, evolve, leave; rank 0 reports."""
    import torch
    import torch.distributed as dist

    from mendel.engines.cycleqd import TorchRanks
    from mendel.engines.cycleqd.checkpoint import atomic_write_text

    logging.basicConfig(level=logging.INFO)
    plan = RankPlan.read(Path(argv[0]))
    torch.set_num_threads(plan.threads)
    device = torchrun.join_process_group(timeout=COLLECTIVE_TIMEOUT)
    try:
        ranks = TorchRanks()
        if ranks.rank == 0:
            progress = Path(plan.work_dir) / PROGRESS_FILE
            with torchrun.progress_writer(progress) as write:
                outputs = evolve(plan, device, ranks, ProgressLines(write), keep_checkpoints=None)
            atomic_write_text(Path(plan.result), json.dumps(outputs))
        else:
            evolve(plan, device, ranks, None)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
