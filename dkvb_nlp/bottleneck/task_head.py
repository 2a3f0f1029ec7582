"""TaskHead: one more value table (and decoder) over a bottleneck's frozen keys.

Task-incremental (multi-head) models share the keys and the key indices of one
`KeyValueBottleneck` and give each task its own values. A TaskHead quacks like the
bottleneck's trainable back (`value_table`, `decoder`, `pool_values`, `add_classes`), so
`ValueSGD` trains it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .decoders import DECODERS
from .module import KeyValueBottleneck
from .value_rules import back_logits


class TaskHead(nn.Module):
    """Values (C*K, dv) and a decoder for one task, reading the keys of `front`."""

    def __init__(self, front: KeyValueBottleneck, num_classes: int, value_dim: int | None = None,
                 seed: int | None = None):
        super().__init__()
        cfg = front.config
        if cfg["decoder"] == "non_parametric":
            value_dim = num_classes
        elif value_dim is None:
            value_dim = front.value_dim
        self._front = [front]  # a list, so the front is not registered (saved) twice
        seed = cfg["seed"] if seed is None else seed
        self.value_table = nn.Parameter(front._new_values(front.num_codebooks * front.num_keys, value_dim, seed))
        self.decoder = DECODERS.get(cfg["decoder"])(value_dim, num_classes, cfg["decoder_hidden"])
        self.values_rule = None  # an order-free value rule's statistics (value_rules), or None

    key_dim = property(lambda self: self.front.key_dim)
    keys = property(lambda self: self.front.keys)

    @property
    def front(self) -> KeyValueBottleneck:
        return self._front[0]

    num_codebooks = property(lambda self: self.front.num_codebooks)
    num_keys = property(lambda self: self.front.num_keys)
    num_classes = property(lambda self: self.decoder.num_classes)
    value_dim = property(lambda self: self.value_table.shape[1])

    @property
    def values(self) -> torch.Tensor:
        """The value table as (C, K, value_dim)."""
        return self.value_table.view(self.num_codebooks, self.num_keys, -1)

    def check_indices(self, indices: torch.Tensor) -> None:
        """Same index rules as the front bottleneck."""
        self.front.check_indices(indices)

    def pool_values(self, indices: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Mean of this head's values over the bags of `indices`: (B, value_dim)."""
        return self.front.pool_values(indices, check=check, table=self.value_table)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Class logits of this task from key indices."""
        return back_logits(self, indices)

    def add_classes(self, n: int) -> "TaskHead":
        """Add n classes without changing existing values (rebuild optimisers afterwards)."""
        if self.decoder.grows_values:
            old = self.value_table.data
            extra = self.front._new_values(old.shape[0], n, old.shape[1]).to(old)
            self.value_table = nn.Parameter(torch.cat([old, extra], dim=1))
        self.decoder.add_classes(n)
        if self.values_rule is not None:
            self.values_rule.add_classes(n)
        return self
