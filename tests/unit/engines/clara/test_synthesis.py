"""Stage-I data synthesis against a scripted LLM: the records it writes, the pairs and
paraphrases it drops, the coverage loop, and a journal that a rerun asks nothing again for.

The scripted LLM reads its prompts as a careful model would: a document is sentences
"Subject predicate."; a question "Who predicate?" is answered with the subject; simple
questions cover the first sentence only and each coverage check names one uncovered
sentence, so a document of n sentences is covered at the n-th check.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mendel.engines.clara import (
    NOT_IN_DOCUMENT,
    SynthesisResult,
    SynthesisSettings,
    stage_one_examples,
    synthesize,
)
from mendel.llm.chat import ChatError, ChatReply, Sampling, UsageMeter

THREE = ("Velora repairs the copper lantern. Brisa measures the silver umbrella. "
         "Kestrel wraps the dusty drum.")
OTHER = ("Tamsin waits for the frozen canoe. Odalric argues with the frozen kite. "
         "Bramwick laughs at the hollow saddle.")
ONE = "Fennick collects the rusty locket."

KINDS = {"Write short questions": "simple", "combining two or more facts": "complex",
         "Questions already asked": "cover", "Proposed answer": "judge",
         "Answer from the document": "answer", "Does the rewrite state": "check",
         "Rewrite the document below": "paraphrase"}


def kind_of(prompt: str) -> str:
    return next(kind for marker, kind in KINDS.items() if marker in prompt)


def between(text: str, start: str, end: str = "\n\n") -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def sentences(document: str) -> list[tuple[str, str]]:
    """(subject, predicate) per sentence."""
    pairs = []
    for sentence in filter(None, (part.strip() for part in document.split("."))):
        subject, predicate = sentence.split(" ", 1)
        pairs.append((subject, predicate))
    return pairs


def question_for(predicate: str) -> str:
    return f"Who {predicate}?"


def questions(*items: str) -> str:
    return json.dumps({"questions": list(items)})


@dataclass
class ScriptedLLM:
    """A ChatBackend answering from the prompt; `replies[kind]` overrides one kind, and
    `fail(kind, n)` returns a ChatError reason for the n-th call of a kind."""

    replies: dict[str, Callable[[str], str]] = field(default_factory=dict)
    fail: Callable[[str, int], str | None] = lambda kind, number: None
    truncate: set[str] = field(default_factory=set)
    name: str = "scripted"
    supports_json_schema: bool = True
    usage: UsageMeter = field(default_factory=UsageMeter)
    calls: Counter[str] = field(default_factory=Counter)
    seeds: list[tuple[str, int | None]] = field(default_factory=list)
    schemas: Counter[str] = field(default_factory=Counter)

    async def chat(self, messages: Sequence[Mapping[str, Any]], sampling: Sampling, *,
                   json_schema: Mapping[str, Any] | None = None,
                   tools: Sequence[Mapping[str, Any]] | None = None) -> ChatReply:
        prompt = str(messages[-1]["content"])
        kind = kind_of(prompt)
        self.calls[kind] += 1
        number = self.calls[kind]
        self.seeds.append((kind, sampling.seed))
        self.schemas[kind] += json_schema is not None
        await asyncio.sleep(0)  # let concurrent calls interleave, as over HTTP
        reason = self.fail(kind, number)
        if reason:
            raise ChatError(reason, "scripted failure")
        text = self.replies.get(kind, getattr(self, kind))(prompt)
        reply = ChatReply(text, "length" if kind in self.truncate else "stop")
        self.usage.add_reply(reply)
        return reply

    async def aclose(self) -> None:
        return None

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def simple(self, prompt: str) -> str:
        _, predicate = sentences(between(prompt, "Document:\n"))[0]
        return questions(question_for(predicate))

    def complex(self, prompt: str) -> str:
        return questions("Who does everything the others do?")

    def answer(self, prompt: str) -> str:
        asked = between(prompt, "Question: ")
        for subject, predicate in sentences(between(prompt, "Document:\n")):
            if asked == question_for(predicate):
                return json.dumps({"answer": subject})
        return json.dumps({"answer": NOT_IN_DOCUMENT})

    def judge(self, prompt: str) -> str:
        return json.dumps({"judgment": "correct"})

    def cover(self, prompt: str) -> str:
        listed = between(prompt, "with their answers:\n")
        covered = {line.rsplit(" -> ", 1)[-1] for line in listed.splitlines()}
        missing = [question_for(predicate)
                   for subject, predicate in sentences(between(prompt, "Document:\n"))
                   if subject not in covered]
        return json.dumps({"missing": len(missing), "questions": missing[:1]})

    def paraphrase(self, prompt: str) -> str:
        return ". ".join(reversed(between(prompt, "Document:\n", "\0").split(". ")))

    def check(self, prompt: str) -> str:
        return json.dumps({"verdict": "yes"})


def run(documents: Sequence[str], backend: ScriptedLLM, journal: Path,
        **options: Any) -> SynthesisResult:
    settings = SynthesisSettings(**{"concurrency": 2, "seed": 7, **options})
    return asyncio.run(synthesize(documents, backend, settings, journal))


def test_documents_become_qa_and_paraphrase_records(tmp_path: Path) -> None:
    backend = ScriptedLLM()
    result = run([THREE, OTHER], backend, tmp_path / "journal.jsonl")

    qa, paraphrase = result.records[0], result.records[1]
    assert qa == {"data_type": "qa", "question": [question_for(p) for _, p in sentences(THREE)],
                  "answers": ["Velora", "Brisa", "Kestrel"], "docs": [THREE]}
    assert paraphrase["data_type"] == "paraphrase" and paraphrase["docs"] == [THREE]
    assert paraphrase["answers"][0].startswith("Kestrel wraps")
    assert [r["docs"] for r in result.records] == [[THREE], [THREE], [OTHER], [OTHER]]
    assert len(stage_one_examples(result.records)) == 3 + 1 + 3 + 1
    # Per document: simple, complex, 2 answers + 1 judgment (the multi-hop question is not in
    # the document), 3 coverage checks with 2 answered and judged, a paraphrase and its check.
    assert backend.calls == Counter(simple=2, complex=2, answer=8, judge=6, cover=6,
                                    paraphrase=2, check=2)
    assert result.calls == backend.total == 28
    assert result.dropped == Counter(not_in_document=2)
    assert (result.kept, result.excluded, result.failed) == (2, Counter(), Counter())
    assert backend.schemas["cover"] == 6 and backend.schemas["paraphrase"] == 0
    assert result.metrics()["synthesis/records"] == 4.0


def test_not_in_document_and_incorrect_pairs_are_dropped(tmp_path: Path) -> None:
    wrong = question_for(sentences(THREE)[1][1])
    backend = ScriptedLLM(replies={
        "simple": lambda p: questions(*(question_for(pred) for _, pred in sentences(THREE))),
        "complex": lambda p: questions("Who owns the moon?", "Who sells the lantern?"),
        "judge": lambda p: json.dumps(
            {"judgment": "incorrect" if f"Question: {wrong}\n" in p else "correct"}),
        "cover": lambda p: questions()})
    result = run([THREE], backend, tmp_path / "journal.jsonl", paraphrase=False)

    (qa,) = result.records
    assert qa["answers"] == ["Velora", "Kestrel"] and wrong not in qa["question"]
    assert result.dropped == Counter(not_in_document=2, judged_incorrect=1)
    assert backend.calls["judge"] == 3  # pairs without an answer are never judged


def test_coverage_stops_at_zero_and_excludes_documents_still_uncovered(tmp_path: Path) -> None:
    backend = ScriptedLLM()
    result = run([THREE, ONE], backend, tmp_path / "journal.jsonl", rounds=2,
                 complex_questions=False)

    assert [r["docs"] for r in result.records] == [[ONE], [ONE]]
    assert result.excluded == Counter(uncovered=1)
    assert (result.kept, result.documents) == (1, 2)
    # ONE is covered by its first check; THREE gets 2 checks, and the last one's question is
    # not answered since the document is left out anyway. Neither gets a 3rd check.
    assert backend.calls["cover"] == 1 + 2
    assert backend.calls["answer"] == 1 + 2
    assert backend.calls["paraphrase"] == 1


def test_a_paraphrase_judged_no_is_not_kept(tmp_path: Path) -> None:
    backend = ScriptedLLM(replies={"check": lambda p: "No. It drops the lantern."})
    result = run([THREE], backend, tmp_path / "journal.jsonl")

    assert [r["data_type"] for r in result.records] == ["qa"]
    assert result.dropped["paraphrase_rejected"] == 1 and not result.failed


def test_tolerant_parsing_reads_the_papers_shapes_and_prose(tmp_path: Path) -> None:
    predicates = [pred for _, pred in sentences(THREE)]
    backend = ScriptedLLM(supports_json_schema=False, replies={
        "simple": lambda p: "```json\n" + json.dumps(
            {f"Question{n}": question_for(pred) for n, pred in enumerate(predicates, 1)})
            + "\n```",
        "complex": lambda p: "[]",
        "answer": lambda p: "Answer: " + json.loads(ScriptedLLM().answer(p))["answer"],
        "judge": lambda p: "The answer is correct.",
        "cover": lambda p: '{"Number of Supplementary Questions": 0, "Question1": "Why?",}',
        "check": lambda p: "Yes, every fact is kept."})
    result = run([THREE], backend, tmp_path / "journal.jsonl")

    assert result.records[0]["answers"] == ["Velora", "Brisa", "Kestrel"]
    assert len(result.records) == 2 and not result.failed
    assert sum(backend.schemas.values()) == 0  # a backend without schemas is sent none


def test_seeds_derive_from_run_seed_document_and_phase(tmp_path: Path) -> None:
    first, again, other = ScriptedLLM(), ScriptedLLM(), ScriptedLLM()
    run([THREE, OTHER], first, tmp_path / "a.jsonl")
    run([THREE, OTHER], again, tmp_path / "b.jsonl")
    run([THREE, OTHER], other, tmp_path / "c.jsonl", seed=8)

    assert sorted(first.seeds) == sorted(again.seeds)
    assert len({seed for _, seed in first.seeds}) == len(first.seeds)  # no two calls alike
    assert not {seed for _, seed in first.seeds} & {seed for _, seed in other.seeds}
