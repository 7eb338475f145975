"""Task vectors (tau_k = theta_k - theta_base) and the bank a recipe is materialised against.

The bank holds the base weights, one task vector per expert and each expert's singular
bases: everything needed to turn a recipe back into weights, computed once per run and
then placed on the resident model's device (`place_bank`), so that materialising a child
moves nothing between host and accelerator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from mendel.engines.cycleqd.svd import SvdFactors, expert_svd

__all__ = [
    "StateDict",
    "SvdProvider",
    "TaskVectorBank",
    "build_bank",
    "check_same_architecture",
    "place_bank",
    "task_vector",
]

StateDict = Mapping[str, torch.Tensor]
SvdProvider = Callable[[str, StateDict, int | None], dict[str, SvdFactors]]
"""(expert name, task vector, rank) -> SVD factors per matrix; lets a caller add a cache."""


def check_same_architecture(base: StateDict, other: StateDict, label: str) -> None:
    """Refuse a model whose tensors differ from the base model's in name or shape.

    Args:
        base: The base model's state dict.
        other: An expert's state dict.
        label: How to name the expert in the error.

    Raises:
        ValueError: Naming the first missing, extra or mis-shaped tensor.
    """
    missing = sorted(set(base) - set(other))
    if missing:
        raise ValueError(
            f"{label} lacks tensor '{missing[0]}' of the base model "
            f"({len(missing)} missing); experts must share the base architecture"
        )
    extra = sorted(set(other) - set(base))
    if extra:
        raise ValueError(
            f"{label} has tensor '{extra[0]}' that the base model lacks ({len(extra)} extra)"
        )
    for name in sorted(base):
        if base[name].shape != other[name].shape:
            raise ValueError(
                f"{label}: tensor '{name}' has shape {tuple(other[name].shape)}, "
                f"the base model's has {tuple(base[name].shape)}"
            )


def task_vector(
    base: StateDict, expert: StateDict, label: str, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """tau = expert - base over every tensor (norms and embeddings included, as in the paper).

    Differences are taken in `dtype` (float32 by default) so that bf16 checkpoints do not
    lose the small deltas that distinguish an expert from its base.
    """
    check_same_architecture(base, expert, label)
    return {name: expert[name].to(dtype) - base[name].to(dtype) for name in sorted(base)}


@dataclass(frozen=True)
class TaskVectorBank:
    """The fixed inputs of a run: base weights, expert task vectors and their SVD bases.

    Attributes:
        base: Base model tensors by name.
        task_vectors: Expert name -> tensor name -> tau (float32).
        svd: Expert name -> matrix name -> factors of that expert's tau.
    """

    base: StateDict
    task_vectors: Mapping[str, StateDict]
    svd: Mapping[str, Mapping[str, SvdFactors]]

    @property
    def experts(self) -> list[str]:
        """Expert names in insertion order."""
        return list(self.task_vectors)

    def ranks(self, expert: str) -> dict[str, int]:
        """Number of singular directions per matrix of one expert.

        Raises:
            ValueError: If the expert is unknown.
        """
        if expert not in self.svd:
            raise ValueError(f"unknown expert '{expert}'; known: {sorted(self.svd)}")
        return {name: factors.rank for name, factors in self.svd[expert].items()}

    def to(
        self,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        base_dtype: torch.dtype | None = None,
    ) -> TaskVectorBank:
        """This bank on `device`, task vectors and singular vectors stored in `dtype`.

        Args:
            device: Where every tensor goes.
            dtype: Storage dtype of task vectors and singular vectors; materialisation
                reads them into float32, so this trades memory for their own rounding.
            base_dtype: Store a base tensor in this dtype where that is exact (every value
                survives the round trip), else keep its dtype. None keeps every dtype.

        Returns:
            A new bank; tensors already on `device` in the right dtype are shared.
        """
        return TaskVectorBank(
            base={n: _exact_cast(t.to(device), base_dtype) for n, t in self.base.items()},
            task_vectors={
                e: {n: t.to(device, dtype) for n, t in tau.items()}
                for e, tau in self.task_vectors.items()
            },
            svd={
                e: {n: f.to(device, dtype) for n, f in per.items()} for e, per in self.svd.items()
            },
        )


def _exact_cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is None or tensor.dtype == dtype:
        return tensor
    cast = tensor.to(dtype)
    return cast if torch.equal(cast.to(tensor.dtype), tensor) else tensor


def place_bank(
    bank: TaskVectorBank, model: nn.Module, dtype: torch.dtype | None = None
) -> TaskVectorBank:
    """The bank on the model's device, stored as compactly as the model's precision allows.

    For a bfloat16 model the task vectors and singular vectors are kept in bfloat16 (half
    the memory): their rounding, 2^-9 of a delta, is far below the bfloat16 rounding of the
    weight the delta is added to. Otherwise they stay float32. Base tensors take the
    model's dtype wherever that is exact (a bfloat16 checkpoint read as float32), so the
    weights do not change. Materialisation accumulates in float32 and rounds once.

    Args:
        bank: The bank as built (usually float32 on the CPU).
        model: The resident model; its first parameter gives the device and precision.
        dtype: Storage dtype of task vectors and singular vectors, instead of the default.

    Raises:
        ValueError: If the model has no parameters.
    """
    first = next(iter(model.parameters()), None)
    if first is None:
        raise ValueError("the model has no parameters to place the bank next to")
    storage = dtype or (torch.bfloat16 if first.dtype == torch.bfloat16 else torch.float32)
    return bank.to(first.device, storage, base_dtype=first.dtype)


def _direct_svd(_: str, tau: StateDict, rank: int | None) -> dict[str, SvdFactors]:
    return expert_svd(tau, rank)


def build_bank(
    base: StateDict,
    experts: Mapping[str, StateDict],
    *,
    rank: int | None = None,
    svd_provider: SvdProvider | None = None,
) -> TaskVectorBank:
    """Compute every expert's task vector and singular bases.

    Args:
        base: The base model's state dict.
        experts: Expert name -> state dict (same architecture as the base).
        rank: Truncate each matrix's basis to this many directions; None keeps full rank.
        svd_provider: Where SVD factors come from (e.g. an on-disk cache); default computes.

    Returns:
        The bank.

    Raises:
        ValueError: If fewer than two experts are given or an architecture differs.
    """
    if len(experts) < 2:
        raise ValueError(f"CycleQD needs at least two experts, got {len(experts)}")
    provider = svd_provider or _direct_svd
    taus = {name: task_vector(base, sd, f"expert '{name}'") for name, sd in experts.items()}
    bases = {name: provider(name, tau, rank) for name, tau in taus.items()}
    return TaskVectorBank(base=dict(base), task_vectors=taus, svd=bases)
