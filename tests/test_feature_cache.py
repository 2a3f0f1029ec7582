"""The feature cache: content-keyed, reused, memory-mapped, and rebuilt when corrupt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dkvb_nlp.encoders import iter_encoded, load_encoder
from dkvb_nlp.engine.feature_cache import FeatureCache

TEXTS = ["first text here", "a second, somewhat longer text to encode", "third", "the fourth text"]


@pytest.fixture()
def cache(tiny_encoder_dir, minilm_tokenizer, tmp_path):
    enc = load_encoder(tiny_encoder_dir("bert"))
    return FeatureCache(enc, minilm_tokenizer, tmp_path / "cache", autocast="off", batch_size=2, progress=False)


def test_states_match_direct_encoding_and_are_reused(cache, minilm_tokenizer):
    feats = cache.get(TEXTS)
    assert (cache.hits, cache.misses) == (0, 1)
    assert isinstance(feats.states, np.memmap) and feats.states.dtype == np.float16
    for batch in iter_encoded(cache.encoder, minilm_tokenizer, TEXTS, autocast="off"):
        for j, i in enumerate(batch.positions.tolist()):
            direct = batch.states[j][batch.mask[j]]
            cached = torch.from_numpy(np.asarray(feats.states[feats.offsets[i]:feats.offsets[i + 1]], np.float32))
            assert torch.allclose(cached, direct, atol=2e-3)
            assert torch.allclose(torch.from_numpy(np.array(feats.pooled[i])), direct.mean(0), atol=1e-5)
    again = cache.get(TEXTS)
    assert (cache.hits, cache.misses) == (1, 1) and again.key == feats.key
    assert cache.key(TEXTS[:3]) != feats.key and cache.key(TEXTS, TEXTS) != feats.key


def test_corrupt_entry_is_detected_and_rebuilt(cache):
    feats = cache.get(TEXTS)
    path = cache.cache_dir / feats.key / "states.npy"
    expected = np.array(feats.states)
    del feats
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0xFF  # flip bits inside the data
    path.write_bytes(bytes(raw))
    rebuilt = cache.get(TEXTS)
    assert cache.misses == 2  # not trusted: encoded again
    np.testing.assert_array_equal(np.asarray(rebuilt.states), expected)


def test_no_half_written_entry_is_ever_used(cache):
    feats = cache.get(TEXTS)
    meta = cache.cache_dir / feats.key / "meta.json"
    meta.unlink()  # as if killed before the entry was complete
    cache.get(TEXTS)
    assert cache.misses == 2 and meta.is_file()
    assert not list(cache.cache_dir.glob("*.building"))
