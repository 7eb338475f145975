"""Singular value decomposition of expert task vectors, and the terms built from it.

CycleQD's mutation pushes a child along the singular directions of the quality task's
expert task vector: `U diag(w * S) V^T`. Matrices (2-D tensors whose name has no "norm")
get a basis; norms and 1-D tensors are left to the plain linear treatment, as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = [
    "SvdFactors",
    "add_direction_term",
    "direction_term",
    "expert_svd",
    "is_svd_target",
    "scaled_left",
    "svd_factors",
]


@dataclass(frozen=True)
class SvdFactors:
    """The (possibly truncated) thin SVD of one task-vector matrix: tau ~ U diag(S) Vh."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor

    @property
    def rank(self) -> int:
        """Number of singular directions kept."""
        return int(self.s.numel())

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SvdFactors:
        """The factors on `device`, singular vectors stored in `dtype` (the singular
        values, one per direction, stay float32)."""
        return SvdFactors(
            self.u.to(device, dtype), self.s.to(device, torch.float32), self.vh.to(device, dtype)
        )


def is_svd_target(name: str, tensor: torch.Tensor) -> bool:
    """Whether a tensor gets a singular basis (a 2-D matrix whose name has no "norm")."""
    return tensor.ndim == 2 and "norm" not in name.lower()


def svd_factors(matrix: torch.Tensor, rank: int | None = None,
                device: torch.device | str | None = None) -> SvdFactors:
    """Thin SVD of a matrix in float32, optionally truncated to the top `rank` directions.

    Args:
        matrix: A 2-D task-vector tensor.
        rank: Keep only this many leading directions; None keeps all (the paper's choice).
        device: Where to compute (a GPU: an 8B expert's matrices take minutes there and
            hours on the CPU); the factors come back to the matrix's device.

    Returns:
        The factors, contiguous, in float32 on the matrix's device.

    Raises:
        ValueError: If the tensor is not 2-D or the rank is below 1.
    """
    if matrix.ndim != 2:
        raise ValueError(f"SVD needs a 2-D tensor, got shape {tuple(matrix.shape)}")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    work = matrix.to(device or matrix.device, torch.float32)
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    if rank is not None and rank < s.numel():
        u, s, vh = u[:, :rank], s[:rank], vh[:rank, :]
    home = matrix.device
    return SvdFactors(u.to(home).contiguous(), s.to(home).contiguous(),
                      vh.to(home).contiguous())


def expert_svd(task_vector: Mapping[str, torch.Tensor], rank: int | None) -> dict[str, SvdFactors]:
    """Factors for every SVD target of one expert's task vector, in name order, computed on
    the GPU when there is one (then cached by `SvdCache`, so computed once per expert)."""
    device = "cuda" if torch.cuda.is_available() else None
    return {
        name: svd_factors(tensor, rank, device)
        for name, tensor in sorted(task_vector.items())
        if is_svd_target(name, tensor)
    }


def direction_term(factors: SvdFactors, weights: torch.Tensor) -> torch.Tensor:
    """`U diag(weights * S) V^T`: a weighted sum of the rank-1 singular directions.

    Args:
        factors: The basis of one matrix.
        weights: One weight per kept direction.

    Returns:
        A dense float32 matrix with the task vector's shape (computed in float32 whatever
        dtype the factors are stored in).

    Raises:
        ValueError: If the number of weights differs from the rank.
    """
    return scaled_left(factors, weights) @ factors.vh.to(torch.float32)


def add_direction_term(out: torch.Tensor, factors: SvdFactors, weights: torch.Tensor) -> None:
    """`out += U diag(weights * S) V^T` in one fused matrix product, with no temporary of
    the matrix's size (the hot path of materialisation); `out` is float32."""
    out.addmm_(scaled_left(factors, weights), factors.vh.to(out.dtype))


def scaled_left(factors: SvdFactors, weights: torch.Tensor) -> torch.Tensor:
    """`U diag(weights * S)` in float32: the small left factor of a direction term.

    Raises:
        ValueError: If the number of weights differs from the rank.
    """
    if weights.shape != factors.s.shape:
        raise ValueError(
            f"expected {factors.rank} direction weights, got shape {tuple(weights.shape)}"
        )
    scaled = weights.to(device=factors.s.device, dtype=torch.float32) * factors.s
    return factors.u.to(torch.float32) * scaled
