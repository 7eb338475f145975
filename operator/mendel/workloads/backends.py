"""Turning a spec's LLM (`LlmBackend`) into a chat backend, and its sampling settings.

An endpoint becomes an `OpenAIChat` whose API key comes from the environment variable the
operator filled from the referenced Secret (contract.secret_env); the key is never read
from the spec and never logged. A model becomes a `LocalChat` resident in this process;
the same model referenced twice (agent and learner) is loaded once.
"""

from __future__ import annotations

import os
from pathlib import Path

from mendel.api.experience import LlmBackend
from mendel.llm.chat import ChatBackend, Sampling
from mendel.tracking import contract
from mendel.workloads.context import WorkloadError
from mendel.workloads.fetch import fetch_model

__all__ = ["BackendPool", "sampling_of"]


def sampling_of(spec: LlmBackend, *, temperature: float | None = None,
                min_tokens: int = 0) -> Sampling:
    """The spec's sampling, optionally at another temperature or with a larger budget."""
    return Sampling(temperature=spec.temperature if temperature is None else temperature,
                    top_p=spec.top_p, max_tokens=max(spec.max_tokens, min_tokens))


class BackendPool:
    """Opens each distinct backend once and closes them all at the end."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._open: dict[str, ChatBackend] = {}

    @property
    def backends(self) -> list[ChatBackend]:
        return list(self._open.values())

    def get(self, spec: LlmBackend, path: str, *, concurrency: int) -> ChatBackend:
        """The backend for the LlmBackend at spec field `path` (e.g. 'spec.agent')."""
        key = self._identity(spec)
        if key not in self._open:
            self._open[key] = self._make(spec, path, concurrency)
        return self._open[key]

    async def aclose(self) -> None:
        for backend in self._open.values():
            await backend.aclose()
        self._open.clear()

    def usage(self) -> dict[str, int]:
        """Calls and tokens over every backend."""
        total: dict[str, int] = {}
        for backend in self._open.values():
            for key, value in backend.usage.snapshot().items():
                total[key] = total.get(key, 0) + value
        return total

    @staticmethod
    def _identity(spec: LlmBackend) -> str:
        if spec.endpoint is not None:
            return f"endpoint|{spec.endpoint.url}|{spec.endpoint.model}"
        assert spec.model is not None
        return f"model|{spec.model.uri}|{spec.model.revision}"

    def _make(self, spec: LlmBackend, path: str, concurrency: int) -> ChatBackend:
        if spec.endpoint is not None:
            from mendel.llm.openai_chat import OpenAIChat

            endpoint = spec.endpoint
            api_key = None
            if endpoint.api_key is not None:
                variable = contract.secret_env(f"{path}.endpoint.apiKey")
                api_key = os.environ.get(variable)
                if not api_key:
                    raise WorkloadError(
                        f"{path}.endpoint.apiKey: environment variable {variable} is empty; "
                        f"the Secret {endpoint.api_key.name!r} must have the key "
                        f"{endpoint.api_key.key!r}")
            return OpenAIChat(endpoint.url, endpoint.model, api_key=api_key,
                              timeout_seconds=endpoint.timeout_seconds,
                              max_retries=endpoint.max_retries, concurrency=concurrency,
                              name=path.removeprefix("spec."))
        assert spec.model is not None
        import torch

        from mendel.llm.local_chat import load_local_chat

        directory = fetch_model(spec.model, self.models_dir)
        on_gpu = torch.cuda.is_available()
        backend: ChatBackend = load_local_chat(
            directory, dtype="bfloat16" if on_gpu else "float32",
            device="cuda" if on_gpu else "cpu", max_batch=max(1, concurrency))
        return backend
