"""The math verifier: the response's final answer equals the record's, symbolically.

As in the Training-Free GRPO reference, HuggingFace Math-Verify does the work: the gold
answer is wrapped as "\\boxed{answer}" and parsed as LaTeX; the response is parsed as a
plain expression or LaTeX (its boxed answer, "the answer is ..." or its last number), and
the two are compared numerically and symbolically. Anything that goes wrong scores 0.

Why it runs on the event loop's thread, synchronously. Math-Verify bounds each parse and
each comparison with SIGALRM, which Python delivers only to the main thread; in any other
thread its timeouts raise instead of guarding, so a thread pool (asyncio.to_thread) would
either fail or, with timeouts switched off, let a pathological answer such as
"9^{9^{9^{9}}}" hang its thread forever. Called synchronously inside `score`, between two
awaits, one check runs at a time however many rollouts are scored at once, so the alarms
never interleave. A check costs about a millisecond; a pathological one blocks the loop
for at most a few `TIMEOUT_SECONDS` (one per parse and per comparison) before it scores 0,
far below any LLM request's time limit (replies meanwhile wait in socket buffers). Off the
main thread `score` refuses with a VerifierError rather than run unguarded. The alarm
replaces any real-time interval timer the process had armed (pytest-timeout's, for one),
so that timer is saved before and armed again after.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException

from mendel.evaluators.verifiers import Verdict, VerifierError, reference_answer

__all__ = ["TIMEOUT_SECONDS", "MathVerifier", "answers_match"]

TIMEOUT_SECONDS = 2
"""Limit on each parse and each comparison (whole seconds: SIGALRM's resolution)."""

_GOLD = (LatexExtractionConfig(),)
_PREDICTION = (ExprExtractionConfig(), LatexExtractionConfig())
_T = TypeVar("_T")


def answers_match(answer: str, response: str) -> bool:
    """Whether the response's final answer equals `answer`; False on any failure.

    Must run on the main thread (see the module's docstring).
    """
    try:
        gold = parse(
            "\\boxed{" + answer + "}", extraction_config=_GOLD, parsing_timeout=TIMEOUT_SECONDS
        )
        found = parse(response, extraction_config=_PREDICTION, parsing_timeout=TIMEOUT_SECONDS)
        return bool(verify(gold, found, timeout_seconds=TIMEOUT_SECONDS))
    except (Exception, TimeoutException):  # TimeoutException is a BaseException
        return False


class MathVerifier:
    """1.0 iff Math-Verify finds the response's final answer equal to the record's."""

    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        """See `RewardVerifier.score`.

        Raises:
            VerifierError: the record has no answer, or this is not the main thread.
        """
        answer = reference_answer(record)
        if threading.current_thread() is not threading.main_thread():
            raise VerifierError(
                "the math verifier runs only on the main thread: Math-Verify's time limits "
                "use SIGALRM; run the engine's event loop there (asyncio.run)"
            )
        return Verdict(float(_keeping_interval_timer(lambda: answers_match(answer, response))))


def _keeping_interval_timer(call: Callable[[], _T]) -> _T:
    # Math-Verify arms alarm(n) and clears it with alarm(0), which also cancels a timer
    # someone else armed; put that timer back, less the time spent here.
    remaining, interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    try:
        return call()
    finally:
        if remaining > 0:
            left = remaining - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), interval)
