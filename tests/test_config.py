"""Config parsing: presets, overrides, and a clear ValueError (never a crash) for any bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkvb_nlp.runner.config import FIELDS, RunConfig, config_from_mapping, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(preset):
    if preset.name.startswith("vision_"):
        pytest.skip("vision presets are read by benchmarks/vision_run.py")
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig) and cfg.methods


def test_flags_override_the_file_and_method_options_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("scenario: class_il\nmethods: [dkvb]\ndkvb: {epochs: 3, lr: 2.0}\n")
    cfg = load_config(path, {"dkvb.epochs": 7, "seeds": [1, 2]})
    assert cfg.method_options["dkvb"] == {"epochs": 7, "lr": 2.0} and cfg.seeds == [1, 2]


values = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True), st.text(max_size=8),
                   st.lists(st.one_of(st.integers(-1, 3), st.text(max_size=6)), max_size=3),
                   st.dictionaries(st.text(max_size=6), st.integers(), max_size=2))
keys = st.sampled_from(sorted(FIELDS | {"dkvb", "finetune", "bogus", "epochs"}))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_any_mapping_gives_a_config_or_a_clear_value_error(data):
    try:
        config_from_mapping(data).check()
    except ValueError as err:
        assert str(err)  # a message, naming what was wrong


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["dkvb", "finetune"]),
       st.dictionaries(st.sampled_from(["lr", "epochs", "num_keys", "key_dim", "split", "pooling", "batch_size",
                                        "lr_scale", "nope"]), values, max_size=3))
def test_any_method_options_give_options_or_a_clear_value_error(method, options):
    from dkvb_nlp.strategies import STRATEGIES
    from dkvb_nlp.strategies.base import build_options

    try:
        build_options(STRATEGIES.get(method).Options, options, method)
    except ValueError as err:
        assert str(err)


def test_autocast_off_reads_as_off_though_yaml_reads_a_bare_off_as_false():
    from dkvb_nlp.runner.config import load_config, parse_yaml

    assert parse_yaml("off", "--set") is False
    assert load_config(None, {"autocast": parse_yaml("off", "--set")}).autocast == "off"
    with pytest.raises(ValueError, match="autocast=True is not valid; expected auto, bf16 or off"):
        load_config(None, {"autocast": True})
