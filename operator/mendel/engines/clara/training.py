"""Stage I's training loop for one process: AdamW, warm-up then decay, accumulation,
clipping, seeded data order and checkpoints that resume exactly.

Exact resume means a run killed after any step and resumed from its newest complete
checkpoint ends with the same weights, bit for bit, as a run never killed. Everything that
decides the next step is therefore either derived from the settings (the data order: one
permutation per epoch drawn from `seed` and the epoch number) or saved (optimizer, scheduler,
RNG states, and the data position). The model itself is rebuilt by the caller with
`load_clara(base, tokenizer, checkpoint / MODEL_DIR)`; `train_stage_one` checks that its
trainable weights match the checkpoint's digest before continuing.

Every stage runs the same loop (`run_training`); only the loss of one micro-batch differs,
given as a `MicroBatchLossFunction` of the example indices (stage I here; instruction tuning
and stage II in `stages.py`). Gradient accumulation averages micro-batch losses; it equals
one large batch when every micro-batch has as many answer tokens and chunks (CE and MSE are
means per micro-batch).

Several processes (torchrun; torch.distributed initialised by the caller) split every
micro-batch step of the one global data order: rank r takes the r-th slice of
`micro_batch_size` examples. Their gradients are averaged with one all-reduce per optimizer
step instead of wrapping the model in DistributedDataParallel: only the LoRA weights and
memory rows have gradients (a few MB), so overlapping communication with the backward pass
would gain little, while DDP's hooks would have to follow PEFT's per-forward adapter
switching. Every rank then applies the same update and keeps identical weights.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

from mendel.api.compressor import CompressorTrainingSpec, Stage
from mendel.engines.clara.batches import StageOneExample
from mendel.engines.clara.checkpoint import (
    Progress,
    latest_checkpoint,
    load_trainer_state,
    restore_rng,
    save_checkpoint,
    trainable_digest,
    world,
)
from mendel.engines.clara.model import ClaraModel

__all__ = [
    "DataOrder",
    "MicroBatchLoss",
    "MicroBatchLossFunction",
    "StepReport",
    "TrainingResult",
    "TrainingSettings",
    "learning_rate_factor",
    "run_training",
    "train_stage_one",
]

Schedule = Literal["cosine", "linear", "constant"]


@dataclass(frozen=True)
class TrainingSettings:
    """One stage's optimisation budget; batch sizes are per process.

    Attributes:
        steps: Optimizer steps in the whole run.
        micro_batch_size: Examples per forward pass.
        gradient_accumulation: Micro-batches per optimizer step.
        learning_rate: Peak learning rate.
        weight_decay: AdamW decay of the adapter weights (memory rows are never decayed).
        beta1, beta2: AdamW betas.
        warmup_steps: Steps of linear warm-up; the peak is reached at step `warmup_steps`.
        schedule: Decay after warm-up, towards `min_lr_ratio * learning_rate` at `steps`.
        min_lr_ratio: Floor of the decay as a fraction of the peak (0 decays to zero).
        max_grad_norm: Clip the global gradient norm to this.
        mse_weight: Weight of the memory MSE in the stage-I loss.
        checkpoint_every: Save a checkpoint every this many steps (0: never).
        seed: Seeds the data order and, for a fresh run, torch and python RNGs.
    """

    steps: int
    micro_batch_size: int = 1
    gradient_accumulation: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 0
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    mse_weight: float = 0.1
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.micro_batch_size < 1 or self.gradient_accumulation < 1:
            raise ValueError("steps, micro_batch_size and gradient_accumulation must be >= 1")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be in [0, {self.steps})")
        if not 0.0 <= self.min_lr_ratio <= 1.0 or self.checkpoint_every < 0:
            raise ValueError("min_lr_ratio must be in [0, 1] and checkpoint_every >= 0")

    def batch_size(self, processes: int = 1) -> int:
        """Examples per optimizer step over all processes."""
        return self.micro_batch_size * self.gradient_accumulation * processes

    @classmethod
    def from_spec(cls, spec: CompressorTrainingSpec, stage: Stage, examples: int,
                  processes: int = 1, seed: int = 0) -> TrainingSettings:
        """The settings a stage of a CompressorTraining asks for, over `examples` records.

        Steps are `ceil(epochs * examples / batchSize)`; accumulation is
        `batchSize / (microBatchSize * processes)`.

        Raises:
            ValueError: the batch size is not a multiple of micro batch x processes.
        """
        per_pass = stage.micro_batch_size * processes
        if stage.batch_size % per_pass:
            raise ValueError(f"batchSize {stage.batch_size} is not a multiple of "
                             f"microBatchSize x processes = {per_pass}")
        steps = max(1, math.ceil(stage.epochs * examples / stage.batch_size))
        optimizer = spec.optimizer
        schedule: Schedule = "cosine" if optimizer.scheduler.startswith("cosine") else \
            "linear" if optimizer.scheduler == "linear" else "constant"
        return cls(
            steps=steps, micro_batch_size=stage.micro_batch_size,
            gradient_accumulation=stage.batch_size // per_pass,
            learning_rate=stage.learning_rate, weight_decay=optimizer.weight_decay,
            beta1=optimizer.beta1, beta2=optimizer.beta2,
            warmup_steps=min(steps - 1, round(optimizer.warmup_ratio * steps)),
            schedule=schedule,
            min_lr_ratio=0.1 if optimizer.scheduler == "cosineWithMinLr" else 0.0,
            max_grad_norm=optimizer.max_grad_norm, mse_weight=stage.mse_weight,
            checkpoint_every=spec.checkpoint_every_steps, seed=seed,
        )


def learning_rate_factor(step: int, settings: TrainingSettings) -> float:
    """Multiplier of the peak learning rate used by optimizer step `step` (0-based).

    Warm-up gives (step + 1) / (warmup + 1), so no step runs at zero; the decay starts at
    the peak at step `warmup_steps` and would reach the floor at step `steps`.
    """
    warmup = settings.warmup_steps
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / (settings.steps - warmup))
    if settings.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif settings.schedule == "linear":
        decay = 1.0 - progress
    else:
        return 1.0
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * decay


class DataOrder:
    """Example indices in a fresh permutation per epoch, drawn from (seed, epoch) alone.

    The position (epoch, index) is all a resumed run needs; a micro-batch that reaches the
    end of an epoch continues in the next one.
    """

    def __init__(self, size: int, seed: int, epoch: int = 0, index: int = 0) -> None:
        if size < 1:
            raise ValueError("no training examples")
        self.size = size
        self.seed = seed
        self.epoch = epoch
        self.index = index
        self._order = self.permutation(epoch)

    def permutation(self, epoch: int) -> list[int]:
        """The order of epoch `epoch` (a string seed: deterministic across processes)."""
        order = list(range(self.size))
        random.Random(f"clara-data:{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, count: int) -> list[int]:
        """The next `count` indices, advancing the position."""
        taken: list[int] = []
        while len(taken) < count:
            if self.index == self.size:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self.permutation(self.epoch)
            taken.append(self._order[self.index])
            self.index += 1
        return taken


@dataclass(frozen=True)
class StepReport:
    """What one optimizer step did; losses are means over its micro-batches.

    Attributes:
        step: Optimizer steps done, counting this one (1-based).
        loss: CE + mse_weight x MSE.
        cross_entropy: Answer cross-entropy.
        mse: Memory MSE (reported even when its weight is 0).
        learning_rate: The rate this step used.
        grad_norm: Global gradient norm before clipping.
        recall: Stage II's mean Recall@k over the micro-batches whose examples have known
            positives; None when none has them, and in the other stages.
    """

    step: int
    loss: float
    cross_entropy: float
    mse: float
    learning_rate: float
    grad_norm: float
    recall: float | None = None


@dataclass(frozen=True)
class MicroBatchLoss:
    """The loss of one micro-batch, as a stage computes it.

    Attributes:
        total: What is back-propagated.
        cross_entropy: Answer cross-entropy (logged).
        mse: Memory MSE (logged; a zero tensor in stages without it).
        recall: Recall@k of the micro-batch, when the stage measures it.
    """

    total: torch.Tensor
    cross_entropy: torch.Tensor
    mse: torch.Tensor
    recall: float | None = None


MicroBatchLossFunction = Callable[[Sequence[int]], MicroBatchLoss]
"""A stage's loss of this rank's micro-batch, given the examples' indices."""


@dataclass(frozen=True)
class TrainingResult:
    """The end of a run.

    Attributes:
        reports: The steps this call ran (after a resume, only those).
        checkpoints: Checkpoints this call wrote.
        resumed_from: The checkpoint it continued from, if any.
    """

    reports: tuple[StepReport, ...]
    checkpoints: tuple[Path, ...]
    resumed_from: Path | None


Observer = Callable[[StepReport], None]


def _resume(checkpoint: Path, model: ClaraModel, settings: dict[str, Any],
            optimizer: torch.optim.Optimizer, scheduler: LambdaLR) -> Progress:
    saved = load_trainer_state(checkpoint)
    if saved.settings != settings:
        raise ValueError(f"{checkpoint} was written with other settings: {saved.settings}")
    if saved.weights_digest != trainable_digest(model):
        raise ValueError(f"the model's trainable weights differ from {checkpoint}; build it "
                         "with load_clara from the checkpoint's model directory")
    optimizer.load_state_dict(saved.optimizer)
    scheduler.load_state_dict(saved.scheduler)
    restore_rng(saved.rng)
    return saved.progress


def _settings_json(settings: TrainingSettings,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**asdict(settings), **(extra or {})}


def _step(loss_of: MicroBatchLossFunction, order: DataOrder, settings: TrainingSettings,
          device: torch.device) -> tuple[list[float], float | None]:
    """Forward and backward this rank's micro-batches of one step; returns the mean losses
    (total, CE, MSE) over all ranks, and the mean recall over the micro-batches with one."""
    rank, size = world()
    micro = settings.micro_batch_size
    sums = torch.zeros(5, dtype=torch.float64)  # total, CE, MSE, recall sum, recall count
    for _ in range(settings.gradient_accumulation):
        indices = order.take(micro * size)[rank * micro:(rank + 1) * micro]
        loss = loss_of(indices)
        torch.autograd.backward(loss.total / settings.gradient_accumulation)
        recall = (loss.recall, 1.0) if loss.recall is not None else (0.0, 0.0)
        sums += torch.tensor([float(loss.total.detach()), float(loss.cross_entropy.detach()),
                              float(loss.mse.detach()), *recall], dtype=torch.float64)
    if size > 1:  # on the model's device: NCCL reduces only GPU tensors
        reduced = sums.to(device)
        dist.all_reduce(reduced)
        sums = reduced.to("cpu")
    means: list[float] = (sums[:3] / (settings.gradient_accumulation * size)).tolist()
    counted = float(sums[4])
    return means, float(sums[3]) / counted if counted else None


def _average_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Mean of every rank's gradients, in one all-reduce over a flat buffer."""
    size = world()[1]
    if size == 1:
        return
    for param in parameters:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    flat = torch.cat([param.grad.reshape(-1) for param in parameters if param.grad is not None])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for param in parameters:
        if param.grad is not None:
            count = param.grad.numel()
            param.grad.copy_(flat[offset:offset + count].view_as(param.grad))
            offset += count


def run_training(model: ClaraModel, examples: int, loss_of: MicroBatchLossFunction,
                 settings: TrainingSettings, *, checkpoint_dir: Path | None = None,
                 observer: Observer | None = None,
                 stage: Mapping[str, Any] | None = None) -> TrainingResult:
    """The loop every stage shares: train the model's current trainable set for
    `settings.steps` steps on `examples` records, each micro-batch's loss from `loss_of`.

    The caller chooses the trainable set before calling (the optimizer holds exactly
    `model.parameter_groups`). `stage` is recorded with the settings in every checkpoint,
    so that a checkpoint of another stage or with other stage options is never resumed.
    Checkpoints, resume and several processes work as `train_stage_one` describes.

    Raises:
        ValueError: no examples, or a checkpoint written with other settings or weights.
    """
    order = DataOrder(examples, settings.seed)
    recorded = _settings_json(settings, stage)
    groups = model.parameter_groups(settings.weight_decay)
    parameters = [param for group in groups for param in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate,
                                  betas=(settings.beta1, settings.beta2))
    scheduler = LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))
    latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    start = 0
    if latest is not None:
        progress = _resume(latest, model, recorded, optimizer, scheduler)
        order = DataOrder(examples, settings.seed, progress.epoch, progress.index)
        start = progress.step
    else:
        rank = world()[0]
        torch.manual_seed(settings.seed + rank)
        random.seed(settings.seed + rank)
    device = model.memory_embeddings.device
    model.train()
    reports: list[StepReport] = []
    written: list[Path] = []
    for step in range(start + 1, settings.steps + 1):
        (loss, cross_entropy, mse), recall = _step(loss_of, order, settings, device)
        _average_gradients(parameters)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        learning_rate = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        report = StepReport(step, loss, cross_entropy, mse, learning_rate, float(grad_norm),
                            recall)
        reports.append(report)
        if checkpoint_dir is not None and settings.checkpoint_every and \
                step % settings.checkpoint_every == 0:
            written.append(save_checkpoint(checkpoint_dir, model,
                                           Progress(step, order.epoch, order.index, world()[1]),
                                           recorded, optimizer, scheduler))
        if observer is not None:
            observer(report)
    return TrainingResult(tuple(reports), tuple(written), latest)


def train_stage_one(model: ClaraModel, examples: Sequence[StageOneExample],
                    settings: TrainingSettings, *, checkpoint_dir: Path | None = None,
                    observer: Observer | None = None) -> TrainingResult:
    """Train the model's trainable adapters and memory rows for `settings.steps` steps.

    With `checkpoint_dir`, continues from its newest complete checkpoint when there is one
    (the model must then have been loaded from that checkpoint) and saves one every
    `settings.checkpoint_every` steps. Under torch.distributed every rank calls it with the
    same examples, settings and directory (shared by all ranks). The observer sees every
    step after it is applied and after its checkpoint (if any) is written.

    Raises:
        ValueError: no examples, or a checkpoint written with other settings or weights.
    """
    device = model.memory_embeddings.device

    def loss_of(indices: Sequence[int]) -> MicroBatchLoss:
        batch = model.collator.stage_one_batch([examples[i] for i in indices]).to(device)
        loss = model(batch, mse_weight=settings.mse_weight)
        return MicroBatchLoss(loss.total, loss.cross_entropy, loss.mse)

    return run_training(model, len(examples), loss_of, settings,
                        checkpoint_dir=checkpoint_dir, observer=observer)
