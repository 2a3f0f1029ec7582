"""The feature cache: content-keyed, reused, memory-mapped, and rebuilt when corrupt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dkvb_nlp.encoders import iter_encoded, load_encoder
from dkvb_nlp.engine.feature_cache import FeatureCache, TextPool

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


POOL = TEXTS + ["a fifth one", "and the sixth, the last of the pool"]


def test_texts_cut_from_a_pool_are_its_rows_and_every_order_of_it_shares_one_encoding(cache):
    part = [POOL[5], POOL[1], POOL[1], POOL[3]]  # any order, repeats included
    cut = cache.get(part, pool=TextPool(POOL))
    assert cache.misses == 2  # the pool, then the cut
    whole = cache.get(sorted(set(POOL)))  # the pool entry itself: distinct texts, sorted
    assert cache.hits == 1
    row = {t: i for i, t in enumerate(sorted(set(POOL)))}
    for j, text in enumerate(part):
        i = row[text]
        np.testing.assert_array_equal(np.asarray(cut.states[cut.offsets[j]:cut.offsets[j + 1]]),
                                      np.asarray(whole.states[whole.offsets[i]:whole.offsets[i + 1]]))
        np.testing.assert_array_equal(cut.pooled[j], whole.pooled[i])
    meta = (cache.cache_dir / cut.key / "meta.json").read_text()
    assert whole.key in meta
    # Another task of the same pool in another order: no encoding, only a cut.
    cache.get([POOL[0], POOL[2]], pool=TextPool(list(reversed(POOL)) + [POOL[0]]))
    assert cache.misses == 3 and cache.hits == 2
    again = cache.get(part, pool=TextPool(POOL))
    assert again.key == cut.key and cache.misses == 3
    assert cache.key(part) != cut.key  # the same texts encoded on their own are another entry


def test_a_cut_is_checksummed_and_rebuilt_when_corrupt(cache):
    cut = cache.get(TEXTS[:2], pool=TextPool(POOL))
    expected = np.array(cut.states)
    path = cache.cache_dir / cut.key / "states.npy"
    del cut
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(np.asarray(cache.get(TEXTS[:2], pool=TextPool(POOL)).states), expected)
    assert cache.misses == 3  # the pool was intact: only the cut was made again


def test_a_text_outside_its_pool_or_a_pairs_mismatch_is_refused(cache):
    with pytest.raises(ValueError, match=r"text 1 \('not in the pool'\) is not in the pool"):
        cache.get([TEXTS[0], "not in the pool"], pool=TextPool(POOL))
    with pytest.raises(ValueError, match="both have text pairs or both have none"):
        cache.get(TEXTS[:2], TEXTS[:2], pool=TextPool(POOL))
    with pytest.raises(ValueError, match="3 pool text_pairs for 6 pool texts"):
        cache.get(TEXTS[:2], TEXTS[:2], pool=TextPool(POOL, POOL[:3]))


def test_a_second_job_waits_for_the_entry_another_is_building_then_reuses_it(cache, tiny_encoder_dir,
                                                                                minilm_tokenizer):
    import fcntl
    import threading

    key = cache.key(TEXTS)
    lock_path = cache.cache_dir / ".locks" / key
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    other = FeatureCache(load_encoder(tiny_encoder_dir("bert")), minilm_tokenizer, cache.cache_dir, autocast="off",
                         batch_size=2, progress=False)
    got = {}
    with open(lock_path, "a+") as held:  # another job is building this entry
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: got.setdefault("feats", other.get(TEXTS)))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive(), "the second job did not wait for the lock"
        assert not (cache.cache_dir / key).exists() and not list(cache.cache_dir.glob("*.building"))
        first = cache._entry_locked(key, lambda final, state: cache._build(TEXTS, None, final, state),
                                    __import__("dkvb_nlp.engine.distributed", fromlist=["x"]).process_state())
    waiter.join(timeout=60)
    assert not waiter.is_alive() and (other.hits, other.misses) == (1, 0)  # it loaded the first job's entry
    np.testing.assert_array_equal(np.asarray(got["feats"].states), np.asarray(first.states))
