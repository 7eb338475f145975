"""The command verifier: a program of the user's rewards each rollout, in the code sandbox.

The escape hatch for rewards Mendel does not implement (unit tests of generated code, a
domain checker). The program reads one JSON object on standard input,
{"question", "answer", "response", "record"} (record: the whole dataset record), and prints
{"reward": x} with x in [0, 1], optionally with a "reasoning" string; the last JSON object
on stdout counts, so logs before it do no harm. The program sees the agent's response,
which is untrusted text, so it runs in the sandbox: no network, no inherited credentials,
a fresh working directory, `verifier.timeoutSeconds` and the sandbox's default memory and
file limits. Its path and any file it is given must be absolute, and readable by the
sandbox's user; its PATH is /usr/bin:/bin.

A program that fails, runs past its time or prints no valid reward raises
`RewardCommandError`; a program that cannot be found is refused when the verifier is built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mendel.evaluators.command import last_json_object
from mendel.evaluators.sandbox import Sandbox, SandboxError, SandboxLimits, find_program
from mendel.evaluators.verifiers import (
    RewardCommandError,
    Verdict,
    VerifierSpecError,
    reference_answer,
)

__all__ = ["CommandVerifier", "command_input"]


def command_input(record: Mapping[str, Any], response: str) -> bytes:
    """The JSON object the program reads on standard input."""
    payload = {
        "question": record.get("question"),
        "answer": reference_answer(record),
        "response": response,
        "record": dict(record),
    }
    return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")


class CommandVerifier:
    """Rewards with the value a sandboxed program prints.

    Args:
        argv: The program and its arguments, as in `verifier.command`.
        timeout_seconds: Time limit per rollout scored.
        sandbox: Where the program runs (default: a `Sandbox` with two workers).
        memory_mb: Address-space limit of the program.

    Raises:
        VerifierSpecError: argv is empty or its program is not found.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout_seconds: float,
        sandbox: Sandbox | None = None,
        memory_mb: int = 1024,
    ) -> None:
        if not argv or find_program(argv[0]) is None:
            program = argv[0] if argv else ""
            raise VerifierSpecError(
                f"verifier.command: program {program!r} not found (the sandbox's PATH is "
                "/usr/bin:/bin; give an absolute path otherwise)"
            )
        self.argv = list(argv)
        self.sandbox = sandbox or Sandbox()
        self.limits = SandboxLimits(timeout_seconds=timeout_seconds, memory_mb=memory_mb)

    async def score(self, record: Mapping[str, Any], response: str) -> Verdict:
        """See `RewardVerifier.score`.

        Raises:
            RewardCommandError: the program could not start, failed, ran past its time or
                printed no reward in [0, 1].
            VerifierError: the record has no answer.
        """
        stdin = command_input(record, response)
        try:
            result = await self.sandbox.arun_command(self.argv, self.limits, stdin=stdin)
        except SandboxError as error:
            raise RewardCommandError(f"the reward command could not start: {error}") from error
        if result.outcome == "timeout":
            raise RewardCommandError(
                f"the reward command ran past its {self.limits.timeout_seconds:g} s"
            )
        if not result.passed:
            tail = result.stderr_tail.strip()[-500:]
            raise RewardCommandError(f"the reward command exited with {result.returncode}: {tail}")
        return _verdict(last_json_object(result.stdout_tail))


def _verdict(printed: dict[str, Any] | None) -> Verdict:
    if printed is None:
        raise RewardCommandError("the reward command printed no JSON object on stdout")
    reward = printed.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, int | float):
        raise RewardCommandError(f"'reward' must be a number, not {reward!r}")
    if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
        raise RewardCommandError(f"'reward' must be in [0, 1], not {reward}")
    reasoning = printed.get("reasoning")
    return Verdict(float(reward), reasoning if isinstance(reasoning, str) else None)
