"""Stage-I training data written by an LLM from bare documents (CLaRa's SCP data synthesis).

For each document the LLM writes simple questions (one or two facts each) and, optionally,
multi-hop questions; answers each from the document alone ("not in the document" drops the
pair); judges each pair (an incorrect one is dropped); then checks coverage: shown the kept
pairs, it lists questions for facts still unasked. Those are answered and judged in turn,
up to `rounds` checks in all; a document whose last check still finds gaps is excluded, as
the paper excludes its uncovered samples. A kept document may also get a paraphrase, kept
only when a second call confirms it states every fact and nothing more.

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
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mendel.engines.tfgrpo.parsing import extract_json
from mendel.engines.tfgrpo.rollouts import seed_for
from mendel.engines.tfgrpo.store import Journal
from mendel.llm.chat import ChatBackend, ChatError, Sampling

__all__ = ["NOT_IN_DOCUMENT", "SynthesisError", "SynthesisResult", "SynthesisSettings",
           "synthesize"]

NOT_IN_DOCUMENT = "not in the document"
"""The answer that says the document does not hold one; its pair is dropped."""
_MAX_TEXT = 400
"""Longest question or answer a schema allows: small models fill unbounded strings."""
_EARLY_STOP_CALLS = 40
"""Calls after which the failure fraction is trusted enough to stop a run early (an
endpoint that is down would otherwise be retried for every remaining document)."""

_SYSTEM = ("You turn one document into study material. Use only what the document says, "
           "never outside knowledge.")
_SIMPLE = (
    "Write short questions about the document. Each asks for one or two facts it states, "
    "makes sense to a reader who has not seen it, and differs from every other question. "
    "Together they should ask about every important fact.")
_COMPLEX = (
    "Write questions that can only be answered by combining two or more facts from "
    "different parts of the document: following one fact to another, comparing, counting "
    "or adding up, or ordering events in time or by cause. No yes/no questions, no two "
    "alike, each clear to a reader who has not seen the document.")
_QUESTIONS_FORMAT = 'Reply with JSON: {{"questions": ["...", ...]}}, at most {limit} questions.'


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
        kinds = [("simple", _SIMPLE)] + ([("complex", _COMPLEX)]
                                         if self.settings.complex_questions else [])
        asked = await asyncio.gather(*(self._questions(phase, task) for phase, task in kinds))
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
        messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]
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

    async def _questions(self, phase: str, task: str) -> list[str]:
        limit = self.settings.max_questions
        prompt = (f"Document:\n{self.text}\n\n{task}\n"
                  f"{_QUESTIONS_FORMAT.format(limit=limit)}")
        reply = await self._ask((phase,), prompt, _questions_schema(limit))
        return self._read_questions(reply) or []

    def _read_questions(self, text: str | None) -> list[str] | None:
        """The questions of a reply: {"questions": [...]}, a bare list, or the paper's
        {"Question1": ..., "Question2": ...}; None (counted) when it has none of these."""
        if text is None:
            return None
        try:
            value = extract_json(text)
        except ValueError:
            self.failed["malformed_json"] += 1
            return None
        if isinstance(value, dict):
            listed = value.get("questions")
            value = listed if isinstance(listed, list) else [
                item for key, item in value.items() if key.lower().startswith("question")]
        if not isinstance(value, list):
            self.failed["wrong_shape"] += 1
            return None
        questions = [" ".join(q.split()) for q in value if isinstance(q, str) and q.strip()]
        return questions[: self.settings.max_questions]

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
        prompt = (f"Document:\n{self.text}\n\nQuestion: {question}\n\nAnswer from the document "
                  "alone, in as few words as possible. If the document does not give the "
                  f'answer, answer exactly "{NOT_IN_DOCUMENT}". '
                  'Reply with JSON: {"answer": "..."}')
        answer = self._read_answer(await self._ask(("answer", *identity), prompt,
                                                   _object_schema("answer", None)))
        if answer is None:
            return None
        if not answer or NOT_IN_DOCUMENT in answer.lower():
            self.dropped["not_in_document" if answer else "empty_answer"] += 1
            return None
        prompt = (f"Document:\n{self.text}\n\nQuestion: {question}\nProposed answer: {answer}\n\n"
                  "Is the proposed answer correct, complete and supported by the document? "
                  'Reply with JSON: {"judgment": "correct"} or {"judgment": "incorrect"}')
        verdict = await self._choose(("judge", *identity), prompt, "judgment",
                                     ["incorrect", "correct"])
        if verdict != "correct":
            if verdict == "incorrect":
                self.dropped["judged_incorrect"] += 1
            return None
        return question, answer

    def _read_answer(self, text: str | None) -> str | None:
        """{"answer": ...}, or a plain-text answer (an 'Answer:' prefix removed)."""
        if text is None:
            return None
        if text.lstrip().startswith(("{", "```")):
            try:
                value = extract_json(text)
            except ValueError:
                self.failed["malformed_json"] += 1
                return None
            if not isinstance(value, dict) or not isinstance(value.get("answer"), str):
                self.failed["wrong_shape"] += 1
                return None
            text = value["answer"]
        return " ".join(re.sub(r"^\s*answer\s*:", "", text, flags=re.I).split())

    async def _choose(self, phase: tuple[Any, ...], prompt: str, key: str,
                      choices: list[str]) -> str | None:
        """A one-word verdict: the JSON value of `key`, or else the first of `choices` in
        the reply's prose (lower case); None when the call failed or named none."""
        text = await self._ask(phase, prompt, _object_schema(key, choices))
        if text is None:
            return None
        try:
            value = extract_json(text)
        except ValueError:
            value = None
        if isinstance(value, dict) and str(value.get(key, "")).strip().lower() in choices:
            return str(value[key]).strip().lower()
        match = re.search(rf"\b({'|'.join(choices)})\b", text, re.I)
        if match is None:
            self.failed["no_verdict"] += 1
            return None
        return match.group(1).lower()

    async def _cover(self, pairs: list[tuple[str, str]]) -> str | None:
        """Extend `pairs` until a check finds no unasked fact; 'uncovered' when the last of
        `rounds` checks still found some (its questions are not answered: the document is
        excluded anyway)."""
        limit = self.settings.max_questions
        for round_number in range(1, self.settings.rounds + 1):
            listed = "\n".join(f"{n}. {q} -> {a}" for n, (q, a) in enumerate(pairs, 1))
            prompt = (f"Document:\n{self.text}\n\nQuestions already asked, with their answers:\n"
                      f"{listed or '(none)'}\n\nWrite a question for each fact of the document "
                      "that none of these asks about (one or two facts per question). If "
                      "every fact is asked about, reply with an empty list.\n"
                      f"{_QUESTIONS_FORMAT.format(limit=limit)}")
            reply = await self._ask(("cover", round_number), prompt, _questions_schema(limit))
            missing = self._read_questions(reply)
            if not self.complete:
                return None
            if missing is None:  # cut short or unreadable: the round is spent
                continue
            if not missing:
                return None
            if round_number < self.settings.rounds:
                pairs += await self._pairs(missing, pairs, ("cover", round_number))
        return "uncovered"

    async def _paraphrase(self) -> str | None:
        prompt = ("Rewrite the document below in your own words. Change the sentence structure "
                  "and order freely, but keep every fact, number and name, add nothing, and "
                  "keep its point of view. Reply with the rewritten text only.\n\n"
                  f"Document:\n{self.text}")
        text = await self._ask(("paraphrase",), prompt, None)
        if text is None:
            return None
        paraphrase = text.strip()
        if not paraphrase:
            self.failed["empty_reply"] += 1
            return None
        prompt = (f"Original:\n{self.text}\n\nRewrite:\n{paraphrase}\n\nDoes the rewrite state "
                  "every fact of the original, and nothing the original does not say? "
                  'Reply with JSON: {"verdict": "yes"} or {"verdict": "no"}')
        verdict = await self._choose(("paraphrase-check",), prompt, "verdict", ["yes", "no"])
        if verdict == "no":
            self.dropped["paraphrase_rejected"] += 1
        return paraphrase if verdict == "yes" else None


def _questions_schema(limit: int) -> dict[str, Any]:
    items = {"type": "string", "minLength": 1, "maxLength": _MAX_TEXT}
    return {"type": "object", "additionalProperties": False, "required": ["questions"],
            "properties": {"questions": {"type": "array", "items": items, "maxItems": limit}}}


def _object_schema(key: str, choices: list[str] | None) -> dict[str, Any]:
    value: dict[str, Any] = ({"enum": choices} if choices
                             else {"type": "string", "maxLength": _MAX_TEXT})
    return {"type": "object", "additionalProperties": False, "required": [key],
            "properties": {key: value}}
