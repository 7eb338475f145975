"""Tools the ExperienceLibrary agent may call: a Python interpreter in the code sandbox.

The paper's math agent is a ReAct agent with a code interpreter: it writes a program,
reads what the program prints, and goes on reasoning. `PythonTool` offers that through
OpenAI tool calling. Each call runs the program in a fresh sandboxed interpreter (no
network, no inherited credentials, time, memory and file limits, only the standard library,
nothing kept between calls) and returns what it printed, cut to a bounded length. Mistakes
the model makes (arguments that are not JSON, no code, a program that runs too long) come
back as messages the model can read and act on; only a sandbox that cannot run programs at
all raises.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mendel.api.experience import Tools
from mendel.evaluators.sandbox import RunResult, Sandbox, SandboxLimits

__all__ = ["PythonTool"]

_NO_OUTPUT = "(the program printed nothing)"
_GUARD_FRAMES = re.compile(r'^  File "<string>", line \d+, in (?:<module>|_main)\n', re.M)
"""Traceback lines of the sandbox's guard, which runs the program; noise to the model."""


class PythonTool:
    """The "python" function: runs a program and returns its standard output and errors.

    Args:
        timeout_seconds: Time limit per program.
        memory_mb: Address-space limit per program.
        max_output_chars: Longest text returned; longer output keeps its end.
        sandbox: Where programs run (default: a `Sandbox` with two workers).
    """

    name = "python"

    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        memory_mb: int = 1024,
        max_output_chars: int = 4000,
        sandbox: Sandbox | None = None,
    ) -> None:
        if max_output_chars < 200:
            raise ValueError(f"max_output_chars must be at least 200, not {max_output_chars}")
        self.limits = SandboxLimits(timeout_seconds=timeout_seconds, memory_mb=memory_mb)
        self.max_output_chars = max_output_chars
        self.sandbox = sandbox or Sandbox()

    @classmethod
    def from_spec(cls, tools: Tools, *, sandbox: Sandbox | None = None) -> PythonTool:
        """The tool as `spec.tools` configures it (its time limit per program)."""
        return cls(timeout_seconds=float(tools.timeout_seconds), sandbox=sandbox)

    @property
    def definition(self) -> dict[str, Any]:
        """The OpenAI tool definition to send with each chat request."""
        seconds = f"{self.limits.timeout_seconds:g}"
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": (
                    "Run a Python 3 program and get back what it prints (standard output and "
                    "errors). Use print() to see results. Only the standard library is "
                    f"available, there is no network, and the program is stopped after "
                    f"{seconds} seconds. Nothing is kept between calls."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "The complete program."}
                    },
                    "required": ["code"],
                    "additionalProperties": False,
                },
            },
        }

    async def run(self, arguments: str) -> str:
        """Run the program in the call's arguments; the text to send back as the tool result.

        Args:
            arguments: The call's arguments as the model wrote them: JSON {"code": "..."}.

        Raises:
            SandboxError: the sandbox could not run a program at all (not the model's fault).
        """
        try:
            code = _code(arguments)
        except _BadArguments as error:
            return str(error)
        result = await self.sandbox.arun(code, self.limits, capture_stdout=True)
        return self._report(result)

    def _report(self, result: RunResult) -> str:
        errors = _GUARD_FRAMES.sub("", result.stderr_tail).rstrip("\n")
        parts = [result.stdout_tail.rstrip("\n"), errors]
        if result.outcome == "timeout":
            seconds = f"{self.limits.timeout_seconds:g}"
            parts.append(f"[stopped: the program ran past its time limit of {seconds} seconds]")
        elif result.outcome == "failed" and result.returncode != 0 and not errors:
            parts.append(f"[the program ended with status {result.returncode}]")
        output = "\n".join(part for part in parts if part)
        return self._cut(output) if output else _NO_OUTPUT

    def _cut(self, output: str) -> str:
        if len(output) <= self.max_output_chars:
            return output
        note = f"[output truncated: only its last {self.max_output_chars} characters are shown]\n"
        return note + output[-self.max_output_chars :]


class _BadArguments(ValueError):
    """The call's arguments hold no program; the message is for the model."""


def _code(arguments: str) -> str:
    usage = 'call python with a JSON object such as {"code": "print(6 * 7)"}'
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as error:
        message = f"Error: the arguments are not valid JSON ({error}); {usage}."
        raise _BadArguments(message) from None
    code = parsed.get("code") if isinstance(parsed, dict) else None
    if not isinstance(code, str):
        raise _BadArguments(f'Error: the arguments have no string field "code"; {usage}.')
    if not code.strip():
        raise _BadArguments(f"Error: the code is empty; {usage}.")
    return code
