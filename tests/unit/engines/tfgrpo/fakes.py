"""Scripted stand-ins for the agent, the learner and the verifier of the loop tests.

The agent's answers depend only on the question and the call's seed, so an interrupted
and resumed run sees exactly the answers an uninterrupted one does, and every call is
counted by kind (the tests compare those counts).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mendel.llm.chat import ChatError, ChatReply, Sampling, UsageMeter

RECORDS = [
    {"question": "always right 1", "answer": "yes"},
    {"question": "always wrong 1", "answer": "yes"},
    {"question": "mixed 1", "answer": "yes"},
    {"question": "mixed 2", "answer": "yes"},
    {"question": "always right 2", "answer": "yes"},
    {"question": "mixed 3", "answer": "yes"},
]


def kind_of(messages: Sequence[Mapping[str, Any]]) -> str:
    text = str(messages[-1]["content"])
    if "Summarise the attempt" in text:
        return "summary"
    if "Compare the correct attempts" in text:
        return "group"
    if "Produce the final list" in text:
        return "plan"
    if "Without seeing any attempt" in text:
        return "direct"
    return "agent"


def add_reply(content: str) -> str:
    return json.dumps({"reasoning": "r", "operations": [
        {"operation": "ADD", "id": None, "content": content}]})


@dataclass
class FakeChat:
    """A ChatBackend whose replies come from `script(kind, messages, sampling)`."""

    script: Callable[[str, Sequence[Mapping[str, Any]], Sampling], str] | None = None
    name: str = "fake"
    supports_json_schema: bool = False
    usage: UsageMeter = field(default_factory=UsageMeter)
    calls: Counter[str] = field(default_factory=Counter)
    fail: Callable[[str, int], str | None] = lambda kind, number: None
    """Returns a ChatError reason to fail the n-th call of a kind (1-based), or None."""
    crash_after: int | None = None
    """Raise KeyboardInterrupt (a killed process) once this many calls were answered."""

    async def chat(self, messages: Sequence[Mapping[str, Any]], sampling: Sampling, *,
                   json_schema: Mapping[str, Any] | None = None,
                   tools: Sequence[Mapping[str, Any]] | None = None) -> ChatReply:
        kind = kind_of(messages)
        if self.crash_after is not None and sum(self.calls.values()) >= self.crash_after:
            raise KeyboardInterrupt
        self.calls[kind] += 1
        reason = self.fail(kind, self.calls[kind])
        if reason:
            raise ChatError(reason, "scripted failure")
        text = (self.script or default_script)(kind, messages, sampling)
        reply = ChatReply(text, "stop", prompt_tokens=10, completion_tokens=5)
        self.usage.add_reply(reply)
        return reply

    async def aclose(self) -> None:
        return None


def default_script(kind: str, messages: Sequence[Mapping[str, Any]], sampling: Sampling) -> str:
    if kind == "agent":
        question = str(messages[-1]["content"])
        if question.startswith("always right"):
            return "yes"
        if question.startswith("always wrong"):
            return "no"
        return "yes" if (sampling.seed or 0) % 2 else "no"
    if kind == "summary":
        return "The agent answered directly."
    if kind in ("group", "direct"):
        question = str(messages[-1]["content"]).split("Question:\n", 1)[1].split("\n", 1)[0]
        return add_reply(f"When asked {question}, think first.")
    if kind == "plan":
        text = str(messages[-1]["content"])
        proposals = text.split("Edits proposed by this round of practice:\n", 1)[1]
        lines = proposals.split("\n\nProduce the final list", 1)[0].splitlines()
        return json.dumps({"reasoning": "keep all",
                           "operations": [json.loads(line) for line in lines]})
    raise AssertionError(kind)


@dataclass
class Verdict:
    reward: float
    reasoning: str | None = None


class ExactScorer:
    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        return Verdict(1.0 if response.strip() == record["answer"] else 0.0)


@dataclass
class RecordingObserver:
    steps: list[Any] = field(default_factory=list)
    phases: list[tuple[int, str]] = field(default_factory=list)
    evaluations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def on_step(self, report: Any) -> None:
        self.steps.append(report)

    def on_phase_saved(self, step: int, phase: str) -> None:
        self.phases.append((step, phase))

    def on_evaluation(self, label: str, step: int, result: Mapping[str, Any]) -> None:
        self.evaluations.append((label, dict(result)))
