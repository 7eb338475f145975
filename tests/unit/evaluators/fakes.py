"""Scripted backends: evaluators see exactly the outputs and scores a test decides."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mendel.api.evaluator import Evaluator


class ScriptedGenerator:
    """Answers `generate` from a prompt -> output table and `loglikelihood` from a function."""

    def __init__(
        self,
        outputs: dict[str, str] | None = None,
        score: Callable[[str, str], float] | None = None,
    ) -> None:
        self.outputs = outputs or {}
        self.score = score or (lambda context, continuation: 0.0)
        self.generate_calls: list[tuple[list[str], int, tuple[str, ...]]] = []
        self.loglikelihood_calls: list[list[tuple[str, str]]] = []

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()):
        self.generate_calls.append((list(prompts), max_new_tokens, tuple(stop)))
        return [self.outputs.get(prompt, "") for prompt in prompts]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]):
        self.loglikelihood_calls.append(list(pairs))
        return [self.score(context, continuation) for context, continuation in pairs]


def spec(**fields) -> Evaluator:
    """An Evaluator spec; a dataset is filled in unless the type is command."""
    if fields.get("type") != "command":
        fields.setdefault("dataset", {"uri": "/data/task.jsonl"})
    return Evaluator.model_validate(fields)
