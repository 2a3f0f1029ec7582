"""Report plots people read: one style per method, blank cells for unseen tasks, task_type_il
seeds averaged per dataset."""

import csv
import io

import numpy as np
import pytest

from dkvb_nlp.report import aggregate, make_results, make_run
from dkvb_nlp.report.matrix_csv import accuracy_csv_texts
from dkvb_nlp.report.plots import (
    KNOWN_METHODS,
    curves_figure,
    heatmap_figure,
    heatmap_title,
    method_styles,
    plot_pngs,
)

GLUE = ["cola", "sst2", "mrpc"]


def pairs(styles):
    return [(s.colour, s.marker) for s in styles.values()]


@pytest.mark.parametrize("n", [12, 24, 200])
def test_colour_marker_pairs_are_unique(n):
    styles = method_styles(f"method{k}" for k in range(n))
    assert len(styles) == n
    unique = len(set(pairs(styles)))
    if n <= 156:
        assert unique == n
    assert len({tuple(s) for s in styles.values()}) == n  # linestyle separates the rest


def test_known_methods_all_have_different_colours_and_pairs():
    styles = method_styles(KNOWN_METHODS)
    assert len({s.colour for s in styles.values()}) == len(KNOWN_METHODS)
    assert styles["dkvb"].colour != styles["joint"].colour
    # 24 methods: the 13 known ones and 11 others, all pairs distinct.
    mixed = method_styles([*KNOWN_METHODS, *(f"x{k}" for k in range(11))])
    assert len(set(pairs(mixed))) == 24


def test_a_method_keeps_its_style_across_reports():
    a = method_styles(["dkvb", "ewc", "finetune", "my_plugin"])
    b = method_styles(["joint", "lwf", "dkvb", "ranpac", "er", "zzz", "aaa", "my_plugin"])
    for m in ("dkvb",):
        assert a[m] == b[m]
    c = method_styles(["ewc", "dkvb"])
    assert a["ewc"] == c["ewc"] and a["dkvb"] == c["dkvb"]
    # Prefixed labels (several benchmarks) still get their method's style when it is free.
    d = method_styles(["amazon/domain_il/dkvb", "amazon/domain_il/ewc"])
    assert d["amazon/domain_il/dkvb"] == a["dkvb"] and d["amazon/domain_il/ewc"] == a["ewc"]
    e = method_styles(["a/s/dkvb", "b/s/dkvb"])
    assert e["a/s/dkvb"] != e["b/s/dkvb"]


def results_of(methods, seeds=(0, 1), scenario="class_il", names=GLUE, orders=None):
    rng = np.random.default_rng(0)
    runs = []
    for m in methods:
        for k, seed in enumerate(seeds):
            a = np.tril(rng.uniform(0.3, 1.0, (3, 3)))
            runs.append(make_run(m, seed, scenario, "glue", a, task_names=(orders or [names] * len(seeds))[k]))
    return make_results(runs)


def test_two_reports_draw_a_method_with_the_same_style():
    def line_styles(methods):
        fig = curves_figure(aggregate(results_of(methods)))
        ax = fig.axes[1]
        return {l.get_label(): (l.get_color(), l.get_marker(), l.get_linestyle()) for l in ax.get_lines()}

    one = line_styles(["dkvb", "joint", "finetune"])
    two = line_styles(["ewc", "dkvb", "joint", "lwf", "nmc", "mlp", "er", "derpp", "linear",
                       "ranpac", "finetune_joint", "dkvb_joint", "finetune"])
    for m in one:
        assert one[m] == two[m]
    assert len({v[:2] for v in two.values()}) == len(two)
    assert len({v[0] for v in two.values()}) == len(two)  # 13 known methods: 13 colours


def test_heatmap_blanks_tasks_not_yet_trained_and_nan():
    a = np.array([[0.9, 0.0, 0.0], [0.8, 0.7, 0.0], [0.6, 0.5, np.nan]])
    fig = heatmap_figure(a, ["t1", "t2", "t3"], "m")
    ax = fig.axes[0]
    data = ax.images[0].get_array()
    mask = np.ma.getmaskarray(data)
    expected_blank = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=bool)
    assert (mask == expected_blank).all()
    labels = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert labels == {(0, 0): "90.0", (1, 0): "80.0", (1, 1): "70.0", (2, 0): "60.0", (2, 1): "50.0"}
    assert "0.0" not in labels.values()


def test_heatmap_png_and_csv_keep_measured_zeros():
    results = results_of(["dkvb"], seeds=(0,))
    pngs = plot_pngs(results)
    assert pngs["accuracy_heatmap_dkvb.png"].startswith(b"\x89PNG")
    rows = list(csv.reader(io.StringIO(accuracy_csv_texts(results)["accuracy_matrix_dkvb.csv"])))
    assert rows[1][2:] == ["0.0", "0.0"]  # the CSV is unchanged: upper triangle measured as 0


def test_task_type_il_seeds_with_reversed_orders_average_per_dataset():
    # seed 0 trains a, b; seed 1 trains b, a. Rows = after training, columns = evaluated on.
    s0 = [[0.9, 0.1], [0.8, 0.7]]  # order a, b
    s1 = [[0.6, 0.2], [0.5, 0.4]]  # order b, a: after b: b=.6, a=.2; after a: b=.5, a=.4
    runs = [make_run("dkvb", 0, "task_type_il", "glue", s0, task_names=["a", "b"]),
            make_run("dkvb", 1, "task_type_il", "glue", s1, task_names=["b", "a"])]
    (s,) = aggregate(make_results(runs))
    assert s.task_names == ["a", "b"] and s.order == "by_name"
    # seed 1 keyed by name (a, b): after a: a=.4, b=.5; after b: a=.2, b=.6
    expected = np.array([[(0.9 + 0.4) / 2, (0.1 + 0.5) / 2], [(0.8 + 0.2) / 2, (0.7 + 0.6) / 2]])
    np.testing.assert_allclose(s.accuracy_mean, expected)
    np.testing.assert_allclose(s.accuracy_std[0, 0], np.std([0.9, 0.4], ddof=1))
    # Only the diagonal was trained in both seeds when its row was measured.
    assert (s.learned == np.eye(2, dtype=bool)).all()
    assert "per dataset" in heatmap_title(s)
    # Each seed's CSV keeps its own order; the mean CSV is keyed by dataset.
    texts = accuracy_csv_texts(make_results(runs))
    seed1 = list(csv.reader(io.StringIO(texts["accuracy_matrix_dkvb_seed1.csv"])))
    assert seed1[0][1:] == ["b", "a"] and seed1[1][1:] == ["0.6", "0.2"]
    mean = list(csv.reader(io.StringIO(texts["accuracy_matrix_dkvb.csv"])))
    assert mean[0][1:] == ["a", "b"] and float(mean[1][1]) == pytest.approx(0.65)
    # Curves stay by position (x = tasks trained so far): seen-average after 1 task = .9, .6.
    fig = curves_figure([s])
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_allclose(line.get_ydata(), [100 * 0.75, 100 * (0.75 + 0.45) / 2])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["task1", "task2"]


def test_class_il_seeds_with_different_orders_average_by_position():
    orders = [["x+y", "z+w"], ["z+w", "x+y"]]
    runs = [make_run("dkvb", k, "class_il", "clinc", np.tril(np.full((2, 2), 0.5 + 0.1 * k)),
                     task_names=o) for k, o in enumerate(orders)]
    (s,) = aggregate(make_results(runs))
    assert s.order == "by_position" and s.task_names == ["task1", "task2"]
    np.testing.assert_allclose(s.accuracy_mean, np.tril(np.full((2, 2), 0.55)))
    assert (s.learned == np.tril(np.ones((2, 2), dtype=bool))).all()
    assert "by position" in heatmap_title(s)


def test_task_type_il_with_one_shared_order_is_unchanged():
    (s,) = aggregate(results_of(["dkvb"], scenario="task_type_il"))
    assert s.order == "shared" and s.task_names == GLUE
    assert heatmap_title(s) == "dkvb (mean over 2 seeds)"
