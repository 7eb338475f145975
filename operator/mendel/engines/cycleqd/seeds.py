"""Deterministic seeds: every random draw of a run is derived from (run seed, purpose...).

Deriving a fresh generator per generation (and per tensor for replayed randomness) instead
of threading one global RNG through the run means a resumed run needs no saved RNG state
to repeat the uninterrupted one exactly, and a recipe can be replayed in any order.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "generator"]

_SEED_BITS = 63


def derive_seed(*parts: int | str) -> int:
    """Hash an ordered tuple of ints and strings into a non-negative 63-bit seed.

    Python's built-in `hash` is salted per process, so a stable digest is used instead.

    Args:
        *parts: The run seed followed by labels naming the purpose (generation, tensor...).

    Returns:
        A seed that is the same in every process and on every platform.
    """
    text = "\x1f".join(f"{type(part).__name__}:{part}" for part in parts)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << _SEED_BITS) - 1)


def generator(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(*parts)`.

    Draws are made on the CPU and moved to the device afterwards, so replaying a recipe
    gives the same values whatever accelerator materialises it.
    """
    rng = torch.Generator(device="cpu")
    rng.manual_seed(derive_seed(*parts))
    return rng
