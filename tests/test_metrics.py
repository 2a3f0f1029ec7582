"""Continual-learning metrics against hand computation, edge cases, bad input and properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dkvb_nlp.metrics import (
    SUMMARY_FIELDS,
    accuracy,
    average_incremental_accuracy,
    bwt,
    check_accuracy_matrix,
    final_accuracy,
    forgetting,
    forward_transfer,
    macro_f1,
    summarize,
    unmeasured_rows,
)

# Rows: after training task i; columns: evaluated on task j.
A3 = [
    [0.9, 0.1, 0.2],
    [0.7, 0.8, 0.3],
    [0.6, 0.85, 0.95],
]


def test_hand_computed_3x3():
    # final: mean(0.6, 0.85, 0.95) = 2.4 / 3 = 0.8
    assert final_accuracy(A3) == pytest.approx(0.8)
    # AIA: mean(0.9, mean(0.7, 0.8), mean(0.6, 0.85, 0.95)) = (0.9 + 0.75 + 0.8) / 3 = 0.81666...
    assert average_incremental_accuracy(A3) == pytest.approx(2.45 / 3)
    # BWT: ((0.6 - 0.9) + (0.85 - 0.8)) / 2 = (-0.3 + 0.05) / 2 = -0.125
    assert bwt(A3) == pytest.approx(-0.125)
    # forgetting: task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: max(0.8) - 0.85 = -0.05
    #   (the 0.1 above the diagonal, before task 1 was trained, does not count) -> 0.25 / 2 = 0.125
    assert forgetting(A3) == pytest.approx(0.125)
    # FWT with baseline b: ((A[0][1] - b1) + (A[1][2] - b2)) / 2 = ((0.1 - 0.05) + (0.3 - 0.1)) / 2
    assert forward_transfer(A3, [0.3, 0.05, 0.1]) == pytest.approx(0.125)
    assert summarize(A3) == pytest.approx(
        {"final_accuracy": 0.8, "average_incremental_accuracy": 2.45 / 3, "bwt": -0.125, "forgetting": 0.125}
    )
    assert tuple(summarize(A3)) == SUMMARY_FIELDS


def test_forgetting_uses_best_earlier_row_not_the_diagonal():
    a = [[0.5, 0.0, 0.0], [0.9, 0.6, 0.0], [0.4, 0.6, 0.7]]
    # task 0 peaked after task 1 (0.9), not when trained (0.5): forgetting 0.5, BWT only -0.1
    assert forgetting(a) == pytest.approx((0.5 + 0.0) / 2)
    assert bwt(a) == pytest.approx((-0.1 + 0.0) / 2)


def test_single_task():
    a = [[0.7]]
    assert final_accuracy(a) == pytest.approx(0.7)
    assert average_incremental_accuracy(a) == pytest.approx(0.7)
    assert bwt(a) == 0.0 and forgetting(a) == 0.0
    assert forward_transfer(a, [0.1]) == 0.0
    assert isinstance(summarize(np.array(a))["bwt"], float)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([[0.5, 0.5]], r"square.*\(1, 2\)"),
        ([0.5, 0.5], r"square.*\(2,\)"),
        (np.zeros((0, 0)), "empty"),
        ([[0.5, np.nan], [0.5, 0.5]], r"finite.*\(0, 1\) is nan"),
        ([[0.5, 0.5], [np.inf, 0.5]], r"finite.*\(1, 0\) is inf"),
        ([[85.0, 20.0], [70.0, 90.0]], r"\[0, 1\].*max 90"),
        ([[-0.1]], r"\[0, 1\].*min -0.1"),
        ([[0.5, 0.5], [0.5]], "T x T array of numbers"),
        ([["a"]], "T x T array of numbers"),
    ],
)
def test_bad_matrices_raise(bad, match):
    for fn in (final_accuracy, average_incremental_accuracy, bwt, forgetting, summarize):
        with pytest.raises(ValueError, match=match):
            fn(bad)


def test_forward_transfer_checks_baseline():
    with pytest.raises(ValueError, match=r"one accuracy per task, shape \(3,\); got shape \(2,\)"):
        forward_transfer(A3, [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        forward_transfer(A3, [0.1, np.nan, 0.2])


def test_accuracy_and_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    # class 0: tp 1, fp 1, fn 1 -> 2/4; class 1: tp 2, fp 1, fn 0 -> 4/5; class 2: tp 1, fp 0, fn 1 -> 2/3
    assert macro_f1(preds, labels) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_averages_only_classes_present_in_labels():
    # Class 7 is predicted but absent from this task's labels: its false positive lowers
    # class 3's recall, but class 7 itself adds no zero to the average.
    assert macro_f1([3, 7], [3, 3]) == pytest.approx(2 / 3)
    assert macro_f1([1, 1], [1, 1]) == 1.0
    assert macro_f1([0, 0], [1, 1]) == 0.0


@pytest.mark.parametrize(
    "preds, labels, match",
    [
        ([0, 1], [0], "same length; got 2 and 1"),
        ([], [], "empty"),
        ([[0, 1]], [[0, 1]], r"1-d class ids; got shapes \(1, 2\)"),
    ],
)
def test_prediction_helpers_reject_bad_input(preds, labels, match):
    for fn in (accuracy, macro_f1):
        with pytest.raises(ValueError, match=match):
            fn(preds, labels)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 5), min_size=n, max_size=n),
            st.lists(st.integers(0, 5), min_size=n, max_size=n),
        )
    )
)
def test_macro_f1_matches_sklearn(pair):
    from sklearn.metrics import f1_score

    preds, labels = pair
    expected = f1_score(labels, preds, labels=np.unique(labels), average="macro", zero_division=0)
    assert macro_f1(preds, labels) == pytest.approx(expected)


unit = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False)
matrices = st.integers(1, 8).flatmap(lambda t: arrays(np.float64, (t, t), elements=unit))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda t: st.tuples(
            arrays(np.float64, (t,), elements=unit), arrays(np.float64, (t, t), elements=unit)
        )
    )
)
def test_perfect_retention_means_no_forgetting(args):
    # A[i][j] = d[j] for every i >= j: each task keeps its just-trained accuracy; what sits
    # above the diagonal (tasks not trained yet) is arbitrary and must not matter.
    d, upper = args
    t = len(d)
    a = np.where(np.arange(t)[:, None] >= np.arange(t)[None, :], d[None, :], upper)
    assert bwt(a) == pytest.approx(0.0, abs=1e-12)
    assert forgetting(a) == pytest.approx(0.0, abs=1e-12)
    assert final_accuracy(a) == pytest.approx(d.mean())


@settings(max_examples=200, deadline=None)
@given(matrices)
def test_metric_relations(a):
    s = summarize(a)
    # The max in forgetting includes l = j, so per task forgetting_j >= A[j][j] - A[T-1][j] = -BWT_j.
    assert s["forgetting"] >= -s["bwt"] - 1e-12
    # Differences of accuracies in [0, 1].
    assert -1.0 - 1e-12 <= s["bwt"] <= 1.0 + 1e-12
    assert -1.0 - 1e-12 <= s["forgetting"] <= 1.0 + 1e-12
    for name in ("final_accuracy", "average_incremental_accuracy"):
        assert 0.0 <= s[name] <= 1.0 + 1e-12


@settings(max_examples=100, deadline=None)
@given(matrices)
def test_forgetting_is_non_negative_when_accuracy_only_drops(a):
    # Make every column non-increasing from the diagonal down: nothing is ever regained.
    t = a.shape[0]
    b = a.copy()
    for j in range(t):
        b[j:, j] = np.minimum.accumulate(a[j:, j])
    assert forgetting(b) >= -1e-12
    assert forgetting(b) == pytest.approx(-bwt(b))


# A method evaluated only after the last task (finetune_joint's 'final' schedule).
FINAL_ONLY = [[None, None, None], [np.nan, np.nan, np.nan], [0.6, 0.9, 0.9]]


def test_unmeasured_rows_give_the_final_accuracy_only():
    assert unmeasured_rows(FINAL_ONLY) == [0, 1] and unmeasured_rows(A3) == []
    assert final_accuracy(FINAL_ONLY) == pytest.approx(0.8)
    assert summarize(FINAL_ONLY) == {"final_accuracy": pytest.approx(0.8), "average_incremental_accuracy": None,
                                     "bwt": None, "forgetting": None}
    for fn in (average_incremental_accuracy, bwt, forgetting):
        with pytest.raises(ValueError, match=r"rows \[0, 1\] not evaluated"):
            fn(FINAL_ONLY)
    checked = check_accuracy_matrix(FINAL_ONLY, allow_unmeasured_rows=True)
    assert np.isnan(checked[:2]).all() and checked[2].tolist() == [0.6, 0.9, 0.9]


@pytest.mark.parametrize("bad, match", [
    ([[0.5, np.nan], [0.5, 0.5]], r"\(0, 1\) is nan"),  # a row is measured entirely or not at all
    ([[0.5, 0.5], [np.nan, np.nan]], r"\(1, 0\) is nan"),  # the last row is always measured
    ([[None, None], [0.5, 1.5]], r"\[0, 1\].*max 1.5"),
])
def test_unmeasured_rows_are_whole_rows_before_the_last(bad, match):
    with pytest.raises(ValueError, match=match):
        check_accuracy_matrix(bad, allow_unmeasured_rows=True)
    with pytest.raises(ValueError, match=match):
        summarize(bad)
