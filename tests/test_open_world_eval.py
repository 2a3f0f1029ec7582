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
    assert set(last) == {"auroc", "fpr_at_95_tpr", "closed_set_accuracy", "youden", "accuracy"}
    assert last["closed_set_accuracy"] == pytest.approx(np.mean(run["accuracy_matrix"][-1]))  # equal-size tasks
    for rule in ("youden", "accuracy"):
        assert 0 <= last[rule]["oos_recall"] <= 1 and last[rule]["in_scope_accuracy"] <= last["closed_set_accuracy"]
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
