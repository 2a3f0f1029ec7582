"""Out-of-scope rejection on DKVBForSequenceClassification: scores, threshold, pipeline, save/load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification

TEXTS = ["book a flight to paris", "what is my balance", "play some jazz music", "set an alarm for 7",
         "how is the weather tomorrow", "transfer money to my savings", "cancel my reservation",
         "turn the lights off in the kitchen"] * 2
LABELS = ["travel", "bank", "music", "alarm", "weather", "bank", "travel", "home"] * 2
ODD = ["zxq vvv kkk", "purple elephants sing opera", "42 42 42 42", "qwerty asdf"]


def fitted(folder, **kw):
    cfg = dict(encoder_name_or_path=str(folder), num_codebooks=4, num_keys=16, id2label={0: "travel"},
               key_init_batch_rows=64, ridge_features=32)
    cfg.update(kw)
    model = DKVBForSequenceClassification(DKVBConfig(**cfg)).init_keys(TEXTS)
    return model.partial_fit(TEXTS, LABELS).eval()


@pytest.fixture(scope="module")
def folder(tiny_encoder_dir):
    return tiny_encoder_dir("bert")


@pytest.fixture(scope="module")
def base(folder):
    return fitted(folder)


@pytest.fixture
def model(base):
    """A fresh copy of one fitted model (fitting takes a second; the tests change the copy)."""
    return copy.deepcopy(base)


def test_pipeline_says_oos_exactly_where_the_score_passes_the_threshold(model, tmp_path):
    texts = TEXTS[:8] + ODD
    scores = model.oos_scores(texts, score="msp")
    threshold = float(np.median(scores))
    closed = model(**model.tokenizer(texts, padding=True, return_tensors="pt"), reject_oos=False).logits
    model.set_oos("msp", threshold)
    assert model.config.id2label[model.config.num_labels - 1] == "oos" and model.config.num_classes == 6
    out = pipeline("text-classification", model=model, tokenizer=model.tokenizer)(texts)
    expected = ["oos" if s > threshold else model.config.id2label[i] for s, i in zip(scores, closed.argmax(1).tolist())]
    assert [o["label"] for o in out] == expected
    assert "oos" in expected and set(expected) != {"oos"}
    # accepted texts keep their closed-set probabilities exactly
    for o, s, z in zip(out, scores, closed):
        if s <= threshold:
            assert o["score"] == pytest.approx(torch.softmax(z, 0).max().item(), rel=1e-5)
    # the threshold round-trips through save_pretrained / the Auto classes / pipeline(path)
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    assert (loaded.config.oos_score, loaded.config.oos_threshold) == ("msp", threshold)
    again = pipeline("text-classification", model=str(tmp_path / "m"))(texts)
    assert [o["label"] for o in again] == expected


def test_loss_reads_the_learned_classes_and_training_mode_has_no_oos_column(model):
    enc = model.tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    labels = torch.tensor([model.config.label2id[n] for n in LABELS[:4]])
    plain = model(**enc, labels=labels)
    model.set_oos("energy", -1e9)  # rejects everything
    rejected = model(**enc, labels=labels)
    assert rejected.logits.shape[1] == plain.logits.shape[1] + 1
    assert (rejected.logits.argmax(1) == plain.logits.shape[1]).all()
    torch.testing.assert_close(rejected.loss, plain.loss)
    assert model.train()(**enc).logits.shape == plain.logits.shape


def test_key_distance_through_forward_equals_oos_scores_and_needs_states(model):
    texts = TEXTS[:3] + ODD
    scores = model.oos_scores(texts, score="key_distance")
    threshold = float(np.sort(scores)[2])
    model.set_oos("key_distance", threshold)
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    rejected = model(**enc).logits.argmax(1) == model.config.num_classes
    assert rejected.tolist() == (scores > threshold).tolist()
    with pytest.raises(ValueError, match="needs the token states"):
        model(indices=model.quantize(**enc))


def test_learning_new_classes_keeps_oos_last_and_oos_is_not_a_class(model):
    model.set_oos("msp", 0.5, label="unknown")
    model.partial_fit(["order a pizza"], ["food"])
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert names[-2:] == ["food", "unknown"] and model.bottleneck.num_classes == 7
    with pytest.raises(ValueError, match="'unknown' is the out-of-scope label"):
        model.partial_fit(["huh"], ["unknown"])
    model.set_oos(None, None)
    assert "unknown" not in model.config.label2id and model.config.num_labels == 7


def test_calibrate_oos_stores_the_rules_threshold(model, base):
    metrics = model.calibrate_oos(TEXTS, LABELS, ODD, score="msp", rule="youden")
    assert model.config.oos_threshold == metrics["threshold"] and 0 <= metrics["auroc"] <= 1
    tpr = copy.deepcopy(base).calibrate_oos(TEXTS, LABELS, [], rule="tpr", tpr=0.75)
    assert tpr["in_scope_accepted"] >= 0.75
    with pytest.raises(ValueError, match="needs out-of-scope validation texts"):
        copy.deepcopy(base).calibrate_oos(TEXTS, LABELS, [], rule="youden")


@pytest.mark.parametrize("call, match", [
    (lambda m: m.set_oos("vibes", 0.5), "unknown oos_score 'vibes'; accepted: msp, energy"),
    (lambda m: m.set_oos(None, 0.5), "oos_threshold needs oos_score"),
    (lambda m: m.set_oos("msp", float("nan")), "must be a finite number"),
    (lambda m: m.set_oos("msp", 0.5, label="bank"), "'bank' is already a class"),
    (lambda m: m.oos_scores(TEXTS[:2]), "config.oos_score is unset"),
    (lambda m: m(**m.tokenizer(TEXTS[:2], return_tensors="pt", padding=True), reject_oos=True), "no out-of-scope"),
    (lambda m: m.calibrate_oos(TEXTS[:2], ["bank"], ODD), "1 labels for 2 in-scope texts"),
    (lambda m: m.calibrate_oos(TEXTS[:1], ["pets"], ODD), "not classes of this model"),
])
def test_bad_oos_input_is_refused_by_name(model, call, match):
    with pytest.raises(ValueError, match=match):
        call(model)


def test_scores_the_model_cannot_compute_and_multi_head_are_refused(folder, base):
    with pytest.raises(ValueError, match="'key_evidence' needs count statistics"):
        fitted(folder, values="ridge").set_oos("key_evidence", 0.0)
    multi = copy.deepcopy(base)
    multi.add_task(["x", "y"])
    with pytest.raises(ValueError, match="single head"):
        multi.set_oos("msp", 0.5)
    with pytest.raises(ValueError, match="id2label must end with oos_label"):
        DKVBConfig(id2label={0: "a"}, oos_score="msp", oos_threshold=0.5)
