"""DKVBForSequenceClassification: config, Auto classes, save/load, pipeline, heads, growth."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification
from dkvb_nlp.encoders import load_encoder

TINY_ARCHS = ("bert", "roberta", "distilbert", "mpnet")

TEXTS = ["book a flight to paris", "what is my balance", "play some jazz music", "set an alarm for 7",
         "how is the weather tomorrow", "transfer money to my savings", "cancel my reservation",
         "turn the lights off in the kitchen"] * 4


def tiny_model(folder, **kw) -> DKVBForSequenceClassification:
    cfg = dict(encoder_name_or_path=str(folder), num_codebooks=4, num_keys=16, id2label={0: "a", 1: "b", 2: "c"},
               key_init_batch_rows=64)
    cfg.update(kw)
    model = DKVBForSequenceClassification(DKVBConfig(**cfg))
    return model.init_keys(TEXTS)


def tokens(model, texts=TEXTS[:6]):
    return model.tokenizer(texts, padding=True, return_tensors="pt")


def test_config_defaults_and_round_trip(tmp_path):
    cfg = DKVBConfig(id2label={0: "neg", 1: "pos"})
    assert (cfg.encoder_name_or_path, cfg.split, cfg.pooling, cfg.decoder_type) == (
        "sentence-transformers/all-MiniLM-L6-v2", "segment", "mean_after", "non_parametric")
    assert cfg.num_labels == 2 and cfg.head_sizes == [2]
    cfg.save_pretrained(tmp_path)
    again = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(again, DKVBConfig)
    assert {**again.to_dict(), "_name_or_path": ""} == {**cfg.to_dict(), "_name_or_path": ""}


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="pieces"), "unknown split 'pieces'; accepted: random_projection, segment"),
    (dict(pooling="max"), "unknown pooling 'max'; accepted"),
    (dict(decoder_type="tree"), "unknown decoder_type 'tree'"),
    (dict(num_keys=0), "num_keys=0 must be an integer >= 1"),
    (dict(ema_decay=1.5), r"ema_decay=1.5 must be in \(0, 1\)"),
    (dict(task_labels=[["a", "b"], ["b", "c"]]), "label 'b' is in task 0 and task 1"),
    (dict(task_labels=[[]]), r"task_labels\[0\] must be a non-empty list"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DKVBConfig(**kwargs)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_any_encoder_with_last_hidden_state_round_trips(arch, tiny_encoder_dir, tmp_path):
    model = tiny_model(tiny_encoder_dir(arch), value_init="normal")
    enc = tokens(model)
    logits = model.eval()(**enc).logits
    assert logits.shape == (6, 3) and torch.isfinite(logits).all()
    model.save_pretrained(tmp_path / "m")
    for loader in (DKVBForSequenceClassification, AutoModelForSequenceClassification):
        again = loader.from_pretrained(tmp_path / "m")
        assert isinstance(again, DKVBForSequenceClassification) and not again.training
        assert torch.equal(again(**enc).logits, logits)


def test_saved_folder_is_small_and_safetensors_only(tiny_encoder_dir, tmp_path):
    model = tiny_model(tiny_encoder_dir("bert"))
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "model.safetensors")
    assert not any(k.startswith("encoder.") for k in saved)
    assert {"bottleneck.keys", "bottleneck.value_table", "bottleneck.keys_initialized"} <= set(saved)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*tmp"))
    assert json.loads((tmp_path / "config.json").read_text())["encoder_hidden_size"] == 24


def test_save_encoder_bundles_a_self_contained_folder(tiny_encoder_dir, tmp_path):
    model = tiny_model(tiny_encoder_dir("roberta"), value_init="normal")
    enc = tokens(model)
    logits = model.eval()(**enc).logits
    model.save_pretrained(tmp_path, save_encoder=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["encoder_name_or_path"] = "gone/missing-encoder"  # the bundled copy must be enough
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(again(**enc).logits, logits)


def test_only_values_and_decoder_are_trainable(tiny_encoder_dir):
    for decoder, expected in (("non_parametric", {"bottleneck.value_table"}),
                              ("mlp", {"bottleneck.value_table", "bottleneck.decoder.net.0.weight",
                                       "bottleneck.decoder.net.0.bias", "bottleneck.decoder.net.3.weight",
                                       "bottleneck.decoder.net.3.bias"})):
        model = tiny_model(tiny_encoder_dir("bert"), decoder_type=decoder, value_dim=6 if decoder == "mlp" else None)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith("bottleneck.") for n in trainable)
        if decoder == "non_parametric":
            assert trainable == expected
        assert model.trainable_parameters() == sum(p.numel() for n, p in model.named_parameters() if n in trainable)


def test_encoder_weights_stay_pretrained_and_in_eval(tiny_encoder_dir):
    folder = tiny_encoder_dir("bert")
    reference = load_encoder(folder).state_dict()
    model = tiny_model(folder)
    for name, tensor in model.encoder.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    model.train()
    assert model.training and not model.encoder.training  # no dropout in the frozen front


def test_one_step_changes_only_fetched_values_and_never_keys(tiny_encoder_dir):
    model = tiny_model(tiny_encoder_dir("bert")).train()
    enc = tokens(model, TEXTS[:2])
    keys = model.bottleneck.keys.clone()
    before = model.bottleneck.values.detach().clone()
    torch.optim.SGD(model.parameters(), lr=1.0).zero_grad()
    out = model(**enc, labels=torch.tensor([0, 2]))
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    idx = model.quantize(**enc)
    fetched = torch.zeros(model.bottleneck.num_codebooks, model.bottleneck.num_keys, dtype=torch.bool)
    for c in range(fetched.shape[0]):
        fetched[c, idx[..., c][idx[..., c] >= 0]] = True
    changed = (model.bottleneck.values.detach() != before).any(-1)
    assert changed.any() and not (changed & ~fetched).any()
    assert torch.equal(model.bottleneck.keys, keys)


def test_num_codebooks_that_does_not_divide_hidden_size(tiny_encoder_dir):
    with pytest.raises(ValueError, match=r"num_codebooks=5 .*24"):
        DKVBForSequenceClassification(DKVBConfig(encoder_name_or_path=str(tiny_encoder_dir("bert")),
                                                 num_codebooks=5, num_keys=4, num_labels=2))


def test_hidden_size_mismatch_with_a_saved_bottleneck_is_clear(tiny_encoder_dir, minilm_tokenizer, tmp_path):
    model = tiny_model(tiny_encoder_dir("bert"))
    model.save_pretrained(tmp_path)
    other = load_encoder(tiny_encoder_dir("bert"))
    other.config.hidden_size = 48  # pretend a wider encoder
    with pytest.raises(ValueError, match="hidden size 48.*built for 24"):
        DKVBForSequenceClassification.from_pretrained(tmp_path, encoder=other)


def test_init_keys_rejects_bad_texts_and_runs_once(tiny_encoder_dir):
    model = DKVBForSequenceClassification(DKVBConfig(encoder_name_or_path=str(tiny_encoder_dir("bert")),
                                                     num_codebooks=4, num_keys=8, num_labels=2))
    with pytest.raises(ValueError, match="empty"):
        model.init_keys([])
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        model.init_keys(["fine", None])
    with pytest.raises(RuntimeError, match="keys are not initialised"):
        model(**tokens(model, ["hello"]))
    model.init_keys(TEXTS)
    with pytest.raises(RuntimeError, match="already initialised"):
        model.init_keys(TEXTS)


def test_growing_label_set_keeps_old_logits(tiny_encoder_dir, tmp_path):
    model = tiny_model(tiny_encoder_dir("bert"), value_init="normal").eval()
    enc = tokens(model)
    before = model(**enc).logits
    model.add_labels(["d", "e"])
    after = model(**enc).logits
    assert after.shape == (6, 5) and torch.equal(after[:, :3], before)
    assert model.config.id2label[4] == "e" and model.config.label2id["d"] == 3
    with pytest.raises(ValueError, match="already exist"):
        model.add_labels(["a"])
    model.save_pretrained(tmp_path)
    assert torch.equal(DKVBForSequenceClassification.from_pretrained(tmp_path)(**enc).logits, after)


def test_multi_head_task_ids(tiny_encoder_dir, tmp_path):
    model = tiny_model(tiny_encoder_dir("distilbert"), task_labels=[["a", "b"], ["c", "d", "e"]],
                       value_init="normal").eval()
    assert model.num_heads == 2 and model.config.num_labels == 5
    enc = tokens(model, TEXTS[:4])
    head0, head1 = model(**enc, task_id=0).logits, model(**enc, task_id=1).logits
    assert head0.shape == (4, 2) and head1.shape == (4, 3)
    assert torch.equal(model(**enc).logits, torch.cat([head0, head1], 1))  # no task id: all heads
    mixed = model(**enc, task_id=torch.tensor([0, 1, 1, 0]), labels=torch.tensor([1, 2, 0, 0]))
    assert torch.equal(mixed.logits[0, :2], head0[0]) and torch.equal(mixed.logits[1], head1[1])
    assert mixed.logits[0, 2] == float("-inf") and torch.isfinite(mixed.loss)
    expected = (torch.nn.functional.cross_entropy(head0[[0, 3]], torch.tensor([1, 0]), reduction="sum")
                + torch.nn.functional.cross_entropy(head1[[1, 2]], torch.tensor([2, 0]), reduction="sum")) / 4
    assert torch.allclose(mixed.loss, expected)
    # training one head leaves the other untouched
    h0 = model.head(0).value_table.detach().clone()
    model.train()
    model(**enc, task_id=1, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert model.head(0).value_table.grad is None or not model.head(0).value_table.grad.any()
    new = model.add_task(["f", "g"])
    assert new == 2 and model.config.task_labels[-1] == ["f", "g"]
    assert torch.equal(model.head(0).value_table.detach(), h0)
    model.eval().save_pretrained(tmp_path)
    again = DKVBForSequenceClassification.from_pretrained(tmp_path)
    assert again.num_heads == 3 and torch.equal(again(**enc, task_id=1).logits, head1)
    with pytest.raises(ValueError, match="task_id=3 out of range"):
        again(**enc, task_id=3)


def test_pipeline_returns_label_names(tiny_encoder_dir, tmp_path):
    model = tiny_model(tiny_encoder_dir("mpnet"), value_init="normal")
    model.save_pretrained(tmp_path)
    clf = pipeline("text-classification", model=str(tmp_path))
    out = clf(["book a flight", "what is my balance"])
    enc = tokens(model, ["book a flight", "what is my balance"])
    expected = [model.config.id2label[i] for i in model.eval()(**enc).logits.argmax(1).tolist()]
    assert [o["label"] for o in out] == expected


# ------------------------------------------------------------------ order-free learning (partial_fit)
FIT_LABELS = ["travel", "bank", "music", "alarm", "weather", "bank", "travel", "home"] * 4


def test_partial_fit_adds_labels_on_the_fly_and_halves_equal_one_call(tiny_encoder_dir, tmp_path):
    folder = tiny_encoder_dir("bert")
    one = tiny_model(folder, id2label={0: "travel"}, ridge_features=32)
    two = tiny_model(folder, id2label={0: "travel"}, ridge_features=32)
    one.partial_fit(TEXTS, FIT_LABELS)
    two.partial_fit(TEXTS[16:], FIT_LABELS[16:]).partial_fit(TEXTS[:16], FIT_LABELS[:16])
    assert one.config.num_labels == 6 and set(one.config.label2id) == set(FIT_LABELS)
    # the halves came in another order, so label ids differ: compare by label name
    lo, lt = one(**tokens(one, TEXTS)).logits, two(**tokens(two, TEXTS)).logits
    order = [two.config.label2id[one.config.id2label[i]] for i in range(6)]
    torch.testing.assert_close(lt[:, order], lo, rtol=1e-4, atol=1e-4)
    assert [one.config.id2label[i] for i in lo.argmax(1).tolist()] == FIT_LABELS  # it learned the texts


def test_partial_fit_statistics_survive_save_and_load(tiny_encoder_dir, tmp_path):
    folder = tiny_encoder_dir("bert")
    model = tiny_model(folder, id2label={0: "travel"}, ridge_features=32)
    model.partial_fit(TEXTS[:16], FIT_LABELS[:16])
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    for m in (model, loaded):
        m.partial_fit(TEXTS[16:], FIT_LABELS[16:])
    torch.testing.assert_close(loaded(**tokens(loaded, TEXTS)).logits, model(**tokens(model, TEXTS)).logits,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, call, match", [
    (dict(values="sgd"), lambda m: m.partial_fit(TEXTS[:2], ["a", "b"]), "partial_fit needs an order-free value rule"),
    ({}, lambda m: m.partial_fit(TEXTS[:2], [0, 7]), "label 7 outside the head's classes 0 to 2"),
    ({}, lambda m: m.partial_fit(TEXTS[:2], ["a"]), "1 labels for 2 texts"),
    ({}, lambda m: m.partial_fit([], []), "no texts|empty"),
    ({}, lambda m: m.partial_fit(TEXTS[:2], ["a", 1]), "all names or all integer ids"),
])
def test_partial_fit_rejects_bad_input(kwargs, call, match, tiny_encoder_dir):
    model = tiny_model(tiny_encoder_dir("bert"), ridge_features=16, **kwargs)
    with pytest.raises(ValueError, match=match):
        call(model)


@pytest.mark.parametrize("kwargs, match", [
    (dict(values="bayes"), "unknown values 'bayes'; accepted: counts, counts\\+ridge, ridge, sgd"),
    (dict(smoothing=-1.0), "smoothing=-1.0 must be a finite number > 0"),
    (dict(ridge=0.0), "ridge=0.0 must be a finite number > 0"),
])
def test_config_rejects_bad_value_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DKVBConfig(**kwargs)
