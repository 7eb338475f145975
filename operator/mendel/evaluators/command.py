"""Command tasks: an external program scores the model saved on disk.

This is the escape hatch for benchmarks Mendel does not implement (lm-evaluation-harness,
a container's own harness). The program is trusted like the rest of the spec: it runs with
the worker's environment, in its own session so that the deadline kills everything it
started. It must print a JSON object with a 'score' in [0, 1]; the last JSON object on
stdout counts, so progress lines and logs before it do no harm.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

from mendel.evaluators.base import CommandError, TaskEvaluator
from mendel.llm.protocol import TextGenerator

__all__ = ["CommandEvaluator", "last_json_object"]

_SCAN_CHARS = 1 << 16
"""Only the end of stdout is searched for the result object."""


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in the text (nested ones do not count), or None."""
    decoder = json.JSONDecoder()
    start = max(0, len(text) - _SCAN_CHARS)
    found: dict[str, Any] | None = None
    position = text.find("{", start)
    while position != -1:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found = value
        position = text.find("{", end)
    return found


class CommandEvaluator(TaskEvaluator):
    """Runs `command` with '{model}' and '{task}' filled in and reads its score."""

    type_name = "command"
    needs_model_dir = True

    def evaluate(self, model: TextGenerator, *, model_dir: Path | None = None) -> float:
        """The score the command printed.

        Raises:
            CommandError: no `model_dir`, or the command failed, timed out or printed no
                valid score.
        """
        if model_dir is None:
            raise CommandError(self.task_name, "a command evaluator needs the model saved on disk")
        argv = [
            part.replace("{model}", str(model_dir)).replace("{task}", self.task_name)
            for part in self.spec.command or ()
        ]
        stdout = self._run(argv)
        return self._score(last_json_object(stdout))

    def _run(self, argv: list[str]) -> str:
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        except OSError as error:
            raise CommandError(self.task_name, f"cannot run {argv[0]!r}: {error}") from error
        try:
            out, err = proc.communicate(timeout=self.spec.timeout_seconds)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandError(
                self.task_name, f"the command ran past {self.spec.timeout_seconds} s"
            ) from None
        if proc.returncode != 0:
            tail = err.decode("utf-8", errors="replace")[-1000:].strip()
            raise CommandError(self.task_name, f"the command exited with {proc.returncode}: {tail}")
        return out.decode("utf-8", errors="replace")

    def _score(self, result: dict[str, Any] | None) -> float:
        if result is None:
            raise CommandError(self.task_name, "the command printed no JSON object on stdout")
        score = result.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise CommandError(self.task_name, f"'score' must be a number, not {score!r}")
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise CommandError(self.task_name, f"'score' must be in [0, 1], not {score}")
        return float(score)
