"""Every numeric option has a declared range, checked in one place before anything is encoded."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dkvb_nlp.engine.bounds import Bounds, bounded, check_bounds, field_bounds
from dkvb_nlp.runner.config import RunConfig, load_config
from dkvb_nlp.strategies import STRATEGIES



def numeric_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if any(t in str(f.type).replace("bool", "") for t in ("int", "float"))]


@pytest.mark.parametrize("method", STRATEGIES.names())
def test_every_numeric_option_of_every_method_declares_its_range(method):
    options = STRATEGIES.get(method).Options
    missing = sorted(set(numeric_fields(options)) - set(field_bounds(options)))
    assert not missing, f"{method}: numeric options without a declared range: {missing}"


def test_every_numeric_run_option_declares_its_range():
    missing = sorted(set(numeric_fields(RunConfig)) - set(field_bounds(RunConfig)))
    assert missing == [], missing


@pytest.mark.parametrize("overrides, message", [
    ({"methods": ["er"], "er.lr": math.inf}, "er.lr=inf must be > 0 (a finite number; default 0.001)"),
    ({"methods": ["er"], "er.lr": math.nan}, "er.lr=nan must be > 0"),
    ({"methods": ["er"], "er.epochs": -3}, "er.epochs=-3 must be >= 1 (an integer; default 5)"),
    ({"methods": ["linear"], "linear.batch_size": 0}, "linear.batch_size=0 must be >= 1"),
    ({"methods": ["linear"], "linear.momentum": 1.0}, "linear.momentum=1.0 must be in [0, 1)"),
    ({"methods": ["ewc"], "ewc.gamma": 5}, "ewc.gamma=5 must be in [0, 1]"),
    ({"methods": ["finetune"], "finetune.lr": -1e-5}, "finetune.lr=-1e-05 must be > 0"),
    ({"methods": ["finetune"], "finetune.eval_batch_size": 0}, "finetune.eval_batch_size=0 must be >= 1"),
    ({"methods": ["ranpac"], "ranpac.dim": 0}, "ranpac.dim=0 must be >= 1"),
    ({"methods": ["nmc"], "er.lr": 0}, "er.lr=0 must be > 0"),  # options of a method not run are checked too
    ({"seeds": [0, 1, 0]}, "seeds=[0, 1, 0] repeats seed(s) [0]; each seed runs once, e.g. --seeds 0,1"),
    ({"seeds": [2, -1]}, "seeds=[2, -1] (element -1) must be >= 0 (an integer)"),
    ({"max_length": 0}, "max_length=0 must be >= 1"),
    ({"encode_batch_size": 0}, "encode_batch_size=0 must be >= 1"),
    ({"max_train_per_class": 0}, "max_train_per_class=0 must be >= 1"),
    ({"scenario_options.validation_fraction": 1.0}, "scenario_options.validation_fraction=1.0 must be in (0, 1)"),
    ({"scenario_options.classes_per_task": 0}, "scenario_options.classes_per_task=0 must be >= 1"),
])
def test_out_of_range_options_are_refused_naming_value_and_range(overrides, message):
    with pytest.raises(ValueError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


@pytest.mark.parametrize("option, value, message", [
    ("lr", math.inf, "dkvb.lr=inf must be > 0"),
    ("epochs", -3, "dkvb.epochs=-3 must be >= 1"),
    ("batch_size", 0, "dkvb.batch_size=0 must be >= 1"),
    ("ema_decay", 5, "dkvb.ema_decay=5 must be in [0, 1)"),
])
def test_dkvb_options_are_range_checked(option, value, message):
    with pytest.raises(ValueError) as err:
        load_config(None, {"methods": ["dkvb"], f"dkvb.{option}": value})
    assert message in str(err.value)


def test_bounds_accept_the_edges_and_reject_wrong_kinds():
    @dataclasses.dataclass
    class Opts:
        rate: float = bounded(0.5, ge=0, lt=1)
        steps: int = bounded(3, ge=1)
        scale: float | None = bounded(None, gt=0, integer=False)

    check_bounds(Opts(rate=0.0, steps=1, scale=None))
    check_bounds(Opts(rate=0, steps=10**9, scale=1e300))
    for bad in (dict(rate=1.0), dict(rate=-0.0001), dict(steps=0), dict(steps=2.0), dict(steps=True),
                dict(scale=0.0), dict(scale=math.inf), dict(rate="0.5")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            check_bounds(Opts(**bad))
    assert Bounds(gt=0).accepts(math.inf) is False and Bounds(gt=0, finite=False).accepts(math.inf) is True
