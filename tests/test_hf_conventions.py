"""DKVBForSequenceClassification keeps the Hugging Face conventions (issue 17, item 6).

`from_pretrained` honours revision, cache_dir, token, dtype/torch_dtype and device_map where
they make sense and refuses the rest loudly; `save_pretrained(push_to_hub=True)` uploads (or
fails loudly); Trainer checkpoints hold no encoder weights and resume without warnings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification
from dkvb_nlp.encoders import EncoderNotFoundError

TEXTS = ["book a flight to paris", "what is my balance", "play some jazz music", "set an alarm for 7",
         "how is the weather tomorrow", "transfer money to my savings", "cancel my reservation",
         "turn the lights off in the kitchen"] * 4
LABELS = ["a", "b", "c", "a", "b", "c", "a", "b"] * 4


def tiny_model(folder, **kw) -> DKVBForSequenceClassification:
    cfg = dict(encoder_name_or_path=str(folder), num_codebooks=4, num_keys=16, id2label={0: "a", 1: "b", 2: "c"},
               key_init_batch_rows=64, ridge_features=32)
    cfg.update(kw)
    return DKVBForSequenceClassification(DKVBConfig(**cfg)).init_keys(TEXTS)


@pytest.fixture(scope="module")
def saved(tiny_encoder_dir, tmp_path_factory):
    """A trained tiny model, saved, and the logits it gives on TEXTS[:6]."""
    model = tiny_model(tiny_encoder_dir("bert")).partial_fit(TEXTS, LABELS).eval()
    folder = tmp_path_factory.mktemp("hf") / "m"
    model.save_pretrained(folder)
    return folder, logits_of(model)


def logits_of(model, texts=TEXTS[:6]) -> torch.Tensor:
    with torch.no_grad():
        return model(**model.tokenizer(texts, padding=True, return_tensors="pt")).logits


def back_dtypes(model) -> dict[str, torch.dtype]:
    return {k: v.dtype for k, v in model.state_dict().items() if not k.startswith("encoder.")}


def fake_hub_cache(cache, repo_id: str, revisions: dict[str, tuple]) -> None:
    """A hub cache as huggingface_hub lays it out: snapshots/<commit>/ and refs/<name> -> commit.
    `revisions` maps a commit to (source folder, ref names pointing to it)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for commit, (source, refs) in revisions.items():
        shutil.copytree(source, repo / "snapshots" / commit)
        for ref in refs:
            (repo / "refs" / ref).write_text(commit)


# ------------------------------------------------------------------ revision, cache_dir, token
def test_revision_with_a_local_folder_is_refused_rather_than_loading_the_folder(saved):
    folder, _ = saved
    with pytest.raises(ValueError, match=r"revision='v1\.0' cannot be honoured: .* is a local folder, which has "
                                         r"no revisions"):
        DKVBForSequenceClassification.from_pretrained(folder, revision="v1.0")
    with pytest.raises(ValueError, match="revision='v1.0' cannot be honoured"):
        AutoModelForSequenceClassification.from_pretrained(folder, revision="v1.0")


def test_revision_selects_the_hub_snapshot_offline_and_a_missing_one_is_refused(saved, tiny_encoder_dir, tmp_path):
    folder, logits = saved
    other = tiny_model(tiny_encoder_dir("bert"), value_init="normal").eval()  # different values: different logits
    other.save_pretrained(tmp_path / "other")
    main, v1 = "a" * 40, "b" * 40
    fake_hub_cache(tmp_path / "cache", "someone/dkvb-tiny",
                   {main: (folder, ["main"]), v1: (tmp_path / "other", ["v1"])})
    load = dict(cache_dir=tmp_path / "cache", local_files_only=True)

    assert torch.equal(logits_of(DKVBForSequenceClassification.from_pretrained("someone/dkvb-tiny", **load)), logits)
    tagged = DKVBForSequenceClassification.from_pretrained("someone/dkvb-tiny", revision="v1", **load)
    assert torch.equal(logits_of(tagged), logits_of(other)) and not torch.equal(logits_of(tagged), logits)
    by_commit = DKVBForSequenceClassification.from_pretrained("someone/dkvb-tiny", revision=main, **load)
    assert torch.equal(logits_of(by_commit), logits)
    # a revision the cache does not hold is refused offline, never replaced by main
    with pytest.raises(OSError, match=r"cannot find a DKVB model at 'someone/dkvb-tiny' at revision 'v2'"):
        DKVBForSequenceClassification.from_pretrained("someone/dkvb-tiny", revision="v2", **load)
    # and cache_dir is what found it: the default cache does not hold this repository
    with pytest.raises(OSError, match="cannot find a DKVB model at 'someone/dkvb-tiny'"):
        DKVBForSequenceClassification.from_pretrained("someone/dkvb-tiny", local_files_only=True)


def test_cache_dir_reaches_the_encoder(saved, tiny_encoder_dir, tmp_path):
    folder, logits = saved
    fake_hub_cache(tmp_path / "cache", "someone/tiny-encoder", {"c" * 40: (tiny_encoder_dir("bert"), ["main"])})
    moved = tmp_path / "m"
    shutil.copytree(folder, moved)
    config = json.loads((moved / "config.json").read_text())
    config["encoder_name_or_path"] = "someone/tiny-encoder"  # only in that cache
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderNotFoundError, match="someone/tiny-encoder"):
        DKVBForSequenceClassification.from_pretrained(moved, local_files_only=True)
    again = DKVBForSequenceClassification.from_pretrained(moved, local_files_only=True, cache_dir=tmp_path / "cache")
    assert torch.equal(logits_of(again), logits)


def test_token_and_cache_dir_reach_every_hub_download(saved, tiny_encoder_dir, tmp_path, monkeypatch):
    import huggingface_hub
    import transformers

    folder, _ = saved
    calls = {}
    real_model, real_tokenizer = transformers.AutoModel.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def snapshot(repo_id, **kw):
        calls["snapshot"] = kw
        shutil.copytree(folder, tmp_path / "snap")
        config = json.loads((tmp_path / "snap" / "config.json").read_text())
        config["encoder_name_or_path"] = "someone/tiny-encoder"
        (tmp_path / "snap" / "config.json").write_text(json.dumps(config))
        (tmp_path / "snap" / "tokenizer_config.json").unlink()  # so the tokenizer comes from the encoder's place
        return str(tmp_path / "snap")

    def encoder(source, **kw):
        calls["encoder"] = (source, kw)
        return real_model(tiny_encoder_dir("bert"))

    def tokenizer(source, **kw):
        calls["tokenizer"] = (source, kw)
        return real_tokenizer(tiny_encoder_dir("bert"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", encoder)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    hub = dict(token="hf_secret", cache_dir=str(tmp_path / "cache"))
    DKVBForSequenceClassification.from_pretrained("someone/dkvb-tiny", revision="v1", local_files_only=True, **hub)
    assert calls["snapshot"] == dict(revision="v1", local_files_only=True, **hub)
    for part in ("encoder", "tokenizer"):
        source, kw = calls[part]
        assert source == "someone/tiny-encoder" and kw["token"] == "hf_secret" and kw["cache_dir"] == hub["cache_dir"]


# ------------------------------------------------------------------ dtype
@pytest.mark.parametrize("kwargs, expected", [
    (dict(dtype=torch.bfloat16), torch.bfloat16),
    (dict(torch_dtype="float16"), torch.float16),
    (dict(dtype="auto"), torch.float32),
    (dict(dtype=torch.float32, torch_dtype=torch.float32), torch.float32),
])
def test_dtype_sets_the_frozen_encoder_and_the_back_keeps_float32_and_float64(saved, kwargs, expected):
    folder, logits = saved
    reference = DKVBForSequenceClassification.from_pretrained(folder)
    model = DKVBForSequenceClassification.from_pretrained(folder, **kwargs)
    assert {p.dtype for p in model.encoder.parameters()} == {expected}
    assert back_dtypes(model) == back_dtypes(reference)
    assert torch.float64 in back_dtypes(model).values() and torch.float32 in back_dtypes(model).values()
    out = logits_of(model)
    assert out.dtype == torch.float32 and out.shape == logits.shape and torch.isfinite(out).all()
    if expected == torch.float32:
        assert torch.equal(out, logits)
    # it keeps learning in its own precision: the statistics stay float64
    model.partial_fit(TEXTS[:8], LABELS[:8])
    assert back_dtypes(model) == back_dtypes(reference)


def test_the_dtype_a_model_was_loaded_with_is_kept_by_save_and_reload(saved, tmp_path):
    folder, _ = saved
    DKVBForSequenceClassification.from_pretrained(folder, dtype="bfloat16").save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    again = DKVBForSequenceClassification.from_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in again.encoder.parameters()} == {torch.bfloat16}
    assert again.bottleneck.value_table.dtype == torch.float32
    full = DKVBForSequenceClassification.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    assert {p.dtype for p in full.encoder.parameters()} == {torch.float32}
    assert torch.equal(logits_of(full), saved[1])  # the back was saved exactly


def test_dtype_through_the_auto_class(saved):
    folder, _ = saved
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in model.encoder.parameters()} == {torch.bfloat16}
    assert model.bottleneck.value_table.dtype == torch.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(dtype=torch.int8), r"dtype=torch\.int8 cannot be honoured; accepted: None or 'auto'"),
    (dict(dtype="half-ish"), r"dtype='half-ish' cannot be honoured; accepted"),
    (dict(dtype={"": torch.bfloat16}), r"cannot be honoured \(one dtype per sub-model"),
    (dict(dtype=torch.bfloat16, torch_dtype=torch.float16), "dtype=torch.bfloat16 and torch_dtype=torch.float16 "
                                                            "disagree"),
])
def test_dtypes_that_cannot_be_honoured_are_refused(saved, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DKVBForSequenceClassification.from_pretrained(saved[0], **kwargs)


def test_dtype_with_an_already_loaded_encoder_is_refused(saved):
    folder, _ = saved
    encoder = DKVBForSequenceClassification.from_pretrained(folder).encoder
    with pytest.raises(ValueError, match=r"dtype=torch\.bfloat16 cannot be honoured with encoder="):
        DKVBForSequenceClassification.from_pretrained(folder, encoder=encoder, dtype=torch.bfloat16)
    DKVBForSequenceClassification.from_pretrained(folder, encoder=encoder, dtype="auto")  # as it is: fine


# ------------------------------------------------------------------ device_map
@pytest.mark.parametrize("device_map", ["cpu", torch.device("cpu"), {"": "cpu"}, "auto"])
def test_device_map_places_the_whole_model_on_one_device(saved, device_map):
    folder, logits = saved
    model = DKVBForSequenceClassification.from_pretrained(folder, device_map=device_map)
    accelerator = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
    expected = accelerator.type if device_map == "auto" and accelerator is not None else "cpu"
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {expected}
    if expected == "cpu":
        assert torch.equal(logits_of(model), logits)


@pytest.mark.parametrize("device_map, match", [
    ("balanced", "device_map='balanced' cannot be honoured: it spreads a model over several devices"),
    ("sequential", "device_map='sequential' cannot be honoured"),
    ({"encoder": "cpu", "bottleneck": "cuda:1"}, "cannot be honoured: a DKVB model is not split over devices"),
    ("gpu-please", r"device_map='gpu-please' is not a device; accepted: one device for the whole model"),
    (-1, "device_map=-1 is not a device"),
])
def test_device_maps_that_cannot_be_honoured_are_refused(saved, device_map, match):
    with pytest.raises(ValueError, match=match):
        DKVBForSequenceClassification.from_pretrained(saved[0], device_map=device_map)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_clear_error(saved):
    with pytest.raises(ValueError, match="device_map='cuda': this machine has no CUDA device"):
        DKVBForSequenceClassification.from_pretrained(saved[0], device_map="cuda")


# ------------------------------------------------------------------ nothing silently dropped
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(frobnicate=True), TypeError, r"cannot honour frobnicate: not arguments it knows nor DKVBConfig attributes; "
                                       r"accepted: config, encoder, revision"),
    (dict(proxies={"https": "http://proxy:3128"}), TypeError, "cannot honour proxies=: .*HTTPS_PROXY"),
    (dict(use_auth_token="hf_x"), TypeError, "cannot honour use_auth_token=: it was renamed; give token="),
    (dict(quantization_config=object()), TypeError, "cannot honour quantization_config="),
    (dict(variant="fp16"), TypeError, "cannot honour variant="),
    (dict(use_safetensors=False), ValueError, "use_safetensors=False is not supported"),
    (dict(adapter_kwargs={"adapter_name": "x"}), ValueError, "DKVB models have no adapters"),
    (dict(revision=3), TypeError, "revision must be a branch, tag or commit name"),
    (dict(subfolder="nope"), OSError, "subfolder='nope' not found"),
])
def test_keywords_it_cannot_honour_are_refused(saved, kwargs, error, match):
    with pytest.raises(error, match=match):
        DKVBForSequenceClassification.from_pretrained(saved[0], **kwargs)


def test_extra_positional_arguments_are_refused(saved):
    with pytest.raises(TypeError, match="takes no positional arguments after the path, got 1"):
        DKVBForSequenceClassification.from_pretrained(saved[0], "config.json")


def test_config_attributes_override_the_saved_config_and_loading_info(saved):
    folder, logits = saved
    model, info = DKVBForSequenceClassification.from_pretrained(folder, max_seq_length=64, output_loading_info=True)
    assert model.config.max_seq_length == 64
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    assert torch.equal(logits_of(model), logits)


def test_subfolder_is_honoured(saved, tmp_path):
    shutil.copytree(saved[0], tmp_path / "outer" / "inner")
    model = DKVBForSequenceClassification.from_pretrained(tmp_path / "outer", subfolder="inner")
    assert torch.equal(logits_of(model), saved[1])


# ------------------------------------------------------------------ saving and the hub
def test_keys_to_ignore_on_save_are_exactly_the_encoder_and_none_are_saved(saved):
    folder, _ = saved
    from safetensors.torch import load_file

    model = DKVBForSequenceClassification.from_pretrained(folder)
    encoder_keys = {f"encoder.{k}" for k in model.encoder.state_dict()}
    assert encoder_keys and model._keys_to_ignore_on_save == encoder_keys
    saved_keys = set(load_file(folder / "model.safetensors"))
    assert saved_keys == set(model.state_dict()) - encoder_keys


class FakeHub:
    """Records the hub calls of an upload (HfApi.create_repo / create_commit)."""

    def __init__(self, monkeypatch):
        from huggingface_hub import HfApi, RepoUrl

        self.repos, self.commits = [], []

        def create_repo(api, repo_id, **kw):
            self.repos.append((repo_id, kw))
            return RepoUrl(f"https://huggingface.co/me/{repo_id.split('/')[-1]}")

        def create_commit(api, repo_id, operations, **kw):
            self.commits.append((repo_id, sorted(op.path_in_repo for op in operations), kw))

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)


def test_push_to_hub_uploads_the_saved_folder(saved, tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    model = DKVBForSequenceClassification.from_pretrained(saved[0])
    model.save_pretrained(tmp_path / "my-dkvb", push_to_hub=True, commit_message="first", private=True,
                          token="hf_secret")
    assert [(r, kw["private"], kw["token"]) for r, kw in hub.repos] == [("my-dkvb", True, "hf_secret")]
    [(repo_id, files, kw)] = hub.commits
    assert repo_id == "me/my-dkvb" and kw["commit_message"] == "first" and kw["token"] == "hf_secret"
    assert {"model.safetensors", "model.safetensors.sha256", "config.json", "tokenizer_config.json"} <= set(files)
    assert not any(f.startswith("encoder") for f in files)
    assert DKVBForSequenceClassification.from_pretrained(tmp_path / "my-dkvb")  # the local copy is whole


def test_push_to_hub_through_the_mixin(saved, monkeypatch):
    import transformers.utils.hub as hf_hub

    hub = FakeHub(monkeypatch)
    monkeypatch.setattr(hf_hub, "create_and_tag_model_card", lambda *a, **k: type("Card", (), {
        "save": lambda self, path: open(path, "w").write("card")})())
    DKVBForSequenceClassification.from_pretrained(saved[0]).push_to_hub("me/dkvb-tiny")
    [(repo_id, files, _)] = hub.commits
    assert repo_id == "me/dkvb-tiny" and {"model.safetensors", "config.json", "README.md"} <= set(files)


def test_push_to_hub_offline_fails_loudly_after_saving(saved, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = DKVBForSequenceClassification.from_pretrained(saved[0])
    with pytest.raises(OSError, match="offline"):
        model.save_pretrained(tmp_path / "m", push_to_hub=True)
    assert torch.equal(logits_of(DKVBForSequenceClassification.from_pretrained(tmp_path / "m")), saved[1])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(commit_message="x"), TypeError, r"commit_message only apply when uploading: add push_to_hub=True"),
    (dict(token="hf_x"), TypeError, r"token only apply when uploading"),
    (dict(safe_serialization=False), ValueError, "safe_serialization=False is not supported"),
    (dict(variant="fp16"), ValueError, "variant='fp16' is not supported"),
    (dict(max_shard_size="1KB"), ValueError, r"max_shard_size='1KB': this model's back is \d+ bytes"),
    (dict(max_shard_size="lots"), ValueError, "max_shard_size='lots' is not a size"),
    (dict(distributed_checkpoint=True), ValueError, "distributed_checkpoint=True is not supported"),
    (dict(frobnicate=1), TypeError, "save_pretrained got keyword arguments it cannot honour: frobnicate"),
])
def test_save_keywords_it_cannot_honour_are_refused(saved, tmp_path, kwargs, error, match):
    model = DKVBForSequenceClassification.from_pretrained(saved[0])
    with pytest.raises(error, match=match):
        model.save_pretrained(tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists()  # refused before writing anything


def test_save_keywords_that_are_honoured_or_have_nothing_to_do(saved, tmp_path):
    model = DKVBForSequenceClassification.from_pretrained(saved[0])
    model.save_pretrained(tmp_path / "m", max_shard_size="50GB", safe_serialization=True, save_peft_format=True,
                          save_original_format=True)
    assert torch.equal(logits_of(DKVBForSequenceClassification.from_pretrained(tmp_path / "m")), saved[1])


# ------------------------------------------------------------------ Trainer checkpoints
@contextlib.contextmanager
def no_warnings():
    """Every Python warning and every WARNING record of the transformers/dkvb_nlp loggers (transformers'
    logger does not propagate to the root, so caplog alone would miss it)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(logging.WARNING)
    loggers = [logging.getLogger("transformers"), logging.getLogger("dkvb_nlp")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # whatever TRANSFORMERS_VERBOSITY says, warnings must reach the handler
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught] + [r.getMessage() for r in records]
    assert not messages, messages


def test_trainer_checkpoints_hold_no_encoder_weights_and_resume_without_warnings(tiny_encoder_dir, tmp_path):
    from datasets import Dataset
    from safetensors.torch import load_file
    from transformers import Trainer, TrainingArguments

    config = dict(values="sgd", value_init="normal")
    model = tiny_model(tiny_encoder_dir("bert"), **config)
    tok = model.tokenizer
    data = Dataset.from_dict({"text": TEXTS, "label": [ord(x) - ord("a") for x in LABELS]})
    data = data.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"])

    def args(**kw):
        return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8,
                                 learning_rate=0.5, save_strategy="steps", save_steps=1, use_cpu=True,
                                 report_to="none", logging_strategy="no", disable_tqdm=True, seed=0, **kw)

    with no_warnings():
        Trainer(model=model, args=args(), train_dataset=data, processing_class=tok).train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    weights = load_file(checkpoint / "model.safetensors")
    encoder_keys = {f"encoder.{k}" for k in model.encoder.state_dict()}
    assert set(weights) == set(model.state_dict()) - encoder_keys
    encoder_bytes = sum(v.numel() * v.element_size() for v in model.encoder.state_dict().values())
    assert (checkpoint / "model.safetensors").stat().st_size < encoder_bytes

    # A fresh model (keys not even initialised) resumes from the checkpoint: same back, no warning.
    fresh = DKVBForSequenceClassification(DKVBConfig.from_pretrained(checkpoint))
    with no_warnings():
        Trainer(model=fresh, args=args(), train_dataset=data, processing_class=tok).train(
            resume_from_checkpoint=str(checkpoint))
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    # and the checkpoint is a model folder that from_pretrained loads
    assert torch.equal(logits_of(DKVBForSequenceClassification.from_pretrained(checkpoint)), logits_of(model.eval()))
