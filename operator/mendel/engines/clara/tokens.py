"""Memory tokens in the tokenizer, and documents cut into chunks.

CLaRa gives every chunk the same `l` distinct memory tokens `<MEM0>`..`<MEM{l-1}>`; the
compressor reads the chunk followed by them, and their final hidden states are the chunk's
compressed form. The tokens must be distinct (not one repeated token) so that each slot can
learn a different role. Their ids must be consecutive so that a token id maps to its row of
the trainable memory-embedding parameter by subtraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MemoryTokens", "add_memory_tokens", "chunk_ids", "memory_token_names"]


def memory_token_names(count: int) -> list[str]:
    """The token strings `<MEM0>`..`<MEM{count-1}>`."""
    return [f"<MEM{index}>" for index in range(count)]


@dataclass(frozen=True)
class MemoryTokens:
    """The memory tokens of one tokenizer.

    Attributes:
        names: Token strings, `<MEM0>` first.
        first_id: Id of `<MEM0>`; `<MEMi>` has id first_id + i.
    """

    names: tuple[str, ...]
    first_id: int

    @property
    def count(self) -> int:
        """Memory tokens per chunk."""
        return len(self.names)

    @property
    def ids(self) -> list[int]:
        """Token ids, in slot order."""
        return list(range(self.first_id, self.first_id + self.count))


def add_memory_tokens(tokenizer: Any, names: Sequence[str]) -> MemoryTokens:
    """Add `names` to `tokenizer` (in place) as special tokens that are never split.

    Tokens the tokenizer already has (a tokenizer saved after an earlier call) are reused.
    The caller resizes the model's embeddings to `len(tokenizer)` when that grew.

    Raises:
        ValueError: the tokens did not get consecutive ids.
    """
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(name, special=True, normalized=False) for name in names])
    ids = [int(tokenizer.convert_tokens_to_ids(name)) for name in names]
    first = ids[0]
    if ids != list(range(first, first + len(ids))):
        raise ValueError(f"memory tokens got non-consecutive ids {ids}; use a fresh tokenizer")
    return MemoryTokens(names=tuple(names), first_id=first)


def chunk_ids(ids: Sequence[int], chunk_size: int) -> list[list[int]]:
    """Split a document's token ids into chunks of at most `chunk_size`; nothing is dropped.

    An empty document gives one empty chunk, so that every document has a memory block.

    Raises:
        ValueError: chunk_size is not positive.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not ids:
        return [[]]
    return [list(ids[start : start + chunk_size]) for start in range(0, len(ids), chunk_size)]
