"""CompressorTraining's optional data synthesis: bare documents in, stage-I records out.

When `spec.stages.pretraining.synthesis` is set, the pretraining dataset holds documents
(`{"docs": [...]}` or `{"text": ...}` per record) and an LLM writes the QA and paraphrase
targets (mendel.engines.clara.synthesis). `synthesize_stage_one` runs that once, in the
driver, before the stages are planned: torchrun ranks read the file it returns and never
call an LLM. Its journal lives in the directory the caller gives, so a Pod restarted with
the same directory asks nothing again for documents already done; both file names carry a
fingerprint of what decides the records (LLM, sampling, synthesis settings, seed), so a
changed spec never reuses another spec's answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from mendel.api.compressor import CompressorTrainingSpec, Synthesis
from mendel.workloads.backends import BackendPool, sampling_of
from mendel.workloads.context import WorkloadError

__all__ = ["records_path", "synthesize_stage_one"]

logger = logging.getLogger(__name__)
_FIELD = "spec.stages.pretraining"


def synthesize_stage_one(spec: CompressorTrainingSpec, directory: Path, *, data_dir: Path,
                         models_dir: Path) -> Path:
    """Write the pretraining stage's records with its synthesis LLM; returns the JSON Lines
    file (one stage-I record per line, the shape `stage_one_examples` reads).

    Args:
        spec: A spec whose pretraining stage has `synthesis`.
        directory: Where the journal and the records go; durable storage makes a retried
            Pod resume instead of asking again.
        data_dir: Cache for a remote dataset (the one the stages' datasets use).
        models_dir: Where a `model:` LLM is fetched to.

    Raises:
        WorkloadError: no synthesis block, a record without documents, a missing API key,
            or no document gave records (every one excluded: a retry would not help).
        SynthesisError: too many calls failed; finished documents stay journalled and a
            retry resumes after them.
    """
    from mendel.datasets import DatasetError, load_records
    from mendel.engines.clara.synthesis import SynthesisSettings, synthesize

    synthesis = spec.stages.pretraining.synthesis
    if synthesis is None:
        raise WorkloadError(f"{_FIELD}.synthesis is not set; the dataset must hold prepared "
                            "stage-I records")
    try:
        records = load_records(spec.stages.pretraining.dataset, cache_dir=data_dir)
    except DatasetError as error:
        raise WorkloadError(f"{_FIELD}.dataset: {error}") from error
    documents = _documents(records)
    settings = SynthesisSettings(
        sampling=sampling_of(synthesis.llm), rounds=synthesis.rounds,
        complex_questions=synthesis.complex_questions, paraphrase=synthesis.paraphrase,
        max_questions=synthesis.max_questions, concurrency=synthesis.concurrency,
        max_failed_call_fraction=synthesis.max_failed_call_fraction, seed=spec.seed)
    fingerprint = _fingerprint(synthesis, spec.seed)
    directory.mkdir(parents=True, exist_ok=True)

    async def run() -> Any:
        pool = BackendPool(models_dir)
        try:
            backend = pool.get(synthesis.llm, f"{_FIELD}.synthesis.llm",
                               concurrency=synthesis.concurrency)
            return await synthesize(documents, backend, settings,
                                    directory / f"synthesis-{fingerprint}.journal.jsonl")
        finally:
            await pool.aclose()

    result = asyncio.run(run())
    logger.info("data synthesis: %s", json.dumps(result.metrics(), sort_keys=True))
    if result.incomplete:
        logger.warning("data synthesis: %d of %d documents lost a call and are left out of "
                       "this run's records; a rerun with the same directory asks them again",
                       result.incomplete, result.documents)
    if not result.records and not result.incomplete:
        raise WorkloadError(f"{_FIELD}.synthesis: none of {result.documents} documents gave "
                            f"records (excluded: {dict(result.excluded)}, dropped: "
                            f"{dict(result.dropped)}); try a stronger LLM or more rounds")
    return _write_lines(records_path(spec, directory), result.records)


def records_path(spec: CompressorTrainingSpec, directory: Path) -> Path:
    """Where `synthesize_stage_one` writes the records of this spec's synthesis settings
    (the worker Pods of a multi-node run wait for the leader's file there)."""
    synthesis = spec.stages.pretraining.synthesis
    if synthesis is None:
        raise WorkloadError(f"{_FIELD}.synthesis is not set")
    return directory / f"stage-one-{_fingerprint(synthesis, spec.seed)}.jsonl"


def _documents(records: list[dict[str, Any]]) -> list[str]:
    """Every document of the records once, in order of first appearance (a prepared stage-I
    dataset names each document in a QA and a paraphrase record)."""
    documents: dict[str, None] = {}
    for number, record in enumerate(records):
        value = record.get("docs", record.get("text"))
        texts = [value] if isinstance(value, str) else value
        if (not isinstance(texts, list) or not texts
                or not all(isinstance(text, str) and text.strip() for text in texts)):
            raise WorkloadError(f"{_FIELD}.dataset: record {number} needs 'docs' (a list of "
                                "non-empty strings) or 'text' (a non-empty string) to "
                                "synthesise from")
        documents.update(dict.fromkeys(texts))
    return list(documents)


def _fingerprint(synthesis: Synthesis, seed: int) -> str:
    """What decides the replies: the LLM's identity and sampling, the synthesis settings and
    the seed (not timeouts, retries, concurrency or the failure threshold)."""
    llm = synthesis.llm
    identity = ({"url": llm.endpoint.url, "model": llm.endpoint.model} if llm.endpoint
                else {"uri": llm.model.uri, "revision": llm.model.revision} if llm.model
                else {})
    decisive = {"llm": identity, "temperature": llm.temperature, "topP": llm.top_p,
                "maxTokens": llm.max_tokens, "rounds": synthesis.rounds,
                "complexQuestions": synthesis.complex_questions,
                "paraphrase": synthesis.paraphrase, "maxQuestions": synthesis.max_questions,
                "seed": seed}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:12]


def _write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    """Atomically: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(temporary, path)
    return path
