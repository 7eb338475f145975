"""The prompts of Training-Free GRPO, written for Mendel.

They follow the method's phases (seed-algorithms.md §2.1): the agent's practice prompt, a
summary of each rollout, the group's semantic advantage as proposed library edits, and
one consolidation per step. Wording is Mendel's own. Two choices differ on purpose from
the reference code:

* The agent sees the same template with and without a library (the block reads "None"
  when empty), placed in the system message where a deployed agent carries it, so
  before/after scores compare like with like (engines-offline.md §2.2 measured a 135M
  model losing 33 points to the reference's wrapper text alone).
* Replies that edit the library are JSON objects {"reasoning", "operations"} with the
  library's real ids listed, so they can be schema-checked (see parsing.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mendel.engines.tfgrpo.library import Library

__all__ = [
    "agent_messages",
    "consolidation_messages",
    "direct_messages",
    "group_messages",
    "summary_messages",
]

_AGENT_SYSTEM = (
    "You are a careful problem solver. Answer the question; end with the final answer.\n\n"
    "Experiences from earlier practice (apply those that fit):\n{experiences}"
)

_LEARNER_SYSTEM = (
    "You study how an AI agent solved problems and write short, general lessons that help "
    "it next time. Reply in the exact format asked for."
)

_SUMMARY = """A question, the agent's attempt, and how it was graded.

Question:
{question}

Reference answer: {answer}
Grade: {grade}

Attempt:
{attempt}

Summarise the attempt step by step in at most 120 words: what the agent did, which
experience (by id, if any) it relied on, where it went wrong or took a detour, and why the
outcome was {grade_word}."""

_GROUP = """The agent answered the same question {count} times with these experiences in its prompt:
{experiences}

Question:
{question}

Reference answer: {answer}

Summaries of its attempts:
{summaries}

Compare the correct attempts with the wrong ones. What made the difference? Propose at
most {max_operations} edit(s) to the experiences:
- ADD a new experience (id null), UPDATE an existing one (its id), DELETE a harmful one
  (its id), or NONE.
- Each experience is general (no numbers from this question), at most {max_words} words,
  phrased "When <situation>, <what to do>".
Reply with JSON only: {{"reasoning": "...", "operations": [{{"operation": "ADD", "id": null,
"content": "When ..., ..."}}]}}"""

_DIRECT = """Question:
{question}

Reference answer: {answer}

Current experiences:
{experiences}

Without seeing any attempt, write at most {max_operations} general experience(s) that would
help an agent answer questions like this one: at most {max_words} words each, phrased
"When <situation>, <what to do>", no numbers from this question.
Reply with JSON only: {{"reasoning": "...", "operations": [{{"operation": "ADD", "id": null,
"content": "When ..., ..."}}]}}"""

_CONSOLIDATE = """Current experiences ({size} of at most {capacity}):
{experiences}

Edits proposed by this round of practice:
{proposals}

Produce the final list of edits to apply:
- Several UPDATEs of one id become one UPDATE; DELETE wins over UPDATE.
- Similar ADDs become one ADD; an ADD that repeats an existing experience becomes an
  UPDATE of it or is dropped.
- MERGE (with "mergedIds": [two or more ids]) replaces overlapping experiences by one.
- {room}
- Every experience is general, at most {max_words} words.
Reply with JSON only: {{"reasoning": "...", "operations": [{{"operation": "UPDATE", "id":
"G0", "content": "..."}}]}}"""


def agent_messages(question: str, library: Library) -> list[dict[str, Any]]:
    """The agent's prompt for one question; the same template whether or not there is a
    library."""
    experiences = library.render() or "None"
    return [{"role": "system", "content": _AGENT_SYSTEM.format(experiences=experiences)},
            {"role": "user", "content": question}]


def summary_messages(question: str, answer: str, attempt: str,
                     reward: float) -> list[dict[str, Any]]:
    """Ask the learner for a step-by-step summary of one rollout."""
    correct = reward >= 1.0
    grade = "correct" if correct else f"wrong (reward {reward:g})" if reward > 0 else "wrong"
    return _learner(_SUMMARY.format(question=question, answer=answer, attempt=attempt.strip(),
                                    grade=grade, grade_word="right" if correct else "wrong"))


def group_messages(question: str, answer: str, summaries: Sequence[tuple[float, str]],
                   library: Library, *, max_operations: int,
                   max_words: int) -> list[dict[str, Any]]:
    """Ask for the group's semantic advantage as edits to the library."""
    lines = [f"Attempt {index + 1} ({'correct' if reward >= 1.0 else 'wrong'}): {summary}"
             for index, (reward, summary) in enumerate(summaries)]
    return _learner(_GROUP.format(
        count=len(summaries), experiences=library.render() or "None", question=question,
        answer=answer, summaries="\n".join(lines), max_operations=max_operations,
        max_words=max_words))


def direct_messages(question: str, answer: str, library: Library, *, max_operations: int,
                    max_words: int) -> list[dict[str, Any]]:
    """The ablation without rollouts or group comparison: experiences written directly."""
    return _learner(_DIRECT.format(question=question, answer=answer,
                                   experiences=library.render() or "None",
                                   max_operations=max_operations, max_words=max_words))


def consolidation_messages(library: Library, proposals: Sequence[dict[str, Any]], *,
                           capacity: int, max_words: int) -> list[dict[str, Any]]:
    """Ask for one consolidated list of edits for the step."""
    free = capacity - len(library)
    room = (f"There is room for {free} more experience(s); do not add more than that."
            if free > 0 else
            "The library is full: MERGE or DELETE experiences before any ADD.")
    return _learner(_CONSOLIDATE.format(
        size=len(library), capacity=capacity, experiences=library.render() or "None",
        proposals="\n".join(json.dumps(p, ensure_ascii=False) for p in proposals),
        room=room, max_words=max_words))


def _learner(user: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": _LEARNER_SYSTEM}, {"role": "user", "content": user}]
