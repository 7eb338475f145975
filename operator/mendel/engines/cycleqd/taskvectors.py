"""Task vectors (tau_k = theta_k - theta_base) and the bank a recipe is materialised against.

The bank holds the base weights, one task vector per expert and each expert's singular
bases: everything needed to turn a recipe back into weights, computed once per run and
then placed on the resident model's device (`place_bank`), so that materialising a child
moves nothing between host and accelerator, except the base weights when the GPU is too
small to hold them beside the task vectors and still evaluate: those stay in pinned host
memory and are copied over one tensor at a time (`stream_base_from_host`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from mendel.engines.cycleqd.svd import SvdFactors, expert_svd

__all__ = [
    "EVALUATION_RESERVE_FRACTION",
    "StateDict",
    "SvdProvider",
    "TaskVectorBank",
    "build_bank",
    "check_same_architecture",
    "place_bank",
    "stream_base_from_host",
    "task_vector",
]

logger = logging.getLogger(__name__)

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

    @property
    def device(self) -> torch.device:
        """Where deltas are computed: the task vectors' device, which is the model's once
        placed (the base may stay on the host, see `place_bank`)."""
        for tau in self.task_vectors.values():
            for tensor in tau.values():
                return tensor.device
        for tensor in self.base.values():
            return tensor.device
        return torch.device("cpu")

    def to(
        self,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        base_dtype: torch.dtype | None = None,
        base_device: torch.device | str | None = None,
    ) -> TaskVectorBank:
        """This bank on `device`, task vectors and singular vectors stored in `dtype`.

        Args:
            device: Where every tensor goes, the base too unless `base_device` is given.
            dtype: Storage dtype of task vectors and singular vectors; materialisation
                reads them into float32, so this trades memory for their own rounding.
            base_dtype: Store a base tensor in this dtype where that is exact (every value
                survives the round trip), else keep its dtype. None keeps every dtype.
            base_device: Where the base tensors go instead (the host, to stream them).

        Returns:
            A new bank; tensors already on their device in the right dtype are shared.
        """
        home = device if base_device is None else base_device
        return TaskVectorBank(
            base={n: _exact_cast(t.to(home), base_dtype) for n, t in self.base.items()},
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


EVALUATION_RESERVE_FRACTION = 0.2
"""Share of a GPU's memory that placing the bank must leave free for evaluation."""


def stream_base_from_host(
    base_bytes: int,
    free_bytes: int,
    total_bytes: int,
    reserve_fraction: float = EVALUATION_RESERVE_FRACTION,
) -> bool:
    """Whether the base weights should stay in host memory instead of on the GPU.

    Evaluation needs room beside the bank: the Llama-3-8B memory plan leaves it about
    14 GB of an 80 GB GPU (17.5%), 8.6 GB of which a 65,536-token key/value cache takes;
    the default reserve rounds that up to a fifth of the GPU. With the resident model,
    three task vectors and rank-128 bases placed (66.3 GB in bf16), 13.7 GB of 80 GB are
    free and the 16.1 GB bf16 base does not fit: it is streamed, at 0.3 s of PCIe copy per
    child against minutes of evaluation. On a 141 GB GPU it fits with 58.6 GB to spare.

    Args:
        base_bytes: Size of the base tensors in the model's dtype.
        free_bytes: Free GPU memory with everything but the base placed.
        total_bytes: The GPU's memory.
        reserve_fraction: Share of `total_bytes` to keep free for evaluation.

    Returns:
        True if placing the base would leave less than the reserve free.
    """
    return free_bytes - base_bytes < reserve_fraction * total_bytes


def place_bank(
    bank: TaskVectorBank,
    model: nn.Module,
    dtype: torch.dtype | None = None,
    *,
    base_on_host: bool | None = None,
) -> TaskVectorBank:
    """The bank on the model's device, stored as compactly as the model's precision allows.

    For a bfloat16 model the task vectors and singular vectors are kept in bfloat16 (half
    the memory): their rounding, 2^-9 of a delta, is far below the bfloat16 rounding of the
    weight the delta is added to. Otherwise they stay float32. Base tensors take the
    model's dtype wherever that is exact (a bfloat16 checkpoint read as float32), so the
    weights do not change. Materialisation accumulates in float32 and rounds once.

    The base may instead stay on the host, in the same dtype (pinned, for a model on a
    GPU, so that each tensor's copy is asynchronous); `materialize` then copies it to the
    device one tensor at a time and writes the same weights bit for bit.

    Args:
        bank: The bank as built (usually float32 on the CPU).
        model: The resident model; its first parameter gives the device and precision.
        dtype: Storage dtype of task vectors and singular vectors, instead of the default.
        base_on_host: Keep the base in host memory (True) or on the device (False); None
            decides by `stream_base_from_host` for a model on a GPU whose base is not
            there yet (one already placed is counted in the used memory and stays).

    Raises:
        ValueError: If the model has no parameters.
    """
    first = next(iter(model.parameters()), None)
    if first is None:
        raise ValueError("the model has no parameters to place the bank next to")
    device = first.device
    storage = dtype or (torch.bfloat16 if first.dtype == torch.bfloat16 else torch.float32)
    if base_on_host is None and (device.type != "cuda" or _all_on(bank.base, device)):
        base_on_host = False
    if base_on_host is False:
        return bank.to(device, storage, base_dtype=first.dtype)
    placed = bank.to(device, storage, base_dtype=first.dtype, base_device="cpu")
    base_bytes = sum(t.nbytes for t in placed.base.values())
    if base_on_host is None:
        base_on_host = stream_base_from_host(base_bytes, *_gpu_memory(device))
    if not base_on_host:
        return replace(placed, base={n: t.to(device) for n, t in placed.base.items()})
    if device.type == "cuda":
        placed = replace(placed, base={n: t.pin_memory() for n, t in placed.base.items()})
    if any(placed.base[n] is not t for n, t in bank.base.items()):  # not when placed again
        _log_streamed_base(base_bytes, device)
    return placed


def _all_on(tensors: StateDict, device: torch.device) -> bool:
    return all(t.device == device for t in tensors.values())


def _gpu_memory(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of a GPU, counting as free what PyTorch has cached but not
    allocated (placing the task vectors leaves such blocks behind)."""
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + cached, total


def _log_streamed_base(base_bytes: int, device: torch.device) -> None:
    gb = 1e9
    if device.type != "cuda":
        logger.info(
            "base weights (%.1f GB) stay in host memory, copied to %s per tensor",
            base_bytes / gb,
            device,
        )
        return
    free, total = _gpu_memory(device)
    logger.info(
        "base weights (%.1f GB) stay in pinned host memory, streamed to %s per "
        "tensor; %.1f GB of its %.1f GB are free for evaluation",
        base_bytes / gb,
        device,
        free / gb,
        total / gb,
    )


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
