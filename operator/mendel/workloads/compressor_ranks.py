"""CompressorTraining's training processes: one in-process, or several through torchrun.

`stage_plans` turns a spec into the stages to run, in the one place both the driver and the
torchrun ranks read it, so every rank trains on the same examples in the same order.
`train` runs them in this process; `launch` starts `torchrun` with this module as the
program when the spec asks for several processes or nodes, and the driver follows the
ranks' progress through a JSON Lines file that rank 0 appends to (see `torchrun`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mendel.api.compressor import CompressorTrainingSpec
from mendel.workloads import torchrun
from mendel.workloads.context import WorkloadError

__all__ = ["PROGRESS_FILE", "RankPlan", "base_loader", "compute_dtype", "launch",
           "needs_torchrun", "stage_plans", "train"]

PROGRESS_FILE = "progress.jsonl"
_STAGE_FIELDS = {"pretraining": "pretraining", "instructionTuning": "instruction_tuning",
                 "endToEnd": "end_to_end"}


@dataclass(frozen=True)
class RankPlan:
    """What a torchrun rank needs, written as JSON by the driver.

    Attributes:
        spec: The spec, as the API serialises it.
        base_dir: The fetched base model.
        data_dir: Where the driver cached remote datasets (ranks read the same files).
        root: The run's state directory, shared by every rank.
        stage_one_records: Synthesised stage-I records (JSON Lines), when the spec
            synthesises them; the ranks read this file instead of the stage's dataset.
    """

    spec: dict[str, Any]
    base_dir: str
    data_dir: str
    root: str
    stage_one_records: str | None = None

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def read(cls, path: Path) -> RankPlan:
        return cls(**json.loads(path.read_text()))


def needs_torchrun(spec: CompressorTrainingSpec) -> bool:
    """More than one training process in all."""
    return spec.distribution.num_nodes * spec.distribution.num_proc_per_node > 1


def compute_dtype(spec: CompressorTrainingSpec) -> Any:
    """The autocast dtype of `spec.precision` (None: plain float32).

    Raises:
        WorkloadError: float16, which would need loss scaling this engine does not do.
    """
    import torch

    if spec.precision == "float16":
        raise WorkloadError("spec.precision: float16 is not supported for CompressorTraining "
                            "(it needs loss scaling); use bfloat16 or float32")
    if spec.precision == "float32":
        return None
    return torch.bfloat16


def stage_plans(spec: CompressorTrainingSpec, data_dir: Path, processes: int,
                stage_one_records: Path | None = None) -> list[Any]:
    """The spec's stages with their examples and budgets, in order; stage I reads
    `stage_one_records` (synthesised records) instead of its dataset when given.

    Raises:
        WorkloadError: a dataset cannot be read, a record does not fit its stage (the
            message names the stage's dataset field), or the batch size does not split.
    """
    from mendel.datasets import DatasetError, load_records
    from mendel.engines.clara.pipeline import StagePlan
    from mendel.engines.clara.records import (
        RecordError,
        instruction_examples,
        stage_one_examples,
        stage_two_examples,
    )
    from mendel.engines.clara.training import TrainingSettings

    plans = []
    for name, attribute in _STAGE_FIELDS.items():
        stage = getattr(spec.stages, attribute)
        if stage is None:
            continue
        field = f"spec.stages.{name}.dataset"
        try:
            if name == "pretraining" and stage_one_records is not None:
                field = f"spec.stages.{name}.synthesis"
                records = _read_lines(stage_one_records)
            else:
                records = load_records(stage.dataset, cache_dir=data_dir)
            if name == "pretraining":
                examples: list[Any] = stage_one_examples(records)
            elif name == "instructionTuning":
                examples = instruction_examples(records)
            else:
                examples = stage_two_examples(records, stage.top_k)
            if not examples:
                raise RecordError("no examples")
            settings = TrainingSettings.from_spec(spec, stage, len(examples), processes,
                                                  seed=spec.seed)
        except (DatasetError, RecordError) as error:
            raise WorkloadError(f"{field}: {error}") from error
        except ValueError as error:
            raise WorkloadError(f"spec.stages.{name}.batchSize: {error}") from error
        plans.append(StagePlan(name, settings, examples,  # type: ignore[arg-type]
                               top_k=stage.top_k, temperature=stage.temperature))
    return plans


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def base_loader(base_dir: Path, device: Any, dtype: Any) -> Callable[[], tuple[Any, Any]]:
    """A fresh (backbone, tokenizer) on `device` per call; bf16 weights on a GPU when the
    spec computes in bf16, float32 otherwise (CPU bf16 kernels are slower than float32 for
    the frozen weights, and autocast still runs the matmuls in bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = dtype if dtype is not None and device.type == "cuda" else torch.float32

    def load() -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True,
                                                     dtype=weights)
        return model.to(device), tokenizer

    return load


def train(spec: CompressorTrainingSpec, plans: list[Any], base_dir: Path, root: Path,
          device: Any, observer: Callable[[str, Any], None] | None = None) -> Path:
    """Run (or resume) every stage in this process; returns the last stage's model."""
    from mendel.engines.clara.pipeline import run_stages
    from mendel.engines.clara.settings import ClaraSettings

    dtype = compute_dtype(spec)
    return run_stages(plans, root, base_loader(base_dir, device, dtype),
                      ClaraSettings.from_spec(spec), compute_dtype=dtype,
                      gradient_checkpointing=spec.gradient_checkpointing, observer=observer)


def launch(spec: CompressorTrainingSpec, plan: RankPlan,
           plan_path: Path) -> subprocess.Popen[bytes]:
    """Start torchrun with this module on every process of this node."""
    plan.write(plan_path)
    return torchrun.launch(__name__, [str(plan_path)], spec.distribution.num_proc_per_node)


def main(argv: list[str]) -> int:
    """A torchrun rank: join the process group, train every stage, leave."""
    import torch.distributed as dist

    plan = RankPlan.read(Path(argv[0]))
    spec = CompressorTrainingSpec.model_validate(plan.spec)
    device = torchrun.join_process_group()
    try:
        processes = dist.get_world_size()
        synthesised = Path(plan.stage_one_records) if plan.stage_one_records else None
        plans = stage_plans(spec, Path(plan.data_dir), processes, synthesised)
        root = Path(plan.root)
        if dist.get_rank() == 0:
            with torchrun.progress_writer(root / PROGRESS_FILE) as write_line:
                def write(stage: str, report: Any) -> None:
                    write_line({"stage": stage, **asdict(report)})

                train(spec, plans, Path(plan.base_dir), root, device, write)
        else:
            train(spec, plans, Path(plan.base_dir), root, device)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
