"""The dkvb strategy keeps its readout's features of a scored split: the logits stay the same."""

from __future__ import annotations

import torch

import dkvb_nlp.strategies.dkvb as dkvb_module
from dkvb_nlp.engine.context import RunContext
from dkvb_nlp.strategies import STRATEGIES
from test_device_following import FakeCache, stream  # noqa: F401  (stream: a fixture)

OPTIONS = {"num_codebooks": 4, "num_keys": 8, "ridge_features": 32, "key_init_batch_rows": 16}


def every_task_logits(stream, tmp_path, monkeypatch, keep_bytes: int):
    monkeypatch.setattr(dkvb_module, "FEATURE_KEEP_BYTES", keep_bytes)
    strategy = STRATEGIES.get("dkvb")(RunContext(stream, FakeCache(tmp_path), 0, "fake", progress=False), OPTIONS)
    strategy.setup()
    rows = []
    for t in range(stream.num_tasks):
        strategy.learn(t)  # the readout's weights change after every task; its features do not
        rows.append([strategy.logits(strategy.ctx.split(j, "test")) for j in range(stream.num_tasks)])
    return strategy, rows


def test_kept_features_give_the_same_logits_after_every_task(stream, tmp_path, monkeypatch):
    kept, with_kept = every_task_logits(stream, tmp_path / "a", monkeypatch, 1 << 30)
    assert len(kept._features) == stream.num_tasks and kept._features_bytes > 0
    fresh, without = every_task_logits(stream, tmp_path / "b", monkeypatch, 0)
    assert not fresh._features  # over the budget: nothing kept, scored as before
    for row_kept, row_fresh in zip(with_kept, without):
        for a, b in zip(row_kept, row_fresh):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(with_kept[0][0], with_kept[-1][0])  # the weights did move between tasks


def test_a_new_setup_forgets_the_kept_features(stream, tmp_path, monkeypatch):
    strategy, _ = every_task_logits(stream, tmp_path, monkeypatch, 1 << 30)
    strategy.setup()
    assert strategy._features == {} and strategy._features_bytes == 0
