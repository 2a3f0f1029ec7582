"""Value rules: how a bottleneck's trainable back learns from (key indices, labels).

    sgd            gradient steps on the values (ValueSGD; the papers' rule), task after task
    counts         values = naive Bayes log-likelihoods of class-by-key counts (CountValues)
    ridge          zero values + a ridge readout on the pooled keys (RidgeReadout)
    counts+ridge   both: logits = counts values (x counts_weight) + ridge readout

The three last are order-free: they keep sums over examples, so learning tasks in any order,
one example at a time or all at once gives the same model (class-incremental = i.i.d.), and
no example is stored. `OrderFreeValues` holds their statistics as a submodule of the head
(`head.values_rule`), so `state_dict`, checkpoints and `save_pretrained` keep them and
`partial_fit` can go on after loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..registry import Registry
from .ridge_readout import RidgeReadout, pooled_keys
from .value_counts import CountValues


@dataclass(frozen=True)
class ValueRule:
    """What a rule keeps: count statistics, a ridge readout, or neither (gradient steps)."""

    counts: bool
    ridge: bool

    @property
    def order_free(self) -> bool:
        return self.counts or self.ridge


VALUE_RULES: Registry[ValueRule] = Registry("value rule")
for _name, _rule in (("sgd", ValueRule(False, False)), ("counts", ValueRule(True, False)),
                     ("ridge", ValueRule(False, True)), ("counts+ridge", ValueRule(True, True))):
    VALUE_RULES.register(_name)(_rule)
LOSS_CLASSES = ("seen", "task")


class OrderFreeValues(nn.Module):
    """The statistics of an order-free rule for one head (a bottleneck or a TaskHead).

    Args:
        head: the trainable back it writes (non-parametric decoder for counts).
        rule: 'counts', 'ridge' or 'counts+ridge'.
        smoothing: additive smoothing of the counts.
        counts_weight: scale of the count values.
        ridge: lambda of the readout; ridge_features: its size M.
        seed: seeds the readout's projection.
    """

    def __init__(self, head, rule: str, *, smoothing: float = 0.1, counts_weight: float = 1.0,
                 ridge: float = 100.0, ridge_features: int = 4096, seed: int = 0):
        super().__init__()
        spec = VALUE_RULES.get(rule)
        if not spec.order_free:
            raise ValueError(f"value rule {rule!r} is not order-free; accepted: counts, ridge, counts+ridge")
        front = getattr(head, "front", head)
        if spec.counts and head.decoder.grows_values is False:
            raise ValueError(f"value rule {rule!r} needs decoder='non_parametric' (its values are the logits); "
                             "with a 'linear' or 'mlp' decoder use values 'sgd' or 'ridge'")
        self.rule = rule
        self._head = [head]  # not registered: the head owns this module, not the reverse
        n = head.num_classes
        self.counts = CountValues(front.num_codebooks, front.num_keys, n, smoothing, counts_weight) \
            if spec.counts else None
        self.readout = RidgeReadout(front.num_codebooks * front.key_dim, n, ridge_features, ridge, seed) \
            if spec.ridge else None
        self._unwritten: set[int] = set(range(n))  # value columns not derived from the statistics yet

    @property
    def head(self):
        return self._head[0]

    @property
    def front(self):
        return getattr(self.head, "front", self.head)

    @property
    def solved_parameters(self) -> int:
        """Learned numbers beyond the head's value table: the readout's solved weights (M x classes)."""
        return 0 if self.readout is None else self.readout.num_features * self.readout.num_classes

    def add_classes(self, n: int) -> None:
        start = (self.counts if self.counts is not None else self.readout).num_classes
        for part in (self.counts, self.readout):
            if part is not None:
                part.add_classes(n)
        self._unwritten.update(range(start, start + n))

    @torch.no_grad()
    def partial_fit(self, indices: torch.Tensor, labels: torch.Tensor, check: bool = True) -> "OrderFreeValues":
        """Add examples (indices (B, [T,] C), labels (B,)) and refresh the head's values."""
        if check:
            self.front.check_indices(indices)
        labels = torch.as_tensor(labels)
        if self.counts is not None:
            self.counts.partial_fit(indices, labels)
        if self.readout is not None:
            self.readout.partial_fit(pooled_keys(self.front, indices), labels)
        self.write_values(torch.unique(labels))
        return self

    @torch.no_grad()
    def write_values(self, columns: torch.Tensor | None = None) -> None:
        """Copy the values derived from the counts into the head's value table (zeros without counts).

        `columns`: only these classes' columns changed (a class's values read its own counts
        only), plus the columns added since the last write; None: the whole table.
        """
        table = self.head.value_table
        if self.counts is None:  # 'ridge': the values stay zero (the table's columns may be a decoder's inputs)
            table.data.zero_()
            return
        if columns is not None:
            columns = sorted(set(columns.tolist()) | self._unwritten)
        self._unwritten.clear()
        if columns is None or len(columns) == table.shape[1]:
            table.data.copy_(self.counts.values().to(table))
            return
        cols = torch.tensor(columns, dtype=torch.long, device=self.counts.counts.device)
        table.data[:, cols.to(table.device)] = self.counts.values(cols).to(table)

    def readout_features(self, indices: torch.Tensor) -> torch.Tensor | None:
        """The readout's random features phi (B, M) of key indices, or None without a readout.

        They depend only on the frozen keys and the fixed projection, never on what was learned,
        so a caller that scores the same inputs again (an evaluation after every task) can keep
        them and pass them to `extra_logits` / `back_logits` instead of recomputing them.
        """
        if self.readout is None:
            return None
        return self.readout.features(pooled_keys(self.front, indices))

    def extra_logits(self, indices: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor | None:
        """The readout's logits (B, classes), or None without a readout; `features`: phi of
        `indices` from `readout_features`, when the caller kept them."""
        if self.readout is None:
            return None
        if features is None:
            features = self.readout_features(indices)
        return features @ self.readout.weight()


def attach_values_rule(head, rule: str, **options) -> OrderFreeValues | None:
    """Give `head` the statistics of an order-free `rule` (None for 'sgd'); returns them."""
    if not VALUE_RULES.get(rule).order_free:
        head.values_rule = None
        return None
    head.values_rule = OrderFreeValues(head, rule, **options)
    return head.values_rule


def attach_config_rule(head, config, task_id: int = 0) -> OrderFreeValues | None:
    """`attach_values_rule` with a `DKVBConfig`'s rule and options (read by attribute), seeded
    for head `task_id`: how the Hugging Face model and the dkvb strategy give every head its rule."""
    return attach_values_rule(head, config.values, smoothing=config.smoothing, counts_weight=config.counts_weight,
                              ridge=config.ridge, ridge_features=config.ridge_features, seed=config.seed + task_id)


def back_logits(head, indices: torch.Tensor, check: bool = True,
                features: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a trainable back from key indices: decoder(pooled values) [+ its readout].

    `features`: the readout's phi of these indices (`OrderFreeValues.readout_features`), when
    the caller kept them from an earlier call; the logits are the same either way.
    """
    logits = head.decoder(head.pool_values(indices, check=check))
    rule = getattr(head, "values_rule", None)
    if rule is not None and rule.readout is not None:
        logits = logits + rule.extra_logits(indices, features)
    return logits
