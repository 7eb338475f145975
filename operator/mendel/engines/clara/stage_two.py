"""Stage II's loss: retrieve among candidate memories with the query reasoner, answer from them.

Seed-algorithms §3.1.6. For each question, the query reasoner encodes the question followed
by the memory tokens; the query vector is its final memory states flattened (l x hidden, as
the seed specifies, not their mean). A candidate document's vector is its compressor memory
states flattened the same way; a document longer than one chunk is scored by the mean of its
chunks' memory blocks, and when selected, all its chunks' blocks go to the generator. Cosine
scores and `straight_through_topk` (k and tau from the spec) pick k documents; the generator
reads them in a "Background / Question" prompt and the loss is its answer cross-entropy.
Gradients reach the generator through the CE and the query reasoner through the soft path of
the selection (the selected memories themselves come from the frozen compressor).

The compressor and the memory-token rows are frozen for the whole stage (`prepare_stage_two`),
so a candidate's memory states never change and `CandidateCache` serves them after the first
encode, keyed by the compressor fingerprint. The reference instead re-encodes all 20
candidates every step and keeps training the memory rows, which silently makes any index
built before or during stage II stale (engines-offline §3.2.1); freezing the rows costs the
query reasoner only the memory-row gradient it would get through its own input, and keeps
the cache and a compressed corpus valid. `reencode=True` reproduces the reference's cost for
the benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mendel.engines.clara.batches import MEMORY_SLOT, GeneratorExample
from mendel.engines.clara.cache import CandidateCache
from mendel.engines.clara.losses import answer_cross_entropy
from mendel.engines.clara.model import ClaraModel
from mendel.engines.clara.settings import COMPRESSOR, GENERATOR, QUERY_REASONER
from mendel.engines.clara.topk import cosine_scores, select_memories, straight_through_topk

__all__ = [
    "STAGE_TWO_PROMPT",
    "StageTwoExample",
    "StageTwoLoss",
    "prepare_stage_two",
    "recall_at_k",
    "stage_two_loss",
    "stage_two_prompt",
]

STAGE_TWO_PROMPT = "Background:\n{slots}\n\nQuestion: {question}\nAnswer:"
"""The generator prompt of stage II (seed §3.1.6 step 6); `{slots}` holds one MEMORY_SLOT
per selected document, one per line."""


@dataclass(frozen=True)
class StageTwoExample:
    """One stage-II record: a question, its candidate documents, the answer to learn.

    Attributes:
        question: The query text.
        documents: Candidate documents (20 in the paper), in retrieval order.
        answer: Target text for the generator.
        positives: Indices into `documents` of the annotated positives, when known; used
            only for Recall@k, never in the loss.
    """

    question: str
    documents: tuple[str, ...]
    answer: str
    positives: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.documents:
            raise ValueError("a stage-II example needs at least one candidate document")
        if self.positives is not None and not all(
                0 <= index < len(self.documents) for index in self.positives):
            raise ValueError(f"positives {self.positives} out of range for "
                             f"{len(self.documents)} documents")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StageTwoExample:
        """From the reference's JSON record: question, docs, answer, optional pos_index
        (an index or a list of them)."""
        positives = record.get("pos_index")
        if positives is not None:
            positives = (int(positives),) if isinstance(positives, int) else \
                tuple(int(index) for index in positives)
        return cls(str(record["question"]), tuple(str(d) for d in record["docs"]),
                   str(record["answer"]), positives)


@dataclass(frozen=True)
class StageTwoLoss:
    """One stage-II forward.

    Attributes:
        cross_entropy: The generator's answer CE, the whole stage-II loss (back-propagate it).
        selected: [examples, k] indices of the chosen documents, in selection order.
        recall: Mean Recall@k over the examples with positives; None when none has them.
    """

    cross_entropy: torch.Tensor
    selected: torch.Tensor
    recall: float | None


def prepare_stage_two(model: ClaraModel) -> None:
    """Set the model up for stage II: the query reasoner starts as a copy of the compressor
    (unless it was already trained, i.e. has a non-zero LoRA B), and only the query reasoner
    and the generator train; the compressor and the memory rows stay frozen."""
    if not _adapter_is_trained(model, QUERY_REASONER):
        model.copy_adapter(COMPRESSOR, QUERY_REASONER)
    model.set_trainable((QUERY_REASONER, GENERATOR), memory_tokens=False)


def _adapter_is_trained(model: ClaraModel, name: str) -> bool:
    """A fresh PEFT LoRA has B = 0 (it changes nothing); any non-zero B means it was set."""
    marker = f"lora_B.{name}."
    return any(bool(param.detach().any()) for param_name, param
               in model.peft.named_parameters() if marker in param_name)


def stage_two_prompt(question: str, documents: int) -> str:
    """The generator prompt with one memory slot per selected document."""
    return STAGE_TWO_PROMPT.format(slots="\n".join([MEMORY_SLOT] * documents),
                                   question=question)


def recall_at_k(selected: Sequence[Sequence[int]],
                positives: Sequence[tuple[int, ...] | None]) -> float | None:
    """Mean over examples with positives of |selected ∩ positives| / |positives|.

    Examples without positives (None or empty) are left out; None when none is left.
    """
    recalls = [len(set(chosen) & set(known)) / len(set(known))
               for chosen, known in zip(selected, positives, strict=True) if known]
    return sum(recalls) / len(recalls) if recalls else None


def _frozen_encode(model: ClaraModel, chunks: list[list[int]]) -> torch.Tensor:
    """The compressor's memory states of `chunks` without the cache, the way the cache
    computes a miss (no grad, eval mode): the reference's per-step re-encoding."""
    batch = model.collator.encoder_batch(chunks).to(model.memory_embeddings.device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.encode(batch, COMPRESSOR).memory
    finally:
        model.train(training)


def _candidates(model: ClaraModel, examples: Sequence[StageTwoExample],
                cache: CandidateCache, fingerprint: str | None,
                reencode: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every example's candidate documents as padded tensors.

    Returns:
        memories: [examples, documents, max chunks x l, hidden], each document's chunk
            blocks in order, zero-padded.
        chunk_counts: [examples, documents] chunks per document (0 for a padded document).
        vectors: [examples, documents, l x hidden] scoring vectors (mean over chunks).
    """
    per_document = [[model.collator.document_chunks(doc) or [[]] for doc in example.documents]
                    for example in examples]
    flat = [chunk for documents in per_document for chunks in documents for chunk in chunks]
    states = _frozen_encode(model, flat) if reencode else \
        cache.get_or_compute(model, flat, fingerprint)
    count, width = model.memory.count, model.hidden_size
    most_documents = max(len(documents) for documents in per_document)
    most_chunks = max(len(chunks) for documents in per_document for chunks in documents)
    memories = states.new_zeros(len(examples), most_documents, most_chunks * count, width)
    vectors = states.new_zeros(len(examples), most_documents, count * width)
    chunk_counts = torch.zeros(len(examples), most_documents, dtype=torch.long)
    offset = 0
    for row, documents in enumerate(per_document):
        for column, chunks in enumerate(documents):
            blocks = states[offset:offset + len(chunks)]
            offset += len(chunks)
            memories[row, column, :len(chunks) * count] = blocks.reshape(-1, width)
            vectors[row, column] = blocks.mean(dim=0).reshape(-1)
            chunk_counts[row, column] = len(chunks)
    return memories, chunk_counts, vectors


def stage_two_loss(model: ClaraModel, examples: Sequence[StageTwoExample],
                   cache: CandidateCache, *, top_k: int, tau: float,
                   fingerprint: str | None = None, reencode: bool = False) -> StageTwoLoss:
    """The stage-II loss of a micro-batch: query reasoner -> cosine -> top-k -> generator CE.

    Args:
        model: A CLaRa model after `prepare_stage_two`.
        examples: Records whose every document list has at least `top_k` entries.
        cache: Candidate memory states; filled on first sight of a document's chunks.
        top_k: Documents given to the generator per question (5 in the paper).
        tau: Top-k softmax temperature (0.02 in the reference's cosine path).
        fingerprint: `model.compressor_fingerprint()`, computed once per stage by the
            caller (the compressor is frozen); computed here when None.
        reencode: Encode every candidate on every call, bypassing the cache, as the
            reference does (for comparisons only).

    Raises:
        ValueError: no examples, or an example with fewer than `top_k` documents.
    """
    if not examples:
        raise ValueError("stage_two_loss needs at least one example")
    device = model.memory_embeddings.device
    memories, chunk_counts, vectors = _candidates(model, examples, cache, fingerprint,
                                                  reencode)
    queries = model.encode(model.collator.query_batch([e.question for e in examples]).to(device),
                           QUERY_REASONER).memory
    scores = cosine_scores(queries.reshape(len(examples), -1), vectors)
    selection = straight_through_topk(scores, top_k, tau, (chunk_counts > 0).to(device))
    chosen = selection.detach().argmax(dim=-1)
    picked = select_memories(selection, memories.flatten(2))
    picked = picked.reshape(len(examples), top_k, -1, model.hidden_size)
    blocks: list[torch.Tensor] = []
    generator_examples: list[GeneratorExample] = []
    for row, example in enumerate(examples):
        sizes = [int(chunk_counts[row, index]) * model.memory.count
                 for index in chosen[row].tolist()]
        blocks += [picked[row, slot, :size] for slot, size in enumerate(sizes)]
        generator_examples.append(GeneratorExample(
            stage_two_prompt(example.question, top_k), tuple(sizes), example.answer))
    batch = model.collator.generator_batch(generator_examples).to(device)
    logits, labels = model.generator_logits(batch, torch.cat(blocks), GENERATOR)
    selected = chosen.cpu()
    recall = recall_at_k(selected.tolist(), [e.positives for e in examples])
    return StageTwoLoss(answer_cross_entropy(logits, labels), selected, recall)
