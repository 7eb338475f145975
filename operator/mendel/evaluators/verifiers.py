"""Rewarding one rollout of ExperienceLibrary: did the agent's response answer the record?

Training-Free GRPO compares a group of rollouts of one question, so every rollout needs a
reward in [0, 1]: 1 for a right answer, 0 for a wrong one. `build_verifier` turns the
spec's `Verifier` into a `RewardVerifier`, whose `score` is a coroutine so that the engine
awaits many at once: `exact` and `regex` are pure string checks; `math`
(`verifiers_math`) compares expressions symbolically; `llmJudge` (`verifiers_judge`) asks a
grading LLM; `command` (`verifiers_command`) runs a program in the code sandbox. The last
three are imported only when asked for, so that the math stack (sympy) is loaded only where
it is used.

Errors::

    VerifierError               base: a rollout could not be scored
    ├── VerifierSpecError       permanent, from build_verifier: the spec cannot be used
    └── RewardCommandError      the command failed, timed out or printed no valid reward

A `ChatError` of the judge propagates as it is: the judge's call failed, not the rollout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mendel.api.experience import Verifier
from mendel.evaluators.sandbox import Sandbox
from mendel.llm.chat import ChatBackend, Sampling

__all__ = [
    "ExactVerifier",
    "RegexVerifier",
    "RewardCommandError",
    "RewardVerifier",
    "Verdict",
    "VerifierError",
    "VerifierSpecError",
    "build_verifier",
    "reference_answer",
]


class VerifierError(Exception):
    """A rollout could not be scored."""


class VerifierSpecError(VerifierError, ValueError):
    """The verifier spec cannot be used (a bad pattern, a missing program or judge)."""


class RewardCommandError(VerifierError):
    """The reward command failed, timed out or printed no valid reward for one rollout."""


@dataclass(frozen=True)
class Verdict:
    """The reward of one rollout.

    Attributes:
        reward: In [0, 1]; 1.0 is a correct answer.
        reasoning: Why, where the verifier can say (a judge's explanation); the engine
            passes it to the learner as a critique of the rollout.
    """

    reward: float
    reasoning: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], not {self.reward}")


@runtime_checkable
class RewardVerifier(Protocol):
    """Rewards responses to records ({"question", "answer", ...}); safe to await many at once."""

    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        """The reward of `response` as an answer to `record`.

        Raises:
            VerifierError: the rollout could not be scored.
            ChatError: (llmJudge) the judge's call failed after its retries.
        """
        ...


def reference_answer(record: Mapping[str, Any]) -> str:
    """The record's answer as text (JSON Lines answers may be numbers).

    Raises:
        VerifierError: the record has no answer.
    """
    answer = record.get("answer")
    if answer is None:
        raise VerifierError("the record has no 'answer' to check the response against")
    return answer if isinstance(answer, str) else str(answer)


class ExactVerifier:
    """1.0 iff the response, trimmed, equals the trimmed answer."""

    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        """See `RewardVerifier.score`."""
        return Verdict(float(response.strip() == reference_answer(record).strip()))


class RegexVerifier:
    """1.0 iff the pattern's first group, at its first match in the response, equals the
    answer (both trimmed).

    Raises:
        VerifierSpecError: the pattern does not compile or has no group.
    """

    def __init__(self, pattern: str) -> None:
        try:
            self.pattern = re.compile(pattern)
        except re.error as error:
            raise VerifierSpecError(
                f"verifier.pattern {pattern!r} is not a valid regular expression: {error}"
            ) from None
        if self.pattern.groups < 1:
            raise VerifierSpecError(
                f"verifier.pattern {pattern!r} has no group; the first group is the answer"
            )

    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        """See `RewardVerifier.score`."""
        answer = reference_answer(record).strip()
        match = self.pattern.search(response)
        found = match.group(1) if match else None
        return Verdict(float(found is not None and found.strip() == answer))


def build_verifier(
    spec: Verifier,
    *,
    judge: ChatBackend | None = None,
    judge_sampling: Sampling | None = None,
    sandbox: Sandbox | None = None,
) -> RewardVerifier:
    """The verifier a spec asks for.

    Args:
        spec: The ExperienceLibrary's `verifier`.
        judge: llmJudge: the backend built from `spec.judge` (the caller owns and closes it).
        judge_sampling: llmJudge: how the judge samples; default: `spec.judge`'s
            temperature, top_p and max_tokens.
        sandbox: command: where the program runs (default: a `Sandbox` with two workers).

    Raises:
        VerifierSpecError: the spec cannot be used: a bad pattern, a command whose program
            is not found, llmJudge without a judge backend.
    """
    if spec.type == "exact":
        return ExactVerifier()
    if spec.type == "regex":
        return RegexVerifier(spec.pattern or "")
    if spec.type == "llmJudge":
        return _judge_verifier(spec, judge, judge_sampling)
    if spec.type == "command":
        from mendel.evaluators.verifiers_command import CommandVerifier

        return CommandVerifier(
            spec.command or [], timeout_seconds=spec.timeout_seconds, sandbox=sandbox
        )
    from mendel.evaluators.verifiers_math import MathVerifier

    return MathVerifier()


def _judge_verifier(
    spec: Verifier, judge: ChatBackend | None, sampling: Sampling | None
) -> RewardVerifier:
    from mendel.evaluators.verifiers_judge import JudgeVerifier

    if judge is None:
        raise VerifierSpecError("verifier type llmJudge needs a judge backend (verifier.judge)")
    if sampling is None and spec.judge is not None:
        settings = spec.judge
        sampling = Sampling(settings.temperature, settings.top_p, settings.max_tokens)
    return JudgeVerifier(judge, sampling or Sampling())
