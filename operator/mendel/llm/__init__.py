"""Model backends: what evaluators call to generate text and score continuations.

Evaluators depend only on the `TextGenerator` protocol, so tests drive them with scripted
fakes and the engine hands them a resident transformers model (`LocalCausalLM`). The local
backend imports torch and transformers, so it is served lazily: importing `mendel.llm`
costs nothing on machines without the GPU stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mendel.llm.protocol import TextGenerator, cut_at_stop

if TYPE_CHECKING:
    from mendel.llm.local import LocalCausalLM, load_causal_lm

__all__ = ["LocalCausalLM", "TextGenerator", "cut_at_stop", "load_causal_lm"]


def __getattr__(name: str) -> Any:
    if name in ("LocalCausalLM", "load_causal_lm"):
        from mendel.llm import local

        return getattr(local, name)
    raise AttributeError(f"module 'mendel.llm' has no attribute {name!r}")
