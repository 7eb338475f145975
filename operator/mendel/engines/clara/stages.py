"""Instruction tuning (stage 1.2) and stage II on the shared training loop.

Both stages keep the compressor and the memory-token rows frozen, so a document's memory
states never change during them: both read the candidates' or documents' states through a
`CandidateCache` keyed by the compressor fingerprint, computed once when the stage starts
(`CandidateCache.warm`, in fixed batches, so that a resumed run reads the same states).
The states are computed without gradients and with dropout off, exactly as a compressed
store built after training would serve them, so the generator learns on the memories it will
read at inference.

Instruction tuning trains the generator alone on question + compressed documents -> answer
(seed-algorithms §3.1.5); its records are `StageOneExample`s whose prompt holds one
MEMORY_SLOT per document. Stage II (§3.1.6) trains the query reasoner and the generator
through `stage_two_loss`. Both resume exactly like stage I: the model is rebuilt with
`load_clara` from the checkpoint, and the stage's name and options are recorded with the
settings so that a checkpoint of another stage is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mendel.engines.clara.batches import StageOneExample
from mendel.engines.clara.cache import CandidateCache
from mendel.engines.clara.losses import answer_cross_entropy
from mendel.engines.clara.model import ClaraModel
from mendel.engines.clara.settings import GENERATOR
from mendel.engines.clara.stage_two import StageTwoExample, prepare_stage_two, stage_two_loss
from mendel.engines.clara.training import (
    MicroBatchLoss,
    Observer,
    TrainingResult,
    TrainingSettings,
    run_training,
)

__all__ = ["prepare_instruction_tuning", "train_instruction_tuning", "train_stage_two"]


def prepare_instruction_tuning(model: ClaraModel) -> None:
    """Set the model up for instruction tuning: only the generator trains; the compressor
    and the memory rows stay frozen (and so do cached and stored memories)."""
    model.set_trainable((GENERATOR,), memory_tokens=False)


def train_instruction_tuning(model: ClaraModel, examples: Sequence[StageOneExample],
                             settings: TrainingSettings, *,
                             cache: CandidateCache | None = None,
                             checkpoint_dir: Path | None = None,
                             observer: Observer | None = None) -> TrainingResult:
    """Train the generator to answer from the frozen compressor's memories.

    The loss is the generator's answer cross-entropy alone (`settings.mse_weight` is not
    used: the MSE shapes the compressor, which does not train here); reports give MSE 0.
    Checkpoints, resume and several processes work as in `train_stage_one`.

    Args:
        model: A CLaRa model after stage I (or loaded from this stage's checkpoint).
        examples: Prompts with one MEMORY_SLOT per document, and their answers.
        settings: The stage's optimisation budget.
        cache: Document memories; a fresh in-memory one when None.
        checkpoint_dir: Where checkpoints go and a resume starts from.
        observer: Sees every step's report.

    Raises:
        ValueError: no examples, or a checkpoint of other settings, stage or weights.
    """
    prepare_instruction_tuning(model)
    memories = cache if cache is not None else CandidateCache()
    fingerprint = model.compressor_fingerprint()
    device = model.memory_embeddings.device
    memories.warm(model, [chunk for example in examples for document in example.documents
                          for chunk in model.collator.document_chunks(document)], fingerprint)

    def loss_of(indices: Sequence[int]) -> MicroBatchLoss:
        chosen = [examples[i] for i in indices]
        batch = model.collator.stage_one_batch(chosen).to(device)
        chunks = [chunk for example in chosen for document in example.documents
                  for chunk in model.collator.document_chunks(document)]
        states = memories.get_or_compute(model, chunks, fingerprint) if chunks else \
            model.memory_embeddings.new_zeros(0, model.memory.count, model.hidden_size)
        logits, labels = model.generator_logits(
            batch.generator, states.reshape(-1, model.hidden_size), GENERATOR)
        cross_entropy = answer_cross_entropy(logits, labels)
        return MicroBatchLoss(cross_entropy, cross_entropy, cross_entropy.new_zeros(()))

    return run_training(model, len(examples), loss_of, settings,
                        checkpoint_dir=checkpoint_dir, observer=observer,
                        stage={"stage": "instructionTuning"})


def train_stage_two(model: ClaraModel, examples: Sequence[StageTwoExample],
                    settings: TrainingSettings, *, cache: CandidateCache, top_k: int,
                    tau: float, checkpoint_dir: Path | None = None,
                    observer: Observer | None = None) -> TrainingResult:
    """Train the query reasoner and the generator end to end (retrieve, then answer).

    Calls `prepare_stage_two` (a fresh query reasoner starts as a copy of the compressor; a
    trained one, as after a resume, is kept), computes the compressor fingerprint once, and
    minimises `stage_two_loss` with the candidates served by `cache`. Reports carry Recall@k
    where examples have positives; MSE is reported as 0 (`settings.mse_weight` is not used).
    Checkpoints, resume and several processes work as in `train_stage_one`.

    Args:
        model: A CLaRa model after stage I or instruction tuning (or loaded from this
            stage's checkpoint).
        examples: Questions with at least `top_k` candidate documents each.
        settings: The stage's optimisation budget.
        cache: Candidate memories, reused across steps (and across runs, given a directory).
        top_k: Documents given to the generator per question.
        tau: Temperature of the soft top-k.
        checkpoint_dir: Where checkpoints go and a resume starts from.
        observer: Sees every step's report.

    Raises:
        ValueError: no examples, too few candidates, or a checkpoint of other settings,
            stage options or weights.
    """
    prepare_stage_two(model)
    fingerprint = model.compressor_fingerprint()
    cache.warm(model, [chunk for example in examples for document in example.documents
                       for chunk in model.collator.document_chunks(document) or [[]]],
               fingerprint)

    def loss_of(indices: Sequence[int]) -> MicroBatchLoss:
        loss = stage_two_loss(model, [examples[i] for i in indices], cache, top_k=top_k,
                              tau=tau, fingerprint=fingerprint)
        ce = loss.cross_entropy
        return MicroBatchLoss(ce, ce, ce.new_zeros(()), loss.recall)

    return run_training(model, len(examples), loss_of, settings,
                        checkpoint_dir=checkpoint_dir, observer=observer,
                        stage={"stage": "endToEnd", "top_k": top_k, "tau": tau})
