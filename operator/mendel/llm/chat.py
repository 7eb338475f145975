"""The chat interface every LLM backend of ExperienceLibrary offers: one async call.

Training-Free GRPO talks to an agent, a learner and sometimes a judge. Each is either a
remote OpenAI-compatible endpoint (`OpenAIChat`) or a transformers model resident in the
driver Pod (`LocalChat`); the engine sees only `ChatBackend`, so tests drive it with
scripted fakes and the same loop runs against vLLM, a hosted API or a laptop model.

A backend never raises on a reply it got: a truncated answer comes back with
`finish_reason == "length"` and the caller decides (a library edit treats it as a failed
parse). It raises `ChatError` only once its retries are spent, with a short `reason` that
the engine counts in its metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ChatBackend",
    "ChatError",
    "ChatReply",
    "Message",
    "Sampling",
    "ToolCall",
    "UsageMeter",
]

Message = Mapping[str, Any]
"""One OpenAI chat message: {"role": ..., "content": ...} (plus tool fields)."""


@dataclass(frozen=True)
class Sampling:
    """How one call samples.

    Attributes:
        temperature: 0 is greedy.
        top_p: Nucleus threshold.
        max_tokens: Completion budget.
        seed: Sent to servers that honour it; the same seed and prompt give the same text
            on a deterministic server.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for (OpenAI tool calling)."""

    id: str
    name: str
    arguments: str
    """The arguments as the model wrote them (JSON text, possibly invalid)."""


@dataclass(frozen=True)
class ChatReply:
    """One completion.

    Attributes:
        text: The assistant message's content ('' when it only called tools).
        finish_reason: 'stop', 'length' (ran out of max_tokens), 'tool_calls', ...
        prompt_tokens, completion_tokens: Usage as the server reported it (0 if it did not).
        tool_calls: Calls the model asked for.
    """

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def truncated(self) -> bool:
        """The reply hit max_tokens: its text is cut and must not be parsed as complete."""
        return self.finish_reason == "length"


class ChatError(Exception):
    """A call failed after its retries.

    Attributes:
        reason: One short word for metrics: 'timeout', 'rate_limited', 'server_error',
            'client_error', 'connection', 'bad_response'.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class UsageMeter:
    """What a backend spent: calls, tokens, retries and failures by reason."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def add_reply(self, reply: ChatReply) -> None:
        """Count one successful call."""
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens

    def snapshot(self) -> dict[str, int]:
        """A flat copy for metrics, e.g. {'calls': 3, 'failures/timeout': 1}."""
        out = {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
               "completion_tokens": self.completion_tokens, "retries": self.retries}
        out.update({f"failures/{reason}": count for reason, count in self.failures.items()})
        return out


@runtime_checkable
class ChatBackend(Protocol):
    """An LLM that answers chat messages; safe to call from many tasks at once.

    Attributes:
        name: Identifies the backend in logs and metrics (never a URL with credentials).
        supports_json_schema: The backend enforces `json_schema` (grammar-constrained
            decoding); when False the argument is ignored and callers parse tolerantly.
        usage: Running totals.
    """

    name: str
    supports_json_schema: bool
    usage: UsageMeter

    async def chat(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        *,
        json_schema: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ChatReply:
        """One completion of the conversation.

        Args:
            messages: The conversation so far.
            sampling: Temperature, budget and seed.
            json_schema: A JSON schema the reply must follow, where supported.
            tools: OpenAI tool (function) definitions the model may call.

        Raises:
            ChatError: the call failed after the backend's retries.
        """
        ...

    async def aclose(self) -> None:
        """Release connections or the model; the backend is unusable afterwards."""
        ...
