"""Out-of-scope scores, metrics and thresholds (dkvb_nlp.open_world) on tiny synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dkvb_nlp.open_world import (
    SCORES,
    auroc,
    choose_threshold,
    energy,
    fit_mahalanobis,
    fpr_at_95_tpr,
    key_distance,
    key_evidence,
    knn,
    knn_bank,
    mahalanobis,
    msp,
    oos_class,
    oos_metrics,
    score,
)


def test_registry_names_every_score_and_lists_them_for_an_unknown_name():
    assert SCORES.names() == ["energy", "key_distance", "key_evidence", "knn", "mahalanobis", "msp", "oos_class"]
    with pytest.raises(ValueError, match="accepted: energy, key_distance, key_evidence, knn, mahalanobis, msp, "
                                         "oos_class"):
        SCORES.get("entropy")
    with pytest.raises(ValueError, match="accepted"):
        score("entropy", logits=np.zeros((2, 2)))


def test_oos_class_is_the_learned_class_probability_minus_the_best_in_scope_one():
    z = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0], [1.0, float("-inf"), 1.0]])
    p = torch.softmax(torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]], dtype=torch.float64), 1).numpy()
    s = oos_class(z, oos_index=2)
    assert s[:2] == pytest.approx([p[0, 2] - p[0, 0], p[1, 2] - p[1, 0]])
    assert s[2] == pytest.approx(0.0)  # a tie with the best in-scope class; the masked class counts 0
    assert (s[1] > 0) and (s[0] < 0)  # > 0 exactly where the out-of-scope class is the most probable
    assert score("oos_class", logits=z, oos_index=2) == pytest.approx(s)
    with pytest.raises(ValueError, match="oos_index=3 must be a column of the 3 logits"):
        oos_class(z, oos_index=3)
    with pytest.raises(ValueError, match="out-of-scope column 1 of the logits is masked"):
        oos_class(z, oos_index=1)
    with pytest.raises(ValueError, match="score 'oos_class' needs oos_index"):
        score("oos_class", logits=z)


# ---------------------------------------------------------------------- synthetic DKVB world
def _world(seed=0):
    """Keys (C, K, dk); in-scope token segments near keys; OOS segments far from every key."""
    g = torch.Generator().manual_seed(seed)
    c, k, dk, t = 4, 16, 3, 5
    keys = torch.randn(c, k, dk, generator=g)

    def near(b):
        pick = torch.randint(0, k, (b, t, c), generator=g)
        seg = keys[torch.arange(c), pick]  # (b, t, c, dk)
        return seg + 0.05 * torch.randn(b, t, c, dk, generator=g)

    def far(b):
        direction = torch.nn.functional.normalize(torch.randn(b, t, c, dk, generator=g), dim=-1)
        return 8.0 * direction + keys.mean(1)[None, None]

    return keys, near(30), far(30)


def test_key_distance_ranks_far_segments_above_segments_near_keys():
    keys, seg_in, seg_out = _world()
    s_in, s_out = key_distance(seg_in, keys), key_distance(seg_out, keys)
    assert s_in.shape == (30,) and s_out.shape == (30,)
    assert auroc(s_in, s_out) > 0.9
    # Blocked computation equals one block, and equals a brute-force distance.
    assert np.allclose(key_distance(seg_in, keys, block_rows=7), s_in, atol=1e-5)  # float32 blocks
    brute = (seg_in[..., None, :] - keys[None, None]).norm(dim=-1).min(-1).values.mean((1, 2))
    assert np.allclose(s_in, brute.numpy(), atol=1e-5)


def test_key_distance_ignores_masked_tokens():
    keys, seg_in, seg_out = _world()
    mixed = seg_in.clone()
    mixed[:, 3:] = seg_out[:, 3:]  # the last two tokens are far, but masked out
    mask = torch.ones(30, 5, dtype=torch.bool)
    mask[:, 3:] = False
    assert np.allclose(key_distance(mixed, keys, mask), key_distance(seg_in[:, :3], keys), atol=1e-6)
    # One vector per example (B, C, dk) works too.
    assert key_distance(seg_in[:, 0], keys).shape == (30,)


def test_key_evidence_counts_unseen_keys_and_log_totals():
    c, k = 2, 3
    counts = torch.zeros(c * k, 2, dtype=torch.float64)
    counts[0, 0] = 3  # codebook 0 key 0
    counts[k + 1, 1] = 1  # codebook 1 key 1
    indices = torch.tensor([
        [[0, 1], [0, 1]],  # every fetched pair has counts
        [[2, 0], [-1, -1]],  # both fetched pairs unseen; second token is padding
    ])
    unseen = key_evidence(indices, counts, kind="unseen")
    assert unseen.tolist() == [0.0, 1.0]
    logc = key_evidence(indices, counts, num_keys=k)
    assert logc[0] == pytest.approx(-(math.log(4) + math.log(2)) / 2)
    assert logc[1] == 0.0
    with pytest.raises(ValueError, match="accepted: log_count, unseen"):
        key_evidence(indices, counts, kind="zero")
    with pytest.raises(ValueError, match="out of range"):
        key_evidence(torch.tensor([[0, 5]]), counts, num_keys=3)
    with pytest.raises(ValueError, match="rows"):
        key_evidence(indices, counts, num_keys=4)


def test_knn_and_mahalanobis_rank_far_features_above_in_scope_ones():
    g = torch.Generator().manual_seed(1)
    centres = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1) * 5
    labels = torch.arange(3).repeat_interleave(40)
    train = centres[labels] + 0.3 * torch.randn(120, 8, generator=g)
    test_in = centres[torch.arange(3).repeat(10)] + 0.3 * torch.randn(30, 8, generator=g)
    # OOS: directions unlike any class centre (orthogonal to all three).
    q, _ = torch.linalg.qr(torch.cat([centres.T, torch.randn(8, 5, generator=g)], dim=1))
    test_out = (q[:, 3:].T[torch.arange(30) % 5] * 5) + 0.3 * torch.randn(30, 8, generator=g)
    bank = knn_bank(train)
    assert auroc(knn(test_in, bank), knn(test_out, bank)) > 0.9
    fit = fit_mahalanobis(train, labels)
    assert auroc(mahalanobis(test_in, fit), mahalanobis(test_out, fit)) > 0.9
    assert np.allclose(mahalanobis(test_in, fit, block_rows=4), mahalanobis(test_in, fit))
    # knn's k-th neighbour distance, by brute force.
    x = torch.nn.functional.normalize(test_in, dim=1)
    brute = (x[:, None] - bank[None]).norm(dim=-1).sort(dim=1).values[:, 9]
    assert np.allclose(knn(test_in, bank, k=10, block_rows=7), brute.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="k=200"):
        knn(test_in, bank, k=200)
    with pytest.raises(ValueError, match="do not match"):
        knn(test_in[:, :4], bank)
    with pytest.raises(ValueError, match="labels"):
        fit_mahalanobis(train, labels[:5])
    with pytest.raises(ValueError, match="MahalanobisFit"):
        mahalanobis(test_in, "fit")


# ---------------------------------------------------------------------- logit scores
def test_msp_and_energy_on_hand_made_logits():
    logits = np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    m = msp(logits)
    assert m[0] == pytest.approx(1 - math.exp(10) / (math.exp(10) + 2))
    assert m[1] == pytest.approx(2 / 3)
    assert m[1] > m[2] > m[0]  # flat logits are the most out of scope
    e = energy(logits)
    assert e[1] == pytest.approx(-math.log(3))
    assert e[0] == pytest.approx(-math.log(math.exp(10) + 2))
    assert energy(logits, temperature=2.0)[1] == pytest.approx(-2 * math.log(3))
    assert np.allclose(score("energy", logits=logits, features=None, temperature=1.0), e)
    with pytest.raises(ValueError, match="temperature"):
        energy(logits, temperature=0)
    with pytest.raises(ValueError, match="NaN"):
        msp(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="empty"):
        msp(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="dimensions"):
        msp(np.zeros(3))
    with pytest.raises(ValueError, match="needs logits"):
        score("msp", features=np.zeros((2, 2)))


# ---------------------------------------------------------------------- metrics
def test_auroc_equals_a_hand_count_of_pairs():
    s_in, s_out = [0.1, 0.4, 0.35], [0.8, 0.4, 0.2]
    # 9 (out, in) pairs: 0.8 beats 3; 0.4 beats 0.1 and 0.35, ties 0.4 (1/2); 0.2 beats 0.1.
    assert auroc(s_in, s_out) == pytest.approx((3 + 2 + 0.5 + 1) / 9)
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5


def test_fpr_at_95_tpr():
    s_in = np.arange(100, dtype=float)  # t accepting 95% of in-scope: 94
    s_out = np.array([10.0, 94.0, 95.0, 200.0])
    assert fpr_at_95_tpr(s_in, s_out) == pytest.approx(0.5)
    assert fpr_at_95_tpr(s_in, [1000.0]) == 0.0


def test_choose_threshold_rules():
    s_in = np.array([0.1, 0.2, 0.3, 0.4])
    s_out = np.array([0.35, 0.8, 0.9])
    # Youden: t = 0.3 accepts 3/4 in-scope and rejects 3/3 OOS (1.75); t = 0.4 gives 1 + 2/3.
    assert choose_threshold(s_in, s_out) == pytest.approx(0.3)
    # Separable: the largest best t (rejecting fewest in-scope texts) is the top in-scope score.
    assert choose_threshold([0.1, 0.2], [0.5, 0.6]) == pytest.approx(0.2)
    assert choose_threshold(np.arange(100.0), rule="tpr") == 94.0
    assert choose_threshold(np.arange(100.0), rule="tpr", tpr=1.0) == 99.0
    with pytest.raises(ValueError, match="accepted: youden, tpr"):
        choose_threshold(s_in, s_out, rule="best")
    with pytest.raises(ValueError, match="scores_out_val"):
        choose_threshold(s_in)
    with pytest.raises(ValueError, match="tpr"):
        choose_threshold(s_in, rule="tpr", tpr=1.5)


def test_oos_metrics_counts_rejected_in_scope_texts_as_wrong():
    s_in = np.array([0.1, 0.2, 0.9, 0.3])
    s_out = np.array([0.8, 0.95, 0.1])
    m = oos_metrics(s_in, s_out, threshold=0.5, correct_in=[True, False, True, True])
    assert m["oos_recall"] == pytest.approx(2 / 3)
    assert m["in_scope_accepted"] == pytest.approx(3 / 4)
    assert m["in_scope_accuracy"] == pytest.approx(2 / 4)  # the right but rejected 0.9 counts wrong
    with pytest.raises(ValueError, match="correct_in"):
        oos_metrics(s_in, s_out, 0.5, correct_in=[True])


@pytest.mark.parametrize("bad,match", [
    (([], [1.0]), "scores_in is empty"),
    (([1.0], []), "scores_out is empty"),
    (([np.nan], [1.0]), "NaN"),
    (([[1.0, 2.0]], [1.0]), "1-d"),
])
def test_metric_input_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        auroc(*bad)
    with pytest.raises(ValueError, match=match):
        fpr_at_95_tpr(*bad)


def test_key_distance_input_errors():
    keys, seg_in, _ = _world()
    with pytest.raises(ValueError, match="do not match"):
        key_distance(seg_in[..., :2], keys)
    with pytest.raises(ValueError, match="mask"):
        key_distance(seg_in, keys, torch.ones(30, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid token"):
        key_distance(seg_in, keys, torch.zeros(30, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty"):
        key_distance(seg_in[:0], keys)
    bad = seg_in.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        key_distance(bad, keys)


def test_the_accuracy_rule_rejects_most_within_the_budget():
    import numpy as np

    from dkvb_nlp.open_world.scores import choose_threshold

    scores_in = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)  # closed-set accuracy 0.8
    scores_out = np.array([0.85, 0.99, 0.97])
    # rejecting the two wrong ones (score > 0.8) keeps accuracy 0.8: the smallest such t is 0.8
    assert choose_threshold(scores_in, scores_out, rule="accuracy", correct_in_val=correct,
                            max_accuracy_drop=0.0) == 0.8
    # a 0.1 budget allows rejecting one right answer more (t = 0.7)
    assert choose_threshold(scores_in, scores_out, rule="accuracy", correct_in_val=correct,
                            max_accuracy_drop=0.1) == 0.7
    with pytest.raises(ValueError, match="needs correct_in_val"):
        choose_threshold(scores_in, scores_out, rule="accuracy")
