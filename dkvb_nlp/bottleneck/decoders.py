"""Decoders: pooled values (B, value_dim) -> class logits (B, num_classes).

Each decoder can grow its label set (`add_classes`) without touching what it already knows.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry

DECODERS: Registry[type] = Registry("decoder")


@DECODERS.register("non_parametric")
class NonParametricDecoder(nn.Module):
    """No weights: the averaged values are the logits (value_dim == num_classes)."""

    grows_values = True  # new classes are new value columns

    def __init__(self, value_dim: int, num_classes: int, hidden_dim: int = 128):
        super().__init__()
        if value_dim != num_classes:
            raise ValueError(
                f"decoder='non_parametric' needs value_dim == num_classes, got value_dim={value_dim} "
                f"and num_classes={num_classes}; leave value_dim unset or use decoder='linear'/'mlp'"
            )
        self.num_classes = num_classes

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled

    def add_classes(self, n: int) -> None:
        """Only the count changes; the bottleneck adds the value columns."""
        self.num_classes += n


def grow_linear(layer: nn.Linear, n: int) -> nn.Linear:
    """A copy of `layer` with n more zero-initialised output rows; old rows kept exactly."""
    new = nn.Linear(layer.in_features, layer.out_features + n, bias=layer.bias is not None)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: layer.out_features] = layer.weight
        if layer.bias is not None:
            new.bias.zero_()
            new.bias[: layer.out_features] = layer.bias
    return new


@DECODERS.register("linear")
class LinearDecoder(nn.Module):
    """One linear layer from value_dim to the classes."""

    grows_values = False

    def __init__(self, value_dim: int, num_classes: int, hidden_dim: int = 128):
        super().__init__()
        self.out = nn.Linear(value_dim, num_classes)
        self.num_classes = num_classes

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(pooled)

    def add_classes(self, n: int) -> None:
        """Append n output rows (zero weights: a new class starts at logit 0)."""
        self.out = grow_linear(self.out, n)
        self.num_classes += n


@DECODERS.register("mlp")
class MLPDecoder(nn.Module):
    """value_dim -> hidden_dim (ReLU) -> classes."""

    grows_values = False

    def __init__(self, value_dim: int, num_classes: int, hidden_dim: int = 128):
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"decoder='mlp' needs hidden_dim >= 1, got {hidden_dim}")
        self.hidden = nn.Sequential(nn.Linear(value_dim, hidden_dim), nn.ReLU())
        self.out = nn.Linear(hidden_dim, num_classes)
        self.num_classes = num_classes

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(pooled))

    def add_classes(self, n: int) -> None:
        """Append n output rows (zero weights: a new class starts at logit 0)."""
        self.out = grow_linear(self.out, n)
        self.num_classes += n
