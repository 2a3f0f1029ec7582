"""vision/ with the text side's value rules (dkvb.values): order-free rules in the paper's protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dkvb_nlp.vision.protocol import DKVBLearner, DKVBOptions, ProtocolConfig, ProtocolData, prepare_keys, run_protocol
from dkvb_nlp.vision.splits import class_splits
from dkvb_nlp.vision.value_trainers import TorchValueSGD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_vision import clustered_features, one_torch_thread, small_config  # noqa: E402,F401

ORDER_FREE = ("counts", "ridge", "counts+ridge")


def noisy_data(seed: int = 0) -> ProtocolData:
    """Overlapping clusters: accuracies below 1, so equal rows say something."""
    x, y = clustered_features(20, seed=seed)
    tx, ty = clustered_features(8, seed=seed)
    kx, _ = clustered_features(10, seed=seed + 1)
    rng = np.random.default_rng(5)
    x = x + rng.normal(0, 3, x.shape).astype(np.float32)
    tx = tx + rng.normal(0, 3, tx.shape).astype(np.float32)
    return ProtocolData(x, y, tx, ty, kx, dataset="toy")


def config(values: str, **over) -> ProtocolConfig:
    cfg = small_config(**{"methods": ("dkvb",), "epochs": 1, **over})
    cfg.dkvb = DKVBOptions(**{**cfg.dkvb.__dict__, "values": values, "ridge_features": 64})
    return cfg


def learner(data: ProtocolData, opts: DKVBOptions, seed: int = 0) -> DKVBLearner:
    keyed = prepare_keys(data, opts, seed)
    train_idx = keyed.quantize(torch.from_numpy(data.train_x)).to(torch.int32)
    test_idx = keyed.quantize(torch.from_numpy(data.test_x)).to(torch.int32)
    return DKVBLearner(keyed, train_idx, torch.from_numpy(data.train_y.astype(np.int64)), test_idx, opts, seed)


def test_defaults_match_the_text_side():
    o = DKVBOptions()
    assert (o.values, o.smoothing, o.counts_weight, o.ridge, o.ridge_features) == ("sgd", 0.1, 0.1, 100.0, 4096)
    assert not o.order_free and DKVBOptions(values="counts+ridge").order_free


@pytest.mark.parametrize("values", ORDER_FREE)
def test_order_free_class_il_ends_where_iid_does(values):
    data = noisy_data()
    runs = run_protocol(data, config(values, noise_levels=(0.5,)))
    by = {r["scenario"]: r for r in runs}
    cil, iid = by["class_il_5x2"], by["iid"]
    final_cil, final_iid = np.asarray(cil["accuracy_matrix"])[-1], np.asarray(iid["accuracy_matrix"])[-1]
    assert np.array_equal(final_cil, final_iid) and 0.2 < final_cil.mean() < 1.0
    assert cil["noise_robustness"] == iid["noise_robustness"]
    # iid learns everything in its first phase and nothing after: its rows are all the final row
    assert np.array_equal(np.asarray(iid["accuracy_matrix"]), np.tile(final_iid, (5, 1)))
    assert cil["epochs_per_phase"] == iid["epochs_per_phase"] == [1] * 5
    assert cil["value_rule"]["new_examples_per_phase"] == [40] * 5
    assert iid["value_rule"]["new_examples_per_phase"] == [200, 0, 0, 0, 0]
    assert cil["value_rule"]["examples_learned"] == iid["value_rule"]["examples_learned"] == 200
    assert cil["values"] == values
    ridge = 64 * 10 if "ridge" in values else 0
    assert cil["trainable_parameters"] == 8 * 32 * 10 + ridge
    assert cil["value_rule"].get("ridge_readout_weights", 0) == ridge
    # usage counts each example once (one pass), in either mode
    assert cil["key_usage"] == iid["key_usage"]


@pytest.mark.parametrize("values", ORDER_FREE)
def test_learner_logits_equal_in_any_order_and_repeats_count_once(values):
    data = noisy_data()
    opts = config(values).dkvb
    splits = class_splits("5x2", 10, seed=3)
    a, b = learner(data, opts), learner(data, opts)
    for classes in splits:
        a.fit(np.flatnonzero(np.isin(data.train_y, classes)), 2000)  # epochs ignored: one pass
    every = np.arange(data.train_y.size)
    for _ in range(3):  # the iid mode's repeated all-data phases
        b.fit(every, 1)
    b.fit(np.concatenate([every[:7], every[:7]]), 1)  # a row twice in one phase: still once
    rows = np.arange(data.test_y.size)
    la, lb = a._logits(a.test_idx), b._logits(b.test_idx)
    assert torch.allclose(la, lb, atol=1e-5, rtol=1e-5)
    assert np.array_equal(a.predict(rows), b.predict(rows))
    if a.rule.counts is not None:  # integer sums: exactly equal
        assert torch.equal(a.rule.counts.counts, b.rule.counts.counts)
        assert a.rule.counts.counts.sum() == data.train_y.size * opts.num_codebooks
    # one pass over the 200 examples; nothing of them is stored beyond the sums
    assert torch.equal(a.usage, b.usage) and int(a.usage.sum()) == 200 * opts.num_codebooks
    assert int(b.learned.sum()) == 200 and b.new_per_phase == [200, 0, 0, 0]
    # noisy or not, arbitrary features go through the same logits (ridge readout included)
    assert np.array_equal(a.predict_features(data.test_x), a.predict(rows))
    if a.rule.readout is not None:
        assert not torch.allclose(la, a.model.decoder(a.model.pool_values(a.test_idx)))


def test_sgd_is_unchanged_and_epochs_still_count():
    data = noisy_data()
    opts = small_config().dkvb  # values 'sgd' by default
    assert opts.values == "sgd"
    ours = learner(data, opts)
    assert ours.rule is None and ours.model.values_rule is None
    ref_model = prepare_keys(data, opts, 0)
    ref = TorchValueSGD(ref_model, opts.lr, opts.label_smoothing)
    gen = torch.Generator().manual_seed(0)
    rows = np.flatnonzero(np.isin(data.train_y, [0, 1]))
    ours.fit(rows, 3)
    ref.epochs(3, ours.train_idx[torch.from_numpy(rows)], ours.train_y[torch.from_numpy(rows)], opts.batch_size, gen)
    assert torch.equal(ours.model.value_table, ref_model.value_table)
    assert int(ours.usage.sum()) == rows.size * opts.num_codebooks * 3
    ours.fit(rows, 1)  # sgd has no mask: the same rows train again
    assert not torch.equal(ours.model.value_table, ref_model.value_table)
    assert "value_rule" not in ours.extra() and ours.extra()["values"] == "sgd"
    # sgd keeps the iid check on epochs; an order-free rule takes epochs=1 with 5 splits
    with pytest.raises(ValueError, match="evaluation points"):
        run_protocol(data, small_config(epochs=2, methods=("dkvb",)))
    run_protocol(data, config("counts", modes=("iid",)))
    # the heads still need their own epochs to cover the iid checkpoints
    with pytest.raises(ValueError, match="evaluation points"):
        run_protocol(data, config("counts", methods=("dkvb", "linear"), heads={"epochs": 2}))


@pytest.mark.parametrize("options,match", [
    ({"values": "adam"}, r"unknown value rule 'adam'; accepted: counts, counts\+ridge, ridge, sgd"),
    ({"values": None}, "unknown value rule None"),
    ({"smoothing": 0}, r"dkvb.smoothing=0 must be > 0"),
    ({"counts_weight": float("nan")}, "dkvb.counts_weight=nan must be > 0"),
    ({"ridge": -1.0}, r"dkvb.ridge=-1.0 must be > 0"),
    ({"ridge_features": 0}, r"dkvb.ridge_features=0 must be >= 1"),
    ({"ridge_features": 8.5}, r"dkvb.ridge_features=8.5 must be >= 1 \(an integer"),
    ({"ridge_dim": 8}, r"unknown option\(s\) \['ridge_dim'\]; accepted: .*values, smoothing"),
])
def test_bad_value_options_are_refused_before_anything_runs(options, match):
    with pytest.raises(ValueError, match=match):
        ProtocolConfig.from_dict({"dkvb": options})


def test_cli_refuses_a_bad_value_rule(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import vision_run
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    with pytest.raises(ValueError, match="unknown value rule 'bogus'"):
        vision_run.main(["--set", "protocol.dkvb.values=bogus", "--output-dir", str(tmp_path / "out")])
    cfg = vision_run.build_config(vision_run.parse_args(
        ["--config", str(ROOT / "configs/vision_fashion_mnist_values.yaml")]))
    protocol = ProtocolConfig.from_dict(cfg["protocol"])
    assert protocol.dkvb.values == "counts+ridge" and protocol.dkvb.num_codebooks == 256 and protocol.epochs == 1
