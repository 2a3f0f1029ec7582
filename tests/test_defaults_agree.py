"""One set of DKVB defaults: the Hugging Face config, the benchmark's options and vision's options
agree wherever they name the same hyperparameter (issue: a practitioner calling `DKVBConfig()`
gets the model behind the README's numbers)."""

from __future__ import annotations

import dataclasses
import inspect

from dkvb_nlp import DKVBConfig
from dkvb_nlp.strategies.dkvb import DKVBOptions

# The text side's names that mean the same thing in the config under another name.
RENAMED = {"decoder": "decoder_type"}
# Vision keeps the image paper's bottleneck (256 codebooks of 14 dims, EMA decay 0.95, 10
# key-init epochs over image features): those names are a documented difference, not a drift.
VISION_OWN = {"num_codebooks", "key_dim", "lr", "label_smoothing", "batch_size", "key_init_epochs", "values"}


def config_defaults() -> dict:
    return {name: p.default for name, p in inspect.signature(DKVBConfig.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def option_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_the_benchmark_options_and_the_config_share_every_default_they_both_name():
    config, options = config_defaults(), option_defaults(DKVBOptions)
    shared = {name: RENAMED.get(name, name) for name in options if RENAMED.get(name, name) in config}
    assert {"num_codebooks", "num_keys", "key_init_epochs", "ema_decay", "values", "smoothing", "counts_weight",
            "ridge", "ridge_features", "split", "pooling", "decoder"} <= set(shared)
    differ = {name: (options[name], config[c]) for name, c in shared.items()
              if options[name] != config[c] and config[c] is not None}
    assert differ == {}, f"DKVBOptions vs DKVBConfig defaults differ: {differ}"
    # DKVBConfig leaves `values` None to pick by decoder: with the default decoder it is the options' rule.
    assert DKVBConfig().values == options["values"]


def test_vision_shares_the_value_rules_defaults():
    from dkvb_nlp.vision.protocol import DKVBOptions as VisionOptions

    config, vision = config_defaults(), option_defaults(VisionOptions)
    shared = (set(vision) & set(config)) - VISION_OWN
    assert {"smoothing", "counts_weight", "ridge", "ridge_features", "num_keys"} <= shared
    differ = {name: (vision[name], config[name]) for name in shared if vision[name] != config[name]}
    assert differ == {}, f"vision DKVBOptions vs DKVBConfig defaults differ: {differ}"


def test_the_bottleneck_is_built_from_the_config_by_every_user():
    from dkvb_nlp.bottleneck import KeyValueBottleneck

    config = DKVBConfig(num_codebooks=4, num_keys=32, ridge_features=16, id2label={0: "a", 1: "b"})
    built = KeyValueBottleneck.from_config(config, 24)
    assert built.num_codebooks == 4 and built.num_keys == 32 and built.num_classes == 2
    direct = KeyValueBottleneck(24, 4, 32, num_classes=2)
    assert built.config == direct.config
    assert KeyValueBottleneck.from_config(config, 24, 5, search="torch").config["search"] == "torch"


def test_the_benchmark_options_read_their_model_defaults_from_the_config(monkeypatch):
    """DKVBOptions' model fields take DKVBConfig's defaults by name (config_default), not copies."""
    from dkvb_nlp.modeling.configuration_dkvb import config_default

    assert config_default("num_keys") == 4096 and config_default("decoder_type") == "non_parametric"
    import pytest

    with pytest.raises(KeyError, match="no default for 'nope'"):
        config_default("nope")
    source = inspect.getsource(DKVBOptions)
    for name in ("num_codebooks", "num_keys", "ema_decay", "smoothing", "counts_weight", "ridge", "ridge_features"):
        assert f'_D("{name}")' in source, name
