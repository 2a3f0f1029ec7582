"""Splitters: cut a feature vector (N, D) into C heads (N, C, key_dim), one per codebook."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry

SPLITTERS: Registry[type] = Registry("split")


def divisors(n: int) -> list[int]:
    """All divisors of n, ascending (used in error messages)."""
    return [d for d in range(1, n + 1) if n % d == 0]


@SPLITTERS.register("segment")
class SegmentSplitter(nn.Module):
    """Hidden-dimension segmentation: D is cut into C contiguous chunks of D // C."""

    def __init__(self, dim: int, num_codebooks: int, key_dim: int | None = None, seed: int = 0):
        super().__init__()
        if dim % num_codebooks:
            raise ValueError(
                f"num_codebooks={num_codebooks} does not divide hidden size {dim}; "
                f"use one of {', '.join(map(str, divisors(dim)))}"
            )
        derived = dim // num_codebooks
        if key_dim is not None and key_dim != derived:
            raise ValueError(
                f"key_dim={key_dim} disagrees with split='segment' (hidden size {dim} / "
                f"{num_codebooks} codebooks = {derived}); leave key_dim unset or use "
                f"split='random_projection'"
            )
        self.dim, self.num_codebooks, self.key_dim = dim, num_codebooks, derived

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.num_codebooks, self.key_dim)


@SPLITTERS.register("random_projection")
class RandomProjectionSplitter(nn.Module):
    """C fixed, seeded Gaussian matrices D -> key_dim (stored as a buffer, never trained)."""

    def __init__(self, dim: int, num_codebooks: int, key_dim: int | None = None, seed: int = 0):
        super().__init__()
        if key_dim is None or key_dim < 1:
            raise ValueError(f"split='random_projection' needs key_dim >= 1, got {key_dim!r}")
        self.dim, self.num_codebooks, self.key_dim = dim, num_codebooks, key_dim
        gen = torch.Generator().manual_seed(seed)
        # Scaled so a head has the same typical norm as its input, whatever D is.
        proj = torch.randn(num_codebooks, dim, key_dim, generator=gen) / dim**0.5
        self.register_buffer("projection", proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nd,cdk->nck", x.to(self.projection.dtype), self.projection)
