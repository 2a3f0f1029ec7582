"""Where the token axis is pooled: after the bottleneck (default) or before it.

- `mean_after`: every valid token is quantised; fetched values are mean-pooled over tokens and
  codebooks (the NLP paper's best setting).
- `mean_before`: token states are mask-mean-pooled, then quantised once.
- `cls`: the first token's state is quantised once.
A pooling here maps (x, mask) to what the quantiser sees; inputs without a token axis pass.
"""

from __future__ import annotations

import torch

from ..registry import Registry

POOLINGS: Registry = Registry("pooling")


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x (B, T, D) over the valid tokens of mask (B, T)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


@POOLINGS.register("mean_after")
def pool_after(x: torch.Tensor, mask: torch.Tensor | None):
    """Quantise every token; pooling happens on the values."""
    return x, mask


@POOLINGS.register("mean_before")
def pool_before(x: torch.Tensor, mask: torch.Tensor | None):
    """Mask-mean the token states, quantise once."""
    return (masked_mean(x, mask), None) if x.dim() == 3 else (x, mask)


@POOLINGS.register("cls")
def pool_cls(x: torch.Tensor, mask: torch.Tensor | None):
    """Quantise the first token's state only."""
    return (x[:, 0], None) if x.dim() == 3 else (x, mask)
