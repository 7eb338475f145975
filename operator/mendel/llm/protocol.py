"""The interface every model backend offers to evaluators.

Two operations cover the evaluator types: greedy generation (generation and code tasks)
and the log-likelihood of a continuation given a context (multiple choice). Anything with
these two methods is a backend, so a test fake is a ten-line class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["TextGenerator", "cut_at_stop"]


@runtime_checkable
class TextGenerator(Protocol):
    """A model that evaluators can query; each call is one batch, results in input order."""

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        """Greedy continuations of each prompt, without the prompt.

        Generation of a row ends at end-of-sequence, after `max_new_tokens`, or once its
        new text contains one of `stop`; the text is cut before the first stop string.
        """
        ...

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities (natural log) of each continuation given its context."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest occurrence of any stop string (all of it if none)."""
    end = len(text)
    for marker in stop:
        if not marker:
            continue
        found = text.find(marker)
        if 0 <= found < end:
            end = found
    return text[:end]
