"""Packed checkpoints of order-free rules: exact round trip, smaller files, the value table rebuilt."""

from __future__ import annotations

import pytest
import torch

from dkvb_nlp.bottleneck import KeyValueBottleneck, TaskHead, attach_values_rule
from dkvb_nlp.bottleneck.packed_state import pack_state, rebuild_values, unpack_state

C, K, D = 4, 16, 16


def fitted(rule: str, seed: int = 0):
    torch.manual_seed(seed)
    b = KeyValueBottleneck(D, C, K, num_classes=3, seed=seed)
    b.init_keys([torch.randn(200, D)], epochs=1)
    head = TaskHead(b, 2)
    for h in (b, head):
        attach_values_rule(h, rule, ridge_features=40)
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randint(0, K, (25, 6, C), generator=g)
    b.values_rule.partial_fit(idx, torch.randint(0, 3, (25,), generator=g))
    head.values_rule.partial_fit(idx, torch.randint(0, 2, (25,), generator=g))
    return b, head, idx


def flat(b, head):
    return {**{f"front.{k}": v for k, v in b.state_dict().items()},
            **{f"head1.{k}": v for k, v in head.state_dict().items()}}


@pytest.mark.parametrize("rule", ["counts", "ridge", "counts+ridge"])
def test_pack_unpack_restores_every_tensor_exactly(rule):
    b, head, idx = fitted(rule)
    state = flat(b, head)
    packed = pack_state(state)
    assert "front.value_table" not in packed and "head1.value_table" not in packed
    fresh_b, fresh_head, _ = fitted(rule, seed=0)
    for m in (fresh_b, fresh_head):  # a receiver whose statistics differ
        m.values_rule.partial_fit(idx[:3], torch.zeros(3, dtype=torch.long))
    restored = unpack_state(packed, flat(fresh_b, fresh_head))
    fresh_b.load_state_dict({k[6:]: v for k, v in restored.items() if k.startswith("front.")})
    fresh_head.load_state_dict({k[6:]: v for k, v in restored.items() if k.startswith("head1.")})
    rebuild_values(fresh_b, fresh_head)
    for name, tensor in flat(fresh_b, fresh_head).items():
        assert torch.equal(tensor, state[name]), name


def test_packing_shrinks_sparse_counts_and_the_gram():
    b, head, _ = fitted("counts+ridge")
    size = lambda s: sum(t.numel() * t.element_size() for t in s.values())
    state = flat(b, head)
    assert size(pack_state(state)) < 0.7 * size(state)


def test_a_state_without_rules_is_unchanged():
    b = KeyValueBottleneck(D, C, K, num_classes=3)
    state = b.state_dict()
    packed = pack_state(state)
    assert packed.keys() == state.keys()
    assert unpack_state(packed, state).keys() == state.keys()
