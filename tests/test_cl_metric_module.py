"""The continual-learning metrics as a local `evaluate` module: loads offline, same numbers as
`dkvb_nlp.metrics`, clear errors for bad input; and the metrics module's place in the layout."""

import ast
import socket
from pathlib import Path

import numpy as np
import pytest

import dkvb_nlp.engine
import dkvb_nlp.metrics
from dkvb_nlp.metrics import continual_learning_metric_path, forward_transfer, summarize

evaluate = pytest.importorskip("evaluate")

# Rows: after training task i; columns: test accuracy on task j (fractions).
A = [
    [0.80, 0.20, 0.10],
    [0.85, 0.90, 0.30],
    [0.50, 0.70, 0.90],
]
BASELINE = [0.10, 0.10, 0.25]  # the untrained model's accuracy on each task
# By hand:
#   final accuracy  (0.5 + 0.7 + 0.9) / 3                          = 0.7
#   AIA             (0.8 + (0.85 + 0.9) / 2 + 0.7) / 3 = 2.375 / 3
#   BWT             ((0.5 - 0.8) + (0.7 - 0.9)) / 2                 = -0.25
#   forgetting      ((max(0.8, 0.85) - 0.5) + (0.9 - 0.7)) / 2      = 0.275
#   forward transfer((0.2 - 0.1) + (0.3 - 0.25)) / 2                = 0.075
BY_HAND = {
    "final_accuracy": 0.7,
    "average_incremental_accuracy": 2.375 / 3,
    "bwt": -0.25,
    "forgetting": 0.275,
    "forward_transfer": 0.075,
}


@pytest.fixture
def no_network(monkeypatch):
    """Offline as on a machine without a network: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


@pytest.fixture
def metric(no_network, tmp_path):
    return evaluate.load(continual_learning_metric_path(), cache_dir=str(tmp_path))


def test_the_path_is_the_script_folder_inside_the_package():
    folder = Path(continual_learning_metric_path())
    assert (folder / "continual_learning.py").is_file()
    assert folder.parent == Path(dkvb_nlp.metrics.__file__).resolve().parent


def test_offline_load_gives_the_hand_computed_numbers(metric):
    result = metric.compute(accuracy_matrix=A, baseline=BASELINE)
    assert set(result) == set(BY_HAND)
    for key, value in BY_HAND.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_same_numbers_as_the_project_metrics(metric):
    # Exactly equal, not approximately: the module calls the same functions.
    expected = {**summarize(A), "forward_transfer": forward_transfer(A, BASELINE)}
    assert metric.compute(accuracy_matrix=np.array(A), baseline=BASELINE) == expected


def test_rows_added_one_by_one_keep_their_order(metric):
    for row in A:
        metric.add(accuracy_matrix=row)
    assert metric.compute(baseline=BASELINE) == pytest.approx(BY_HAND, abs=1e-12)


def test_forward_transfer_is_none_without_a_baseline(metric):
    result = metric.compute(accuracy_matrix=A)
    assert result["forward_transfer"] is None
    assert result["bwt"] == pytest.approx(-0.25)


def test_single_task_and_unmeasured_rows_follow_summarize(metric):
    assert metric.compute(accuracy_matrix=[[0.6]], baseline=[0.1]) == {
        "final_accuracy": 0.6, "average_incremental_accuracy": 0.6, "bwt": 0.0, "forgetting": 0.0,
        "forward_transfer": 0.0,
    }
    # A method evaluated only after the last task: earlier rows None, as in results.json.
    joint = [[None, None], [0.7, 0.8]]
    assert metric.compute(accuracy_matrix=joint, baseline=[0.1, 0.1]) == {
        "final_accuracy": pytest.approx(0.75), "average_incremental_accuracy": None, "bwt": None,
        "forgetting": None, "forward_transfer": None,
    }


@pytest.mark.parametrize(
    "matrix, baseline, match",
    [
        ([[0.8, 0.2, 0.1], [0.85, 0.9], [0.5, 0.7, 0.9]], None, r"rows have lengths \[3, 2, 3\]"),
        ([[80, 20], [70, 90]], None, r"fractions in \[0, 1\], not percentages; got min 20, max 90"),
        ([[0.8, -0.1], [0.7, 0.9]], None, r"fractions in \[0, 1\].*got min -0.1"),
        ([[0.8, 0.2], [0.7, 0.9], [0.1, 0.1]], None, r"square \(T x T\); got shape \(3, 2\)"),
        ([[0.8, 0.2], [None, 0.9]], None, r"must be finite; entry \(1, 0\) is nan"),
        (A, [0.1, 0.1], r"one accuracy per task, shape \(3,\); got shape \(2,\)"),
        (A, [10, 10, 25], r"baseline values must be fractions in \[0, 1\].*got min 10, max 25"),
    ],
)
def test_bad_input_is_refused_by_name(metric, matrix, baseline, match):
    with pytest.raises(ValueError, match=match):
        metric.compute(accuracy_matrix=matrix, baseline=baseline)


def test_a_missing_accuracy_matrix_is_named(metric):
    with pytest.raises(ValueError, match="accuracy_matrix"):
        metric.compute(predictions=[0.5])


def test_engine_still_exports_the_same_metric_objects():
    for name in dkvb_nlp.engine.__all__:
        if hasattr(dkvb_nlp.metrics, name):
            assert getattr(dkvb_nlp.engine, name) is getattr(dkvb_nlp.metrics, name), name
    assert {"summarize", "accuracy", "SUMMARY_FIELDS"} <= set(dkvb_nlp.engine.__all__)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the dkvb_nlp modules a file imports (relative imports resolved)."""
    top = Path(dkvb_nlp.metrics.__file__).resolve().parents[2]
    # The package a relative import starts from: the file's folder (also for an __init__.py).
    package = ".".join(path.resolve().relative_to(top).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return {n for n in names if n.startswith("dkvb_nlp")}


def test_metrics_and_report_do_not_import_the_engine():
    root = Path(dkvb_nlp.metrics.__file__).resolve().parents[1]
    files = [*(root / "metrics").rglob("*.py"), *(root / "report").rglob("*.py")]
    assert files
    for path in files:
        upward = {n for n in _imported_modules(path) if n == "dkvb_nlp.engine" or n.startswith("dkvb_nlp.engine.")}
        assert not upward, f"{path} imports {upward}"
    # The checker itself sees an upward import where there is one.
    assert "dkvb_nlp.engine.loop" not in _imported_modules(root / "engine" / "__init__.py")
    assert "dkvb_nlp.metrics" in _imported_modules(root / "engine" / "__init__.py")
    assert "dkvb_nlp.results" in _imported_modules(root / "engine" / "loop.py")
