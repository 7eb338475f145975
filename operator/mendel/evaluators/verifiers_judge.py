"""The llmJudge verifier: a grading LLM compares the response with the reference answer.

For answers that no rule can check (names, dates, free-text facts, as in the reference's
web setting), a second LLM reads the question, the reference answer and the response,
explains how the response's final answer compares, and ends with "GRADE: CORRECT" or
"GRADE: INCORRECT". The reward is 1.0 iff the last grade line says CORRECT; the
explanation becomes the verdict's reasoning, which the learner later reads as a critique.
A reply without a grade scores 0 and says so. A failed call (`ChatError`) propagates, so
the engine counts it with its other failed LLM calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mendel.evaluators.verifiers import Verdict, reference_answer
from mendel.llm.chat import ChatBackend, Message, Sampling

__all__ = ["JudgeVerifier", "judge_messages", "parse_grade"]

_SYSTEM = (
    "You grade answers. You get a question, its reference answer and a response to grade. "
    "Decide whether the final answer given in the response means the same as the reference "
    "answer. Equivalent forms count as the same (3/4 and 0.75, 'Paris' and 'Paris, France' "
    "when the question asks for a city). Ignore style, length and how the response reasons; "
    "judge only its final answer. A response with no final answer, or with several "
    "different ones, is incorrect."
)
_REQUEST = """Question:
{question}

Reference answer:
{answer}

Response to grade:
{response}

Explain in a few sentences how the response's final answer compares with the reference \
answer. Then write a last line that is exactly one of:
GRADE: CORRECT
GRADE: INCORRECT"""
_GRADE = re.compile(r"^[\s*#>_`]*GRADE\s*:[\s*_`]*(CORRECT|INCORRECT)\b", re.I | re.M)
_QUOTED_REPLY = 300
"""Characters of an ungraded reply quoted in the verdict's reasoning."""


def judge_messages(question: str, answer: str, response: str) -> list[Message]:
    """The conversation that asks the judge for an explanation and a grade line."""
    request = _REQUEST.format(question=question, answer=answer, response=response)
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": request}]


def parse_grade(reply: str) -> tuple[bool, str] | None:
    """(correct, explanation) from the reply's last grade line, or None if it has none.

    The explanation is the text before that line. Markdown around the line ("**GRADE:**
    CORRECT") and letter case are tolerated.
    """
    matches = list(_GRADE.finditer(reply))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1).upper() == "CORRECT", reply[: last.start()].strip()


class JudgeVerifier:
    """Rewards with a judge LLM's grade.

    Args:
        judge: The grading backend (the caller owns and closes it).
        sampling: How the judge samples.
    """

    def __init__(self, judge: ChatBackend, sampling: Sampling) -> None:
        self.judge = judge
        self.sampling = sampling

    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        """See `RewardVerifier.score`.

        Raises:
            VerifierError: the record has no answer.
            ChatError: the judge's call failed after its retries.
        """
        messages = judge_messages(str(record.get("question", "")), reference_answer(record),
                                  response)
        reply = await self.judge.chat(messages, self.sampling)
        graded = parse_grade(reply.text)
        if graded is None:
            cut = " (the reply was cut at max_tokens)" if reply.truncated else ""
            quoted = reply.text.strip()[:_QUOTED_REPLY]
            return Verdict(
                0.0,
                f"the judge gave no grade line 'GRADE: CORRECT' or 'GRADE: INCORRECT'{cut}; "
                f"its reply began: {quoted!r}",
            )
        correct, explanation = graded
        return Verdict(1.0 if correct else 0.0, explanation or None)
