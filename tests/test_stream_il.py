"""The task-free stream scenario (stream_il): coverage, determinism, blur, option errors, the loop."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from dkvb_nlp.data import SCENARIOS, build_scenario, label_names, load_text_dataset, resolve_splits
from dkvb_nlp.data.blurry import arrivals, blurry_order
from dkvb_nlp.data.schema import column_array
from dkvb_nlp.data.stream_il import chunk_bounds


def letters(n_classes=6, per=20, n_eval=3) -> DatasetDict:
    """Classes c00..c<n>: `per` training and `n_eval` validation/test texts each."""
    def split(kind, k):
        rows = [(f"{kind} {c:02d} {i}", f"c{c:02d}") for c in range(n_classes) for i in range(k)]
        return Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]})
    return DatasetDict({"train": split("train", per), "validation": split("val", n_eval), "test": split("test", n_eval)})


def ids(ds) -> np.ndarray:
    return column_array(ds, "label_id").astype(np.int64)


def stream_labels(stream) -> np.ndarray:
    """The label id of every training example, in stream order."""
    return np.concatenate([ids(t.train) for t in stream])


@pytest.fixture(scope="module")
def clinc():
    return build_scenario("stream_il")  # packaged CLINC150, defaults: chunks of 500, blurry 0.1


def test_clinc150_stream_uses_every_example_once_and_evaluates_every_class_once_seen(clinc):
    s = clinc
    assert "stream_il" in SCENARIOS and (s.num_heads, s.task_id_at_test, s.disjoint_labels) == (1, False, False)
    data = load_text_dataset("clinc150")
    splits = resolve_splits(data)
    assert list(s.heads[0]) == label_names(data)  # seed 0: the canonical class order, as class_il
    assert [len(t.train) for t in s] == [500] * 30
    for split in ("train", "test"):
        assert Counter(x for task in s for x in column_array(task.splits()[split], "text")) == \
            Counter(column_array(getattr(splits, split), "text"))
    seen: set[int] = set()
    for task in s:
        trained = set(ids(task.train).tolist())
        assert task.label_ids == tuple(sorted(trained))  # every class the chunk trains, in head order
        new = trained - seen
        assert new and set(ids(task.test).tolist()) == new  # exactly the newcomers
        assert set(ids(task.validation).tolist()) == new
        seen |= trained
        assert s.seen_label_ids(task.task_id) == tuple(sorted(seen))  # what the loop may predict
    assert seen == set(range(150))
    # label ids are arrival ranks: classes first appear in id order
    first = arrivals(stream_labels(s))
    assert (np.diff(first) > 0).all()


def test_seed_fixes_the_stream_and_other_seeds_differ():
    a, b, c = (build_scenario("stream_il", dataset=letters(), chunk_size=30, seed=k) for k in (3, 3, 4))
    assert [t.train["text"] for t in a] == [t.train["text"] for t in b] and a.heads == b.heads
    assert [t.train["text"] for t in a] != [t.train["text"] for t in c]
    zero = build_scenario("stream_il", dataset=letters(), chunk_size=30, seed=0)
    assert zero.heads[0] == tuple(f"c{k:02d}" for k in range(6)) and a.heads[0] != zero.heads[0]


def test_blurry_moves_examples_only_after_their_class_arrived():
    ranks = np.repeat(np.arange(8), 11)
    clean = ranks[blurry_order(ranks, 0.0, np.random.default_rng(0))]
    assert (np.diff(clean) >= 0).all()  # blurry=0: one class after another
    for blurry in (0.3, 1.0):
        order = blurry_order(ranks, blurry, np.random.default_rng(1))
        assert sorted(order.tolist()) == list(range(ranks.size))  # a permutation
        mixed = ranks[order]
        assert (np.diff(mixed) < 0).any()  # earlier classes come back among newer ones
        assert (np.diff(arrivals(mixed)) > 0).all()  # and none shows up before its arrival
        # round(blurry * 10) of each class's 11 leave their block: the rest keep its relative order
        assert (mixed[: 1 + int(round((1 - blurry) * 10))] == 0).all()


def test_remainders_join_the_last_chunk():
    assert chunk_bounds(1050, 500) == [(0, 500), (500, 1050)]
    assert chunk_bounds(1000, 500) == [(0, 500), (500, 1000)]
    assert chunk_bounds(300, 500) == [(0, 300)]


@pytest.mark.parametrize("options, message", [
    ({"chunk_size": 0}, "chunk_size=0; accepted: a positive integer"),
    ({"chunk_size": 2.5}, "chunk_size=2.5; accepted: a positive integer"),
    ({"chunk_size": True}, "chunk_size=True; accepted: a positive integer"),
    ({"blurry": -0.1}, "blurry=-0.1; accepted: a number in [0, 1]"),
    ({"blurry": 1.5}, "blurry=1.5; accepted: a number in [0, 1]"),
    ({"blurry": "0.1"}, "blurry='0.1'; accepted: a number in [0, 1]"),
    ({"seed": -1}, "seed=-1; accepted: a non-negative integer"),
    ({"class_order": ["c00", "nope"]}, "class order names unknown value(s) ['nope']"),
    ({"colour": 1}, "scenario 'stream_il' does not take option(s) ['colour']"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError) as err:
        build_scenario("stream_il", dataset=letters(), **options)
    assert message in str(err.value)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="no_such_dataset"):
        build_scenario("stream_il", dataset="no_such_dataset")


def test_a_chunk_without_a_new_class_names_a_chunk_size_that_works():
    with pytest.raises(ValueError, match=r"chunk 1 \(examples 5\.\.9 of 120\) brings no new class") as err:
        build_scenario("stream_il", dataset=letters(), chunk_size=5, blurry=0.0)
    assert "accepted: chunk_size >= 20" in str(err.value)
    assert len(build_scenario("stream_il", dataset=letters(), chunk_size=20, blurry=0.0)) == 6
    with pytest.raises(ValueError, match="chunk_size >= ") as err:
        build_scenario("stream_il", dataset=letters(), chunk_size=20, blurry=0.5)
    size = int(str(err.value).split("chunk_size >= ")[1].split()[0])
    assert len(build_scenario("stream_il", dataset=letters(), chunk_size=size, blurry=0.5)) >= 1


def test_order_free_methods_end_where_one_class_il_pass_ends(tiny_encoder_dir, minilm_tokenizer, tmp_path):
    """Through the loop with a tiny encoder: after the last chunk, nmc (sums of features) predicts
    every test text as it does after class_il on the same data; the loop evaluates seen classes only."""
    from dkvb_nlp.encoders import load_encoder
    from dkvb_nlp.engine.context import RunContext
    from dkvb_nlp.engine.feature_cache import FeatureCache
    from dkvb_nlp.engine.loop import predict, run_continual
    from dkvb_nlp.strategies import STRATEGIES

    folder = tiny_encoder_dir("bert")
    cache = FeatureCache(load_encoder(folder), minilm_tokenizer, tmp_path, autocast="off", batch_size=64,
                         progress=False)
    data = letters(n_classes=4, per=12, n_eval=2)
    final = {}
    for scenario, options in (("stream_il", {"chunk_size": 14, "blurry": 0.3}), ("class_il", {"classes_per_task": 2})):
        ctx = RunContext(build_scenario(scenario, dataset=data, **options), cache, seed=0, encoder_name=str(folder),
                         progress=False)
        runs = {m: run_continual(ctx, STRATEGIES.get(m)(ctx, opts), dataset="letters", log=lambda *a: None)
                for m, opts in (("nmc", {}), ("dkvb", {"num_codebooks": 4, "num_keys": 8, "key_init_epochs": 1,
                                                        "ridge_features": 16}))}
        n = ctx.num_tasks
        assert all(np.array(r["accuracy_matrix"]).shape == (n, n) for r in runs.values())
        strategy = STRATEGIES.get("nmc")(ctx)
        strategy.setup()
        for t in range(n):
            strategy.learn(t)
        final[scenario] = {text: p for j in range(n) for text, p in
                           zip(ctx.split(j, "test").texts, predict(ctx, strategy, j, after_task=n - 1))}
        if scenario == "stream_il":
            seen = ctx.stream.seen_label_ids(0)
            assert n >= 3 and 0 < len(seen) < 4
            strategy = STRATEGIES.get("nmc")(ctx)
            strategy.setup()
            strategy.learn(0)  # after the first chunk only its classes can be predicted
            assert set(predict(ctx, strategy, 0, after_task=0).tolist()) <= set(seen)
    assert final["stream_il"] == final["class_il"]
