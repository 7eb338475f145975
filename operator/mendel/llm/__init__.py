"""Model backends: what evaluators and engines call to generate text.

Evaluators depend only on the `TextGenerator` protocol and Training-Free GRPO only on
`ChatBackend`, so tests drive both with scripted fakes. The backends are served lazily:
`LocalCausalLM` and `LocalChat` import torch and transformers, and `OpenAIChat` imports
httpx, so importing `mendel.llm` costs nothing on machines without the GPU stack (the
operator imports it without either).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mendel.llm.chat import (
    ChatBackend,
    ChatError,
    ChatReply,
    Message,
    Sampling,
    ToolCall,
    UsageMeter,
)
from mendel.llm.protocol import TextGenerator, cut_at_stop

if TYPE_CHECKING:
    from mendel.llm.local import LocalCausalLM, load_causal_lm
    from mendel.llm.local_chat import LocalChat, load_local_chat
    from mendel.llm.openai_chat import OpenAIChat

__all__ = [
    "ChatBackend",
    "ChatError",
    "ChatReply",
    "LocalCausalLM",
    "LocalChat",
    "Message",
    "OpenAIChat",
    "Sampling",
    "TextGenerator",
    "ToolCall",
    "UsageMeter",
    "cut_at_stop",
    "load_causal_lm",
    "load_local_chat",
]

_LAZY = {
    "LocalCausalLM": "local",
    "load_causal_lm": "local",
    "LocalChat": "local_chat",
    "load_local_chat": "local_chat",
    "OpenAIChat": "openai_chat",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"mendel.llm.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mendel.llm' has no attribute {name!r}")
