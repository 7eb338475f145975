"""Stage-I training data written by an LLM from bare documents (CLaRa's SCP data synthesis).

For each document the LLM writes simple questions (one or two facts each) and, optionally,
multi-hop questions; answers each from the document alone ("not in the document" drops the
pair); judges each pair (an incorrect one is dropped); then checks coverage: shown the kept
pairs, it counts the facts still unasked and writes questions for them, which are answered
and judged in turn, up to `rounds` checks in all. A document whose last check still finds
gaps is excluded, as the paper excludes its uncovered samples. A kept document may also get
a paraphrase, kept only when a second call confirms it states every fact and nothing more.
The prompts and the tolerant reading of replies are in `_synthesis_prompts`.

Nothing here raises on a bad reply: a failed call or an unreadable reply is counted by
reason and yields no record. Only a run whose failed calls exceed a fraction of all calls
stops, with the counts (`SynthesisError`). Each finished document's records and counts go
to a journal (JSON Lines, fsynced), so a rerun asks nothing again for them; a document hit
by a failed call is left out of the journal and asked again by the next run. Every call's
sampling seed derives from the run's seed, the document's index and the call's phase, so a
run is reproducible on a server that honours seeds.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mendel.engines.clara import _synthesis_prompts as prompts
from mendel.engines.clara._synthesis_prompts import NOT_IN_DOCUMENT, Unreadable
from mendel.engines.tfgrpo.rollouts import seed_for
from mendel.engines.tfgrpo.store import Journal
from mendel.llm.chat import ChatBackend, ChatError, Sampling

__all__ = ["NOT_IN_DOCUMENT", "SynthesisError", "SynthesisResult", "SynthesisSettings",
           "synthesize"]

_EARLY_STOP_CALLS = 40
"""Calls after which the failure fraction is trusted enough to stop a run early (an
endpoint that is down would otherwise be retried for every remaining document)."""


class SynthesisError(RuntimeError):
    """Too many calls failed; `counts` holds the calls and failures by reason."""

    def __init__(self, message: str, counts: Mapping[str, int]) -> None:
        super().__init__(message)
        self.counts = dict(counts)


@dataclass(frozen=True)
class SynthesisSettings:
    """How documents become stage-I records.

    Attributes:
        sampling: Temperature and budget of every call (the seed is set per call).
        rounds: Coverage checks per document at most (the paper's 10).
        complex_questions: Also ask multi-hop questions.
        paraphrase: Also write a validated paraphrase per kept document.
        concurrency: Documents in progress at once.
        max_failed_call_fraction: Failed or unreadable calls above this share of all calls
            stop the run.
        max_questions: Questions one reply may hold.
        seed: The run's seed.
    """

    sampling: Sampling = field(default_factory=Sampling)
    rounds: int = 10
    complex_questions: bool = True
    paraphrase: bool = True
    concurrency: int = 8
    max_failed_call_fraction: float = 0.5
    max_questions: int = 12
    seed: int = 0


@dataclass
class SynthesisResult:
    """The records in document order, and what became of the documents and calls.

    Attributes:
        records: Stage-I records: a QA record, then a paraphrase record if one was kept.
        documents: Documents given.
        kept: Documents that gave records.
        resumed: Documents read back from the journal instead of asked again.
        incomplete: Documents hit by a failed call (no records now; asked again next run).
        calls: LLM calls made for the documents (journalled ones included).
        failed: Failed calls and unreadable replies, by reason.
        dropped: Pairs and paraphrases refused, by reason.
        excluded: Documents that gave no records although every call answered, by reason.
    """

    records: list[dict[str, Any]]
    documents: int
    kept: int = 0
    resumed: int = 0
    incomplete: int = 0
    calls: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a tracker, e.g. {'synthesis/failed/timeout': 2.0}."""
        out = {f"synthesis/{name}": float(value) for name, value in (
            ("documents", self.documents), ("kept", self.kept), ("resumed", self.resumed),
            ("incomplete", self.incomplete), ("calls", self.calls),
            ("records", len(self.records)))}
        for group, counts in (("failed", self.failed), ("dropped", self.dropped),
                              ("excluded", self.excluded)):
            out.update({f"synthesis/{group}/{k}": float(v) for k, v in sorted(counts.items())})
        return out

    def add(self, entry: Mapping[str, Any]) -> None:
        """Count one document's calls and outcomes (its records are gathered at the end)."""
        self.calls += int(entry["calls"])
        self.failed.update(entry["failed"])
        self.dropped.update(entry["dropped"])
        if entry.get("excluded"):
            self.excluded[str(entry["excluded"])] += 1

    def failed_fraction(self) -> float:
        return sum(self.failed.values()) / self.calls if self.calls else 0.0


async def synthesize(documents: Sequence[str], backend: ChatBackend,
                     settings: SynthesisSettings, journal_path: Path) -> SynthesisResult:
    """Stage-I records for `documents`, resuming from (and appending to) the journal.

    The journal belongs to one set of settings and one LLM: give another path when they
    change, or the old documents' records are reused.

    Raises:
        SynthesisError: failed calls exceed `max_failed_call_fraction` of all calls (what
            was finished stays in the journal for the rerun).
    """
    journal = Journal(journal_path)
    result = SynthesisResult(records=[], documents=len(documents))
    entries: list[Mapping[str, Any] | None] = [None] * len(documents)
    pending = []
    for index, text in enumerate(documents):
        key = _key(index, text)
        if key in journal:
            entries[index] = entry = journal.get(key)
            result.add(entry)
            result.resumed += 1
        else:
            pending.append(index)
    queue = iter(pending)
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        for index in queue:  # one iterator shared by every worker
            if stopped:
                return
            run = _Document(backend, settings, index, documents[index])
            entry = await run.synthesize()
            result.add(entry)
            if run.complete:
                journal.record(_key(index, documents[index]), entry)
                entries[index] = entry
            else:
                result.incomplete += 1
            stopped = (result.calls >= _EARLY_STOP_CALLS
                       and result.failed_fraction() > settings.max_failed_call_fraction)

    await asyncio.gather(*(worker() for _ in range(max(1, settings.concurrency))))
    if result.failed_fraction() > settings.max_failed_call_fraction:
        failed = sum(result.failed.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.failed.items()))
        raise SynthesisError(
            f"data synthesis lost {failed} of {result.calls} LLM calls ({reasons}), more than "
            f"the allowed fraction {settings.max_failed_call_fraction:g}; finished documents "
            "are journalled and a rerun resumes after them",
            {"calls": result.calls, **{f"failed/{k}": v for k, v in result.failed.items()}})
    for entry in entries:
        if entry is not None and entry["records"]:
            result.kept += 1
            result.records.extend(entry["records"])
    return result


def _key(index: int, text: str) -> str:
    """A journal key that also notices a dataset whose documents changed."""
    return f"{index}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class _Document:
    """The calls for one document and their tally."""

    def __init__(self, backend: ChatBackend, settings: SynthesisSettings, index: int,
                 text: str) -> None:
        self.backend = backend
        self.settings = settings
        self.index = index
        self.text = text
        self.calls = 0
        self.failed: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.complete = True
        """False once a call failed: the document is then asked again by a later run."""

    async def synthesize(self) -> dict[str, Any]:
        """{"records", "calls", "failed", "dropped", "excluded"} for the journal."""
        kinds = ["simple", "complex"] if self.settings.complex_questions else ["simple"]
        asked = await asyncio.gather(*(self._questions(kind) for kind in kinds))
        pairs = await self._pairs([q for questions in asked for q in questions], [], "first")
        excluded = await self._cover(pairs) if self.complete else None
        if excluded is None and not pairs:
            excluded = "no_pairs"
        records: list[dict[str, Any]] = []
        if self.complete and excluded is None:
            records.append({"data_type": "qa", "question": [q for q, _ in pairs],
                            "answers": [a for _, a in pairs], "docs": [self.text]})
            paraphrase = await self._paraphrase() if self.settings.paraphrase else None
            if paraphrase is not None:
                records.append({"data_type": "paraphrase", "answers": [paraphrase],
                                "docs": [self.text]})
        return {"records": records if self.complete else [], "calls": self.calls,
                "failed": dict(self.failed), "dropped": dict(self.dropped),
                "excluded": excluded if self.complete else None}

    async def _ask(self, phase: tuple[Any, ...], prompt: str,
                   schema: Mapping[str, Any] | None) -> str | None:
        """One call's text, or None (counted) when it failed or was cut short."""
        if not self.complete:
            return None  # a failed call already condemned this attempt: spend nothing more
        self.calls += 1
        sampling = replace(self.settings.sampling,
                           seed=seed_for(self.settings.seed, self.index, *phase))
        messages = [{"role": "system", "content": prompts.SYSTEM},
                    {"role": "user", "content": prompt}]
        try:
            reply = await self.backend.chat(
                messages, sampling,
                json_schema=schema if self.backend.supports_json_schema else None)
        except ChatError as error:
            self.failed[error.reason] += 1
            self.complete = False
            return None
        if reply.truncated:
            self.failed["truncated"] += 1
            return None
        return reply.text

    async def _read(self, phase: tuple[Any, ...], prompt: str, schema: Mapping[str, Any] | None,
                    reader: Callable[[str], Any]) -> Any:
        """`reader` applied to one call's reply; None (counted) when there is nothing to
        read or the reader finds it unreadable."""
        text = await self._ask(phase, prompt, schema)
        if text is None:
            return None
        try:
            return reader(text)
        except Unreadable as error:
            self.failed[error.reason] += 1
            return None

    async def _questions(self, kind: str) -> list[str]:
        limit = self.settings.max_questions
        questions = await self._read(
            (kind,), prompts.questions_prompt(self.text, kind, limit),
            prompts.questions_schema(limit),
            lambda text: prompts.read_questions(prompts.read_json(text), limit))
        return questions or []

    async def _pairs(self, questions: Sequence[str], known: Sequence[tuple[str, str]],
                     phase: object) -> list[tuple[str, str]]:
        """Answered and judged pairs for the questions that are new."""
        seen = {q.lower() for q, _ in known}
        fresh = []
        for question in questions:
            if question.lower() in seen:
                self.dropped["duplicate_question"] += 1
                continue
            seen.add(question.lower())
            fresh.append(question)
        answers = await asyncio.gather(*(self._pair(question, (phase, number))
                                         for number, question in enumerate(fresh)))
        return [pair for pair in answers if pair is not None]

    async def _pair(self, question: str, identity: tuple[object, ...]) -> tuple[str, str] | None:
        answer = await self._read(("answer", *identity),
                                  prompts.answer_prompt(self.text, question),
                                  prompts.object_schema("answer"), prompts.read_answer)
        if answer is None:
            return None
        if not answer or NOT_IN_DOCUMENT in answer.lower():
            self.dropped["not_in_document" if answer else "empty_answer"] += 1
            return None
        choices = ("incorrect", "correct")
        verdict = await self._read(
            ("judge", *identity), prompts.judge_prompt(self.text, question, answer),
            prompts.object_schema("judgment", choices),
            lambda text: prompts.read_choice(text, "judgment", choices))
        if verdict == "incorrect":
            self.dropped["judged_incorrect"] += 1
        return (question, answer) if verdict == "correct" else None

    async def _cover(self, pairs: list[tuple[str, str]]) -> str | None:
        """Extend `pairs` until a check counts no unasked fact (or, without a count, lists no
        question); None when covered. Otherwise, after `rounds` checks, why the document is
        left out: 'uncovered' when the last readable check still found gaps (the last
        check's questions are not answered), 'coverage_unreadable' when no check could be
        read."""
        limit = self.settings.max_questions
        reason = "coverage_unreadable"
        for round_number in range(1, self.settings.rounds + 1):
            value = await self._read(("cover", round_number),
                                     prompts.coverage_prompt(self.text, pairs, limit),
                                     prompts.questions_schema(limit, with_count=True),
                                     prompts.read_json)
            if not self.complete:
                return None
            if value is None:  # cut short or unreadable: the round is spent
                continue
            count = prompts.read_missing_count(value)
            if count == 0:
                return None
            try:
                missing = prompts.read_questions(value, limit)
            except Unreadable as error:
                self.failed[error.reason] += 1
                continue
            if count is None and not missing:
                return None
            reason = "uncovered"
            if round_number < self.settings.rounds:
                pairs += await self._pairs(missing, pairs, ("cover", round_number))
        return reason

    async def _paraphrase(self) -> str | None:
        text = await self._ask(("paraphrase",), prompts.paraphrase_prompt(self.text), None)
        if text is None:
            return None
        paraphrase = text.strip()
        if not paraphrase:
            self.failed["empty_reply"] += 1
            return None
        choices = ("yes", "no")
        verdict = await self._read(
            ("paraphrase-check",), prompts.paraphrase_check_prompt(self.text, paraphrase),
            prompts.object_schema("verdict", choices),
            lambda text: prompts.read_choice(text, "verdict", choices))
        if verdict == "no":
            self.dropped["paraphrase_rejected"] += 1
        return paraphrase if verdict == "yes" else None
