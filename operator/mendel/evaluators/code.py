"""Code tasks: HumanEval-format pass@1, each program run in the sandbox.

The model continues each record's prompt (a signature and docstring); the completion is
cut at the first line that starts a new top-level statement, as in the HumanEval paper,
then the prompt, completion, the record's tests and `check(<entry_point>)` form one program.
Decoding is greedy, so pass@1 is the fraction of programs that pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mendel.api.evaluator import Evaluator
from mendel.evaluators.base import Record, SandboxUnavailable, TaskEvaluator
from mendel.evaluators.sandbox import Sandbox, SandboxError, SandboxLimits
from mendel.llm.protocol import TextGenerator, cut_at_stop

__all__ = ["CODE_STOP", "CodeEvaluator", "humaneval_program"]

CODE_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
"""Where a completion ends: the model has left the function it was asked to write."""


def humaneval_program(record: Record, completion: str) -> str:
    """The program that passes iff the completion is correct: prompt, completion, tests."""
    body = cut_at_stop(completion, CODE_STOP)
    return f"{record['prompt']}{body}\n\n{record['test']}\n\ncheck({record['entry_point']})\n"


class CodeEvaluator(TaskEvaluator):
    """pass@1 of greedy completions; programs run `timeoutSeconds` and `memoryMb` at most.

    Args:
        sandbox: Where programs run (default: a `Sandbox` with two workers).
    """

    type_name = "code"
    required_fields = ("task_id", "prompt", "test", "entry_point")

    def __init__(
        self, spec: Evaluator, task_name: str, *, sandbox: Sandbox | None = None, **options: Any
    ) -> None:
        super().__init__(spec, task_name, **options)
        self.sandbox = sandbox or Sandbox()
        self.limits = SandboxLimits(
            timeout_seconds=float(spec.timeout_seconds), memory_mb=spec.memory_mb
        )

    def evaluate(self, model: TextGenerator, *, model_dir: Path | None = None) -> float:
        """Fraction of records whose completed program passes its tests."""
        records = self.records
        prompts = [self._render(str(record["prompt"])) for record in records]
        completions = self._generate(model, prompts, CODE_STOP)
        return self.pass_rate(
            [humaneval_program(r, c) for r, c in zip(records, completions, strict=True)]
        )

    def pass_rate(self, programs: list[str]) -> float:
        """Fraction of programs that run to their end in the sandbox.

        Raises:
            SandboxUnavailable: the sandbox could not start a program.
        """
        try:
            results = self.sandbox.run_many(programs, self.limits)
        except SandboxError as error:
            raise SandboxUnavailable(self.task_name, str(error)) from error
        return sum(result.passed for result in results) / len(programs)
