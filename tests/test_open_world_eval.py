"""The open-world view of the continual loop: not-yet-seen classes and out-of-scope texts (class_il oos=true)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from dkvb_nlp.data import build_scenario
from dkvb_nlp.engine.context import RunContext
from dkvb_nlp.engine.loop import run_continual
from dkvb_nlp.open_world import auroc, msp
from dkvb_nlp.strategies import STRATEGIES
from test_strategies import TINY_CLASSES, quiet, subset, tiny_cache  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def oos_data(clinc_rows) -> DatasetDict:
    """6 CLINC150 intents (3 tasks of 2) and 12 / 10 of its out-of-scope validation / test texts."""
    def oos(split, n):
        rows = clinc_rows[split][:n]
        return Dataset.from_dict({"text": [r["text"] for r in rows], "label": ["oos"] * len(rows)})

    return DatasetDict({"train": subset(clinc_rows["train"], TINY_CLASSES, 11),
                        "validation": subset(clinc_rows["validation"], TINY_CLASSES, 3),
                        "test": subset(clinc_rows["test"], TINY_CLASSES, 4),
                        "oos_validation": oos("oos_validation", 12), "oos_test": oos("oos_test", 10)})


def test_oos_rows_and_unseen_auroc_are_recorded_and_recomputable(oos_data, tiny_cache):
    cache, encoder = tiny_cache
    stream = build_scenario("class_il", dataset=oos_data, classes_per_task=2, oos=True)
    assert len(stream.unknown["test"]) == 10 and stream.options["oos"] is True
    ctx = RunContext(stream, cache, seed=0, encoder_name=encoder, progress=False)
    strategy = STRATEGIES.get("nmc")(ctx, {})
    run = run_continual(ctx, strategy, dataset="tiny", log=quiet)
    rows = run["open_world"]
    assert len(rows) == 3 and "unseen_auroc" not in rows[-1] and "unseen_auroc" in rows[0]
    last = rows[-1]["oos"]
    assert set(last) == {"score", "auroc", "fpr_at_95_tpr", "closed_set_accuracy", "youden", "accuracy",
                         "validation"}
    assert last["score"] == "msp"
    assert last["closed_set_accuracy"] == pytest.approx(np.mean(run["accuracy_matrix"][-1]))  # equal-size tasks
    val = last["validation"]
    for rule in ("youden", "accuracy"):
        assert 0 <= last[rule]["oos_recall"] <= 1 and last[rule]["in_scope_accuracy"] <= last["closed_set_accuracy"]
        assert val[rule]["in_scope_accuracy"] <= val["closed_set_accuracy"]
    assert val["accuracy"]["in_scope_accuracy"] >= val["closed_set_accuracy"] - 0.01 - 1e-9  # the rule's budget
    # the AUROC is the MSP AUROC of the final model's logits over the seen classes
    z_in = np.concatenate([strategy.logits(ctx.split(j, "test")).numpy() for j in range(3)])
    z_out = strategy.logits(ctx.unknown_split("test")).numpy()
    assert last["auroc"] == pytest.approx(auroc(msp(z_in), msp(z_out)))


def test_oos_option_is_checked(oos_data):
    with pytest.raises(ValueError, match="oos=True needs splits oos_validation and oos_test"):
        build_scenario("class_il", dataset=DatasetDict({k: oos_data[k] for k in ("train", "test")}),
                       classes_per_task=2, oos=True)
    with pytest.raises(ValueError, match="oos=True needs one shared head"):
        build_scenario("class_il", dataset=oos_data, classes_per_task=2, oos=True, multi_head=True)
    with pytest.raises(ValueError, match="oos='yes'; accepted: true or false"):
        build_scenario("class_il", dataset=oos_data, classes_per_task=2, oos="yes")
    no = build_scenario("class_il", dataset=oos_data, classes_per_task=2)
    assert no.unknown == {}


@pytest.fixture(scope="module")
def oos_train_data(oos_data, clinc_rows) -> DatasetDict:
    """`oos_data` plus 8 of CLINC150's oos_train texts (label 'oos', no domain column)."""
    rows = clinc_rows["oos_train"][:8]
    return DatasetDict({**oos_data, "oos_train": Dataset.from_dict({"text": [r["text"] for r in rows],
                                                                    "label": [r["label"] for r in rows]})})


def test_oos_train_is_a_class_of_the_first_task_with_train_rows_only(oos_train_data):
    stream = build_scenario("class_il", dataset=oos_train_data, classes_per_task=2, oos=True, oos_train=True)
    first = stream[0]
    assert stream.oos_class == "oos" and stream.options["oos_train"] is True
    assert first.label_names[-1] == "oos" and stream.oos_class_id == 2  # right after the first task's 2 intents
    assert stream.heads[0][:3] == first.label_names and len(stream.heads[0]) == 7
    train_labels = list(first.train["label"])
    assert train_labels.count("oos") == 8 and first.train["label_id"][-1] == 2
    assert "oos" not in first.validation["label"] and "oos" not in first.test["label"]
    assert all("oos" not in t.label_names for t in stream.tasks[1:])
    plain = build_scenario("class_il", dataset=oos_train_data, classes_per_task=2, oos=True)
    assert plain.oos_class is None and plain.oos_class_id is None and len(plain.heads[0]) == 6


def test_oos_train_option_is_checked(oos_data, oos_train_data):
    with pytest.raises(ValueError, match="oos_train=True needs oos=True"):
        build_scenario("class_il", dataset=oos_train_data, classes_per_task=2, oos_train=True)
    with pytest.raises(ValueError, match="oos_train=True needs a split oos_train; dataset"):
        build_scenario("class_il", dataset=oos_data, classes_per_task=2, oos=True, oos_train=True)
    with pytest.raises(ValueError, match="oos_train=1; accepted: true or false"):
        build_scenario("class_il", dataset=oos_train_data, classes_per_task=2, oos=True, oos_train=1)
    clash = DatasetDict({**oos_train_data, "oos_train": oos_train_data["train"].select(range(3)).map(
        lambda r: {"label": oos_train_data["train"][0]["label"]})})
    with pytest.raises(ValueError, match="is also an in-scope class"):
        build_scenario("class_il", dataset=clash, classes_per_task=2, oos=True, oos_train=True)


def test_a_learned_oos_class_is_never_an_answer_and_gives_the_oos_score(oos_train_data, tiny_cache):
    from dkvb_nlp.open_world import oos_class

    cache, encoder = tiny_cache
    stream = build_scenario("class_il", dataset=oos_train_data, classes_per_task=2, oos=True, oos_train=True)
    ctx = RunContext(stream, cache, seed=0, encoder_name=encoder, progress=False)
    strategy = STRATEGIES.get("nmc")(ctx, {})
    run = run_continual(ctx, strategy, dataset="tiny", log=quiet)
    last = run["open_world"][-1]["oos"]
    assert last["score"] == "oos_class"
    k = stream.oos_class_id
    z_in = np.concatenate([strategy.logits(ctx.split(j, "test")).numpy() for j in range(3)])
    z_out = strategy.logits(ctx.unknown_split("test")).numpy()
    assert last["auroc"] == pytest.approx(auroc(oos_class(z_in, k), oos_class(z_out, k)))
    # closed-set accuracy reads the in-scope columns only: the oos column is masked out
    closed = z_in.copy()
    closed[:, k] = -np.inf
    labels = np.concatenate([ctx.split(j, "test").labels for j in range(3)])
    assert last["closed_set_accuracy"] == pytest.approx(np.mean(closed.argmax(1) == labels))
    assert np.mean(run["accuracy_matrix"][-1]) == pytest.approx(last["closed_set_accuracy"])  # equal-size tasks
