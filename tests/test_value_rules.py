"""Value rules: order-free counts and ridge readout, the labels trick, and their use by DKVB."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dkvb_nlp.bottleneck import (CountValues, KeyValueBottleneck, RidgeReadout, TaskHead, ValueSGD,
                                 attach_values_rule, back_logits, pooled_keys)

C, K, D = 4, 8, 16


def keyed(num_classes: int = 3, seed: int = 0) -> KeyValueBottleneck:
    torch.manual_seed(seed)
    b = KeyValueBottleneck(D, C, K, num_classes=num_classes, seed=seed)
    b.init_keys([torch.randn(200, D)], epochs=1)
    return b


def token_indices(n: int, t: int = 5, seed: int = 0) -> torch.Tensor:
    """(n, t, C) key indices with a random number of padded (-1) tokens per example."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, K, (n, t, C), generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    idx[torch.arange(t)[None, :] >= lengths[:, None]] = -1
    return idx


def test_counts_equal_a_brute_force_count():
    idx, labels = token_indices(30), torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    counts = CountValues(C, K, 3).partial_fit(idx, labels)
    brute = np.zeros((C * K, 3))
    for b in range(30):
        for t in range(idx.shape[1]):
            if idx[b, t, 0] >= 0:
                for c in range(C):
                    brute[c * K + int(idx[b, t, c]), int(labels[b])] += 1
    np.testing.assert_array_equal(counts.counts.numpy(), brute)
    a = counts.smoothing
    n = brute.reshape(C, K, 3)
    expected = np.log((n + a) / (n.sum(1, keepdims=True) + a * K)).reshape(C * K, 3)
    np.testing.assert_allclose(counts.values().numpy(), expected, rtol=1e-6)


def test_ridge_readout_equals_a_dense_solve():
    g = torch.Generator().manual_seed(0)
    pooled, labels = torch.randn(40, 12, generator=g), torch.randint(0, 3, (40,), generator=g)
    r = RidgeReadout(12, 3, num_features=20, ridge=0.5, seed=3).partial_fit(pooled, labels)
    phi = torch.relu(torch.nn.functional.normalize(pooled, dim=1) @ r.projection).double()
    y = torch.nn.functional.one_hot(labels, 3).double()
    w = torch.linalg.solve(phi.T @ phi + 0.5 * torch.eye(20, dtype=torch.float64), phi.T @ y)
    torch.testing.assert_close(r.weight(), w.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r(pooled), (phi @ w).float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", ["counts", "ridge", "counts+ridge"])
def test_order_free_rules_do_not_depend_on_order_or_batching(rule):
    idx, labels = token_indices(60, seed=2), torch.arange(60) % 6
    models = []
    for order in (torch.arange(60), torch.randperm(60, generator=torch.Generator().manual_seed(5))):
        b = keyed(num_classes=2)
        attach_values_rule(b, rule, ridge_features=32, seed=0)
        # classes arrive in tasks of two (class-incremental), examples in the given order
        for task in (order[labels[order] < 2], order[(labels[order] >= 2) & (labels[order] < 4)],
                     order[labels[order] >= 4]):
            need = int(labels[task].max()) + 1 - b.num_classes
            if need > 0:
                b.add_classes(need)
            half = len(task) // 2
            b.values_rule.partial_fit(idx[task[:half]], labels[task[:half]])
            b.values_rule.partial_fit(idx[task[half:]], labels[task[half:]])
        models.append(b)
    once = keyed(num_classes=6)  # i.i.d.: everything in one call
    attach_values_rule(once, rule, ridge_features=32, seed=0)
    once.values_rule.partial_fit(idx, labels)
    for m in models:
        torch.testing.assert_close(m.value_table, once.value_table, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m(indices=idx), once(indices=idx), rtol=1e-4, atol=1e-4)


def test_order_free_rules_learn_and_task_heads_have_their_own():
    idx, labels = token_indices(40, seed=3), torch.arange(40) % 2
    idx[labels == 0, :, 0] = torch.where(idx[labels == 0, :, 0] >= 0, 0, -1)  # class 0 always fetches key 0
    idx[labels == 1, :, 0] = torch.where(idx[labels == 1, :, 0] >= 0, 1, -1)
    b = keyed(num_classes=2)
    head = TaskHead(b, 2)
    for h in (b, head):
        attach_values_rule(h, "counts+ridge", ridge_features=64)
    b.values_rule.partial_fit(idx, labels)
    assert (b(indices=idx).argmax(1) == labels).float().mean() == 1.0
    assert torch.count_nonzero(head.value_table) == 0 and head.values_rule.readout.gram.abs().sum() == 0
    head.values_rule.partial_fit(idx, 1 - labels)
    assert (back_logits(head, idx).argmax(1) == 1 - labels).float().mean() == 1.0


def test_statistics_survive_a_state_dict_round_trip():
    idx, labels = token_indices(20, seed=4), torch.arange(20) % 3
    b = keyed()
    attach_values_rule(b, "counts+ridge", ridge_features=16)
    b.values_rule.partial_fit(idx[:10], labels[:10])
    state = {k: v.clone() for k, v in b.state_dict().items()}
    assert "values_rule.counts.counts" in state and "values_rule.readout.gram" in state
    again = KeyValueBottleneck(D, C, K, num_classes=3)
    attach_values_rule(again, "counts+ridge", ridge_features=16)
    again.load_state_dict(state)
    for m in (b, again):
        m.values_rule.partial_fit(idx[10:], labels[10:])
    torch.testing.assert_close(again(indices=idx), b(indices=idx))


def test_pooled_keys_are_the_mean_of_the_fetched_keys():
    b = keyed()
    idx = token_indices(6, seed=5)
    got = pooled_keys(b, idx)
    for n in range(6):
        rows = [torch.cat([b.keys[c, int(idx[n, t, c])] for c in range(C)]) for t in range(idx.shape[1])
                if idx[n, t, 0] >= 0]
        torch.testing.assert_close(got[n], torch.stack(rows).mean(0))


@pytest.mark.parametrize("call, message", [
    (lambda: CountValues(C, K, 3, smoothing=-0.1), "smoothing=-0.1 must be a finite number > 0"),
    (lambda: RidgeReadout(8, 3, ridge=-1.0), "ridge=-1.0 must be a finite number > 0"),
    (lambda: RidgeReadout(8, 3, ridge=float("nan")), "ridge=nan must be"),
    (lambda: CountValues(C, K, 3).partial_fit(token_indices(2), torch.tensor([0, 3])), "label 3 outside"),
    (lambda: CountValues(C, K, 3).partial_fit(token_indices(2)[:0], torch.tensor([], dtype=torch.long)),
     "empty batch"),
    (lambda: RidgeReadout(8, 3).partial_fit(torch.zeros(0, 8), torch.tensor([], dtype=torch.long)), "empty batch"),
    (lambda: RidgeReadout(8, 3).partial_fit(torch.zeros(2, 8), torch.tensor([-1, 0])), "label -1 outside"),
    (lambda: attach_values_rule(keyed(), "bayes"), "unknown value rule 'bayes'; accepted: counts, counts+ridge"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert message in str(err.value)


def test_labels_trick_changes_only_the_current_classes_columns():
    b = keyed(num_classes=4)
    with torch.no_grad():
        b.value_table.normal_()
    before = b.value_table.detach().clone()
    idx, labels = token_indices(16, seed=6), torch.tensor([2, 3] * 8)
    ValueSGD(b, lr=1.0, loss_classes=[2, 3]).epoch(idx, labels, batch_size=4)
    after = b.value_table.detach()
    torch.testing.assert_close(after[:, :2], before[:, :2], rtol=0, atol=0)
    assert not torch.equal(after[:, 2:], before[:, 2:])
    # over all seen classes, the old columns are pushed down too
    b2 = keyed(num_classes=4)
    with torch.no_grad():
        b2.value_table.copy_(before)
    ValueSGD(b2, lr=1.0).epoch(idx, labels, batch_size=4)
    assert not torch.equal(b2.value_table[:, :2], before[:, :2])
    with pytest.raises(ValueError, match="outside the loss classes"):
        ValueSGD(b, lr=1.0, loss_classes=[2]).step(idx[:2], labels[:2])


def test_ridge_gram_is_the_lower_triangle_whatever_the_blocks(monkeypatch):
    import dkvb_nlp.bottleneck.ridge_readout as rr

    monkeypatch.setattr(rr, "_BLOCK", 7)  # 20 features: blocks of 7, 7 and 6
    g = torch.Generator().manual_seed(5)
    pooled, labels = torch.randn(30, 12, generator=g), torch.randint(0, 3, (30,), generator=g)
    r = RidgeReadout(12, 3, num_features=20, ridge=0.5, seed=3).partial_fit(pooled, labels)
    phi = torch.relu(torch.nn.functional.normalize(pooled, dim=1) @ r.projection).double()
    torch.testing.assert_close(r.gram, (phi.T @ phi).tril())
    assert torch.count_nonzero(r.gram.triu(1)) == 0
    w = torch.linalg.solve(phi.T @ phi + 0.5 * torch.eye(20, dtype=torch.float64),
                           phi.T @ torch.nn.functional.one_hot(labels, 3).double())
    torch.testing.assert_close(r.weight(), w.float(), rtol=1e-5, atol=1e-6)


def test_values_written_column_by_column_equal_a_full_rewrite():
    # partial_fit rewrites only the columns of the classes it saw (and classes added since the
    # last write): the table must equal the one derived from all the counts at once.
    b = keyed(num_classes=2)
    rule = attach_values_rule(b, "counts", smoothing=0.3, counts_weight=0.5)
    b.values_rule.partial_fit(token_indices(10, seed=1), torch.tensor([0, 1] * 5))
    b.add_classes(3)  # classes 2..4; 4 gets no example
    b.values_rule.partial_fit(token_indices(6, seed=2), torch.tensor([2, 3, 2, 3, 2, 2]))
    b.values_rule.partial_fit(token_indices(4, seed=3), torch.tensor([0, 0, 3, 3]))
    written = b.value_table.detach().clone()
    rule.write_values()  # everything from the statistics
    assert torch.equal(written, b.value_table.detach())
    assert torch.equal(written[:, 4], rule.counts.values()[:, 4])  # the never-fitted class too
