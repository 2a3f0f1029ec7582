"""Every registered method end to end and after a resume; the baselines' defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from dkvb_nlp.data import build_scenario
from dkvb_nlp.engine.context import RunContext
from dkvb_nlp.engine.feature_cache import FeatureCache
from dkvb_nlp.engine.loop import predict, run_continual
from dkvb_nlp.strategies import STRATEGIES

TINY_CLASSES = ["alarm", "balance", "bill_due", "calories", "car_rental", "cancel"]

# Small options so each method runs in about a second on the tiny stream.
FAST = {
    "dkvb": {"num_codebooks": 4, "num_keys": 16, "epochs": 2, "key_init_epochs": 1, "key_init_batch_rows": 128,
             "ridge_features": 64},
    "finetune": {"batch_size": 8, "eval_batch_size": 64},
    "ranpac": {"dim": 64},
    "er": {"buffer_size": 8, "replay_batch_size": 4, "epochs": 2},
    "derpp": {"buffer_size": 8, "replay_batch_size": 4, "epochs": 2},
}
FAST["dkvb_joint"], FAST["finetune_joint"] = FAST["dkvb"], FAST["finetune"]


def fast_options(method: str) -> dict:
    """FAST's options, or two epochs for the head-on-features methods."""
    if method in FAST:
        return FAST[method]
    fields = STRATEGIES.get(method).Options.__dataclass_fields__
    return {"epochs": 2} if "epochs" in fields else {}


def subset(rows, classes, per_class=None) -> Dataset:
    """Rows of `classes` (the first `per_class` of each), as a Dataset with text and label."""
    kept, count = [], {}
    for r in rows:
        if r["label"] in classes and (per_class is None or count.get(r["label"], 0) < per_class):
            count[r["label"]] = count.get(r["label"], 0) + 1
            kept.append(r)
    return Dataset.from_dict({"text": [r["text"] for r in kept], "label": [r["label"] for r in kept]})


def quiet(*_args, **_kwargs) -> None:
    """A `log` for run_continual that prints nothing."""


@pytest.fixture(scope="module")
def tiny_cache(tiny_encoder_dir, minilm_tokenizer, tmp_path_factory):
    """A feature cache of the tiny random BERT encoder, and the encoder's folder."""
    from dkvb_nlp.encoders import load_encoder

    folder = tiny_encoder_dir("bert")
    cache = FeatureCache(load_encoder(folder), minilm_tokenizer, tmp_path_factory.mktemp("tiny-cache"),
                         autocast="off", batch_size=32, progress=False)
    return cache, str(folder)


@pytest.fixture(scope="module")
def tiny_data(clinc_rows) -> DatasetDict:
    """6 CLINC150 intents, 11 training and 4 test texts each (3 tasks of 2 classes)."""
    return DatasetDict({"train": subset(clinc_rows["train"], TINY_CLASSES, 11),
                        "test": subset(clinc_rows["test"], TINY_CLASSES, 4)})


def tiny_context(tiny_data, tiny_cache, **scenario) -> RunContext:
    """A fresh RunContext over the tiny stream (class_il, 2 classes per task)."""
    cache, encoder = tiny_cache
    stream = build_scenario("class_il", dataset=tiny_data, classes_per_task=2, **scenario)
    return RunContext(stream, cache, seed=0, encoder_name=encoder, progress=False)


class Interrupt(Exception):
    """Raised to stop a run mid-stream, as a kill would."""


# ------------------------------------------------------------------ every method, end to end


@pytest.mark.parametrize("method", STRATEGIES.names())
def test_every_method_runs_and_resumes_exactly(method, tiny_data, tiny_cache, tmp_path):
    ctx = tiny_context(tiny_data, tiny_cache)
    cls = STRATEGIES.get(method)
    full = run_continual(ctx, cls(ctx, fast_options(method)), dataset="tiny", checkpoint_dir=tmp_path / "a", log=quiet)
    acc = np.array(full["accuracy_matrix"], dtype=float)
    measured = acc[~np.isnan(acc).all(axis=1)]  # finetune_joint is evaluated only after the last task
    assert acc.shape == (3, 3) and ((measured >= 0) & (measured <= 1)).all() and measured.shape[0] >= 1
    assert not np.isnan(acc[-1]).any()  # learning itself: the real-data tests
    assert full["trainable_parameters"] >= 0 and full["method"] == method

    # Stop after two tasks (the checkpoint then holds tasks 0 and 1), restore a fresh strategy.
    ctx = tiny_context(tiny_data, tiny_cache)
    stopped = cls(ctx, fast_options(method))
    learn = stopped.learn

    def learn_until_two(task_id):
        if task_id == 2:
            raise Interrupt
        learn(task_id)

    stopped.learn = learn_until_two
    with pytest.raises(Interrupt):
        run_continual(ctx, stopped, dataset="tiny", checkpoint_dir=tmp_path / "b", log=quiet)
    ctx = tiny_context(tiny_data, tiny_cache)
    resumed = run_continual(ctx, cls(ctx, fast_options(method)), dataset="tiny", checkpoint_dir=tmp_path / "b",
                            resume=True, log=quiet)
    np.testing.assert_array_equal(np.array(resumed["accuracy_matrix"], dtype=float), acc)


@pytest.mark.parametrize("method", [m for m in STRATEGIES.names() if m != "finetune"])
def test_every_method_runs_with_one_head_per_task(method, tiny_data, tiny_cache):
    ctx = tiny_context(tiny_data, tiny_cache, multi_head=True)
    assert ctx.stream.num_heads == 3 and ctx.stream.task_id_at_test
    run = run_continual(ctx, STRATEGIES.get(method)(ctx, fast_options(method)), dataset="tiny", log=quiet)
    assert np.array(run["accuracy_matrix"]).shape == (3, 3)


@pytest.mark.parametrize("method, options, message", [
    ("linear", {"optimizer": "lbfgs"}, "linear.optimizer='lbfgs'; accepted: adam, sgd"),
    ("mlp", {"lr": 0.0}, "mlp.lr=0.0 must be > 0"),
    ("ewc", {"ewc_lambda": -1.0}, "ewc.ewc_lambda=-1.0 must be >= 0"),
    ("er", {"buffer_size": 0}, "er.buffer_size=0 must be >= 1"),
    ("derpp", {"alpha": -0.5}, "derpp.alpha=-0.5 must be >= 0"),
    ("lwf", {"temperature": 0.0}, "lwf.temperature=0.0 must be > 0"),
    ("ranpac", {"ridge": -1.0}, "ranpac.ridge=-1.0 must be > 0"),
    ("joint", {"epochs": 0}, "joint.epochs=0 must be >= 1"),
    ("nmc", {"lr": 0.1}, "method 'nmc' has no option(s) ['lr']"),
    ("finetune_joint", {"schedule": "end"}, "finetune_joint.schedule='end'; accepted: final, cumulative"),
    ("linear", {"normalize": "yes"}, "linear.normalize='yes' must be"),
    ("dkvb", {"values": "bayes"}, "unknown value rule 'bayes'; accepted: counts, counts+ridge, ridge, sgd"),
    ("dkvb", {"loss_classes": "all"}, "dkvb.loss_classes='all'; accepted: seen, task"),
    ("dkvb", {"smoothing": -1.0}, "dkvb.smoothing=-1.0 must be > 0"),
    ("dkvb", {"ridge": 0}, "dkvb.ridge=0 must be > 0"),
])
def test_bad_options_are_clear_errors(method, options, message, tiny_data, tiny_cache):
    ctx = tiny_context(tiny_data, tiny_cache)
    with pytest.raises(ValueError) as err:
        STRATEGIES.get(method)(ctx, options)
    assert message in str(err.value)


# ------------------------------------------------------------------ method-specific properties


def test_ewc_penalty_is_zero_at_the_anchor_and_uses_the_true_fisher(tiny_data, tiny_cache):
    ctx = tiny_context(tiny_data, tiny_cache)
    ewc = STRATEGIES.get("ewc")(ctx, {"epochs": 2, "ewc_lambda": 3.0})
    ewc.setup()
    assert float(ewc.penalty().detach()) == 0.0  # nothing anchored before the first task
    ewc.learn(0)
    assert ewc.fisher and float(ewc.penalty().detach()) == 0.0  # exactly zero at the anchor weights
    with torch.no_grad():
        ewc.heads[0].weight[0, 0] += 0.5
    f = float(ewc.fisher["0.weight"][0, 0])
    assert f > 0 and float(ewc.penalty().detach()) == pytest.approx(0.5 * 3.0 * f * 0.25, rel=1e-5)

    # The closed form equals E_x E_{y~p(y|x)} of the squared log-likelihood gradient.
    ewc.learn(1)  # anchor and Fisher now include task 1
    data = ctx.split(1, "train")
    x = ewc.features(data)
    head = ewc.heads[0]
    mask = ewc.allowed(1, 0)
    expected = torch.zeros_like(head.weight)
    for i in range(len(x)):
        p = torch.softmax(head(x[i : i + 1]) + mask, 1)[0].detach()
        for c in ctx.seen_classes(1, 0):
            head.zero_grad()
            (-torch.log_softmax(head(x[i : i + 1]) + mask, 1)[0, c]).backward()
            expected += p[c] * head.weight.grad ** 2
    expected /= len(x)
    np.testing.assert_allclose(ewc.task_fisher(1, 0, x)["0.weight"].numpy(), expected.numpy(), rtol=1e-4, atol=1e-7)


def test_reservoir_buffer_is_bounded_and_derpp_stores_logits(tiny_data, tiny_cache):
    ctx = tiny_context(tiny_data, tiny_cache)
    derpp = STRATEGIES.get("derpp")(ctx, {"buffer_size": 12, "epochs": 2})
    derpp.setup()
    derpp.learn(0)
    b = derpp.buffer
    n0 = len(ctx.split(0, "train"))
    assert b.size == min(12, n0) and b.seen == n0
    x0 = derpp.features(ctx.split(0, "train"))
    with torch.no_grad():
        expected = derpp.heads[0](x0[b.row[: b.size]])
    np.testing.assert_allclose(b.logits[: b.size, : expected.shape[1]].numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(b.x[: b.size].numpy(), x0[b.row[: b.size]].numpy())
    stored = {int(r): b.logits[i].clone() for i, r in enumerate(b.row[: b.size]) if int(b.task[i]) == 0}
    derpp.learn(1)
    derpp.learn(2)
    total = sum(len(ctx.split(t, "train")) for t in range(3))
    assert b.size == 12 and b.seen == total
    assert set(b.task.tolist()) <= {0, 1, 2} and len(set(b.task.tolist())) >= 2
    for i in range(b.size):  # entries of task 0 still hold the logits they were stored with
        if int(b.task[i]) == 0 and int(b.row[i]) in stored:
            torch.testing.assert_close(b.logits[i], stored[int(b.row[i])])


def test_joint_variants_equal_their_sequential_method_after_the_first_task(tiny_data, tiny_cache):
    # Task 0 is the whole union, so the joint variants must train exactly like their base method.
    for seq, joint in (("dkvb", "dkvb_joint"), ("linear", "joint")):
        ctx = tiny_context(tiny_data, tiny_cache)
        a, b = STRATEGIES.get(seq)(ctx, fast_options(seq)), STRATEGIES.get(joint)(ctx, fast_options(joint))
        a.setup()
        b.setup()
        a.learn(0)
        b.learn(0)
        seen = ctx.seen_classes(0, 0)
        for t in range(ctx.num_tasks):
            data = ctx.split(t, "test")
            torch.testing.assert_close(b.logits(data)[:, seen], a.logits(data)[:, seen], rtol=0, atol=0)


@pytest.mark.parametrize("values", ["counts", "ridge", "counts+ridge"])
def test_order_free_dkvb_ends_exactly_where_its_iid_twin_does(values, tiny_data, tiny_cache):
    # Class-incremental with an order-free rule = i.i.d. training on the union: the same last row.
    rows = {}
    for method in ("dkvb", "dkvb_joint"):
        ctx = tiny_context(tiny_data, tiny_cache)
        run = run_continual(ctx, STRATEGIES.get(method)(ctx, {**fast_options(method), "values": values}),
                            dataset="tiny", log=quiet)
        rows[method] = run["accuracy_matrix"][-1]
    assert rows["dkvb"] == rows["dkvb_joint"]


@pytest.mark.parametrize("loss_classes", ["seen", "task"])
def test_dkvb_sgd_rule_runs_with_either_loss(loss_classes, tiny_data, tiny_cache):
    ctx = tiny_context(tiny_data, tiny_cache)
    options = {**fast_options("dkvb"), "values": "sgd", "loss_classes": loss_classes}
    run = run_continual(ctx, STRATEGIES.get("dkvb")(ctx, options), dataset="tiny", log=quiet)
    assert np.array(run["accuracy_matrix"]).shape == (3, 3)


def test_finetune_joint_final_learns_once_what_cumulative_learns_last(tiny_data, tiny_cache):
    # 'final' trains once, after the last task, exactly as 'cumulative' does at its last step.
    runs, learned = {}, {}
    for schedule in ("final", "cumulative"):
        ctx = tiny_context(tiny_data, tiny_cache)
        strategy = STRATEGIES.get("finetune_joint")(ctx, {**fast_options("finetune_joint"), "schedule": schedule})
        calls = []
        step = strategy._step
        strategy._step = lambda *args: (calls.append(1), step(*args))
        runs[schedule] = run_continual(ctx, strategy, dataset="tiny", log=quiet)
        learned[schedule] = len(calls)
    final, cumulative = runs["final"], runs["cumulative"]
    assert final["accuracy_matrix"][:2] == [[None] * 3] * 2 and final["macro_f1_matrix"][:2] == [[None] * 3] * 2
    assert final["accuracy_matrix"][2] == cumulative["accuracy_matrix"][2]
    assert final["final_accuracy"] == cumulative["final_accuracy"]
    assert final["bwt"] is None and final["average_incremental_accuracy"] is None
    assert cumulative["bwt"] is not None
    # cumulative learns tasks {0}, {0,1}, {0,1,2}: 1 + 2 + 3 tasks' batches against final's 3
    assert learned["cumulative"] == 2 * learned["final"]


# ------------------------------------------------------------------ faithfulness on real data

REAL_TASKS = 5


@pytest.fixture(scope="session")
def real_stream(clinc_rows, tmp_path_factory):
    """(cache, encoder name, dataset): 5 tasks of 5 CLINC150 intents, MiniLM features cached once."""
    from dkvb_nlp.encoders import DEFAULT_ENCODER, load_encoder, load_tokenizer

    classes = sorted({r["label"] for r in clinc_rows["train"]})[::6][: 5 * REAL_TASKS]
    data = DatasetDict({"train": subset(clinc_rows["train"], classes), "test": subset(clinc_rows["test"], classes)})
    cache = FeatureCache(load_encoder(DEFAULT_ENCODER), load_tokenizer(DEFAULT_ENCODER),
                         tmp_path_factory.mktemp("minilm-cache"), progress=False)
    groups = [classes[i : i + 5] for i in range(0, len(classes), 5)]
    return cache, DEFAULT_ENCODER, data, groups


def real_context(real_stream, reverse: bool = False) -> RunContext:
    """The real stream in its order, or with the tasks reversed (the same texts per task)."""
    cache, encoder, data, groups = real_stream
    stream = build_scenario("class_il", dataset=data, class_groups=groups[::-1] if reverse else groups,
                            max_train_per_class=20)
    return RunContext(stream, cache, seed=0, encoder_name=encoder, progress=False)


def final_accuracy(ctx: RunContext, method: str, options: dict | None = None) -> float:
    """Mean test accuracy over all tasks after the last one."""
    run = run_continual(ctx, STRATEGIES.get(method)(ctx, options), dataset="clinc150-subset", log=quiet)
    return float(np.mean(run["accuracy_matrix"][-1]))


@pytest.mark.slow
def test_sequential_probe_forgets_joint_does_not_and_replay_helps(real_stream):
    ctx = real_context(real_stream)
    linear, joint = final_accuracy(ctx, "linear"), final_accuracy(ctx, "joint")
    er = final_accuracy(ctx, "er", {"buffer_size": 50})  # same head training, 2 examples per class kept
    assert joint > 0.85  # 25 intents from 20 examples each: easy for MiniLM features
    assert linear < joint - 0.4  # class-incremental: the newest task takes over the head
    assert er > linear + 0.2


def predictions_by_text(ctx: RunContext, strategy) -> dict[str, str]:
    """{test text: predicted label name} after the last task, over every task's test split."""
    names = ctx.stream.heads[0]
    out = {}
    for j in range(ctx.num_tasks):
        pred = predict(ctx, strategy, j, after_task=ctx.num_tasks - 1)
        out.update({text: names[p] for text, p in zip(ctx.split(j, "test").texts, pred)})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method, options", [("nmc", {}), ("ranpac", {"dim": 1000})])
def test_task_order_does_not_change_the_predictions(method, options, real_stream):
    found = []
    for reverse in (False, True):
        ctx = real_context(real_stream, reverse)
        strategy = STRATEGIES.get(method)(ctx, options)
        strategy.setup()
        for t in range(ctx.num_tasks):
            strategy.learn(t)
        found.append(predictions_by_text(ctx, strategy))
    assert found[0] == found[1]
    labels = {r["text"]: r["label"] for r in real_stream[2]["test"]}
    assert np.mean([labels[t] == p for t, p in found[0].items()]) > 0.85


def test_every_class_order_shares_one_encoding_of_each_split(tiny_data, tiny_encoder_dir, minilm_tokenizer, tmp_path):
    """The cache encodes a split once, as a pool, and cuts each task's entry from it."""
    from dkvb_nlp.encoders import load_encoder

    folder = tiny_encoder_dir("bert")
    cache = FeatureCache(load_encoder(folder), minilm_tokenizer, tmp_path, autocast="off", batch_size=32,
                         progress=False)
    features = {}
    for seed in (0, 1):
        stream = build_scenario("class_il", dataset=tiny_data, classes_per_task=2, seed=seed)
        ctx = RunContext(stream, cache, seed=seed, encoder_name=str(folder), progress=False)
        for t in range(ctx.num_tasks):
            data = ctx.split(t, "train")
            features[seed, tuple(data.texts)] = data.features()
    # seed 0: the pool, then 3 cuts; seed 1 (another class order): 3 cuts and no encoding
    assert cache.misses == 7 and len(list(tmp_path.glob("*/meta.json"))) == 7
    first = {texts for seed, texts in features if seed == 0}
    assert first != {texts for seed, texts in features if seed == 1}  # the orders differ
    for (seed, texts), feats in features.items():  # a text's states are the same in every cut
        for (seed2, texts2), feats2 in features.items():
            for i, text in enumerate(texts):
                if text in texts2:
                    j = texts2.index(text)
                    np.testing.assert_array_equal(feats.states[feats.offsets[i]:feats.offsets[i + 1]],
                                                  feats2.states[feats2.offsets[j]:feats2.offsets[j + 1]])


def test_dkvb_counts_its_ridge_readout_among_learned_parameters(tiny_data, tiny_cache):
    # The readout's solved weights (M x classes) are learned numbers like the values: counted.
    counts = {}
    for values in ("counts", "counts+ridge"):
        ctx = tiny_context(tiny_data, tiny_cache)
        s = STRATEGIES.get("dkvb")(ctx, {**fast_options("dkvb"), "values": values, "ridge_features": 64})
        s.setup()
        s.learn(0)
        counts[values] = s.trainable_parameters()
    assert counts["counts+ridge"] - counts["counts"] == 64 * 2  # the first task's 2 classes
