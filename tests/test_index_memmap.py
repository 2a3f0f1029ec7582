"""DKVB's key indices in memory-mapped temporary files: same values, compact dtype, nothing left."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from dkvb_nlp.bottleneck import KeyValueBottleneck, ValueSGD
from dkvb_nlp.engine.feature_cache import CachedFeatures
from dkvb_nlp.bottleneck.index_store import IndexRows, index_array, index_dtype, key_init_blocks, quantize_cached

DIM = 12


def pad_tokens(indices: list[torch.Tensor]) -> torch.Tensor:
    """IndexRows' reference: the (N_i, [T_i,] C) parts concatenated along N, token axes padded with -1."""
    if indices[0].dim() == 2:
        return torch.cat(indices)
    t = max(i.shape[1] for i in indices)
    return torch.cat([torch.nn.functional.pad(i, (0, 0, 0, t - i.shape[1]), value=-1) for i in indices])


def make_features(folder, n: int = 37, seed: int = 0, max_tokens: int = 9) -> CachedFeatures:
    """A feature-cache-format entry of n texts (1 to max_tokens tokens), written as .npy memmaps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_tokens + 1, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    states = np.lib.format.open_memmap(folder / "states.npy", mode="w+", dtype=np.float16,
                                       shape=(int(offsets[-1]), DIM))
    centres = rng.normal(size=(5, DIM))
    states[:] = centres[rng.integers(5, size=len(states))] + 0.3 * rng.normal(size=(len(states), DIM))
    pooled = np.lib.format.open_memmap(folder / "pooled.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    pooled[:] = np.add.reduceat(states.astype(np.float32), offsets[:-1]) / lengths[:, None]
    states.flush()
    pooled.flush()
    return CachedFeatures(np.load(folder / "states.npy", mmap_mode="r"), offsets,
                          np.load(folder / "pooled.npy", mmap_mode="r"), "synthetic")


def bottleneck(feats: CachedFeatures, pooling: str, num_keys: int = 16) -> KeyValueBottleneck:
    model = KeyValueBottleneck(DIM, 3, num_keys, num_classes=4, pooling=pooling, chunk_size=16)
    blocks = list(key_init_blocks([feats], pooling, batch_rows=32, seed=0))
    return model.init_keys(blocks)


def reference(model: KeyValueBottleneck, feats: CachedFeatures) -> torch.Tensor:
    """The indices through the bottleneck's own padded-batch path, all texts at once."""
    states, mask = feats.padded(range(len(feats)))
    return model.quantize(states, mask)


@pytest.mark.parametrize("pooling", ["mean_after", "mean_before", "cls"])
def test_memmap_indices_equal_the_in_memory_ones_and_the_reference(pooling, tmp_path):
    feats = make_features(tmp_path / "entry")
    model = bottleneck(feats, pooling)
    folder = tmp_path / "indices"
    mapped = quantize_cached(model, feats, batch_texts=5, folder=folder)
    in_memory = quantize_cached(model, feats, batch_texts=5)
    assert mapped.dtype == in_memory.dtype == torch.int16
    assert torch.equal(mapped, in_memory)
    assert torch.equal(mapped.long(), reference(model, feats))
    assert torch.equal(quantize_cached(model, feats, folder=folder, dtype=np.int32), in_memory.int())
    assert list(folder.iterdir()) == []  # the temporary files have no name: nothing left behind
    del mapped
    assert list(folder.iterdir()) == []


def test_the_index_dtype_is_the_smallest_that_holds_the_keys_and_padding(tmp_path):
    assert index_dtype(16) == index_dtype(32767) == np.int16
    assert index_dtype(32768) == index_dtype(100_000) == np.int32
    feats = make_features(tmp_path / "entry", n=9)
    model = bottleneck(feats, "mean_after", num_keys=16)
    model.num_keys = 40_000  # only the dtype choice reads it
    assert quantize_cached(model, feats, folder=tmp_path / "i").dtype == torch.int32


def test_index_array_is_a_file_backed_map_that_leaves_no_file(tmp_path):
    arr = index_array((4, 3, 2), np.int16, tmp_path / "i")
    assert isinstance(arr, np.memmap) and arr.dtype == np.int16 and arr.shape == (4, 3, 2)
    arr[:] = -1
    assert int(torch.from_numpy(arr).sum()) == -24
    assert list((tmp_path / "i").iterdir()) == []
    assert not isinstance(index_array((0, 3, 2), np.int16, tmp_path / "i"), np.memmap)  # empty: in memory
    assert not isinstance(index_array((4, 2), np.int16, None), np.memmap)


def test_index_rows_in_value_sgd_match_value_sgd_on_the_concatenated_indices(tmp_path):
    model = bottleneck(make_features(tmp_path / "keys"), "mean_after")
    parts = [quantize_cached(model, make_features(tmp_path / f"e{seed}", n=n, seed=seed, max_tokens=t),
                             folder=tmp_path / "i") for seed, n, t in ((1, 23, 9), (2, 17, 4), (3, 12, 6))]
    assert [p.shape[1] for p in parts] == [9, 4, 6]  # token axes padded to the longest
    joined = pad_tokens([p.int() for p in parts])
    rows = IndexRows(parts)
    batch = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:19]
    assert torch.equal(rows[batch], joined[batch].long())
    labels = torch.randint(4, (len(rows),), generator=torch.Generator().manual_seed(1))
    for length_free in (True, False):
        a, b = KeyValueBottleneck(DIM, 3, 16, num_classes=4), KeyValueBottleneck(DIM, 3, 16, num_classes=4)
        sgd_a = ValueSGD(a, lr=0.5, length_free=length_free)
        sgd_b = ValueSGD(b, lr=0.5, length_free=length_free)
        ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for _ in range(3):
            loss_a = sgd_a.epoch(joined, labels, batch_size=8, generator=ga)
            loss_b = sgd_b.epoch(rows, labels, batch_size=8, generator=gb)
            assert loss_a == loss_b
        assert torch.equal(a.value_table, b.value_table)
    with pytest.raises(ValueError, match="labels"):
        ValueSGD(a, lr=0.5).epoch(rows, labels[:-1])


# ------------------------------------------------------------------ the strategy end to end

CLASSES = ["alarm", "balance", "bill_due", "calories"]


@pytest.fixture(scope="module")
def tiny_run(tiny_encoder_dir, minilm_tokenizer, clinc_rows, tmp_path_factory):
    from dkvb_nlp.data import build_scenario
    from dkvb_nlp.encoders import load_encoder
    from dkvb_nlp.engine.context import RunContext
    from dkvb_nlp.engine.feature_cache import FeatureCache

    def subset(rows, per_class):
        kept, count = [], {}
        for r in rows:
            if r["label"] in CLASSES and count.get(r["label"], 0) < per_class:
                count[r["label"]] = count.get(r["label"], 0) + 1
                kept.append(r)
        return Dataset.from_dict({"text": [r["text"] for r in kept], "label": [r["label"] for r in kept]})

    data = DatasetDict({"train": subset(clinc_rows["train"], 12), "test": subset(clinc_rows["test"], 4)})
    folder = tiny_encoder_dir("bert")
    cache = FeatureCache(load_encoder(folder), minilm_tokenizer, tmp_path_factory.mktemp("index-cache"),
                         autocast="off", batch_size=32, progress=False)
    stream = build_scenario("class_il", dataset=data, classes_per_task=2)
    return RunContext(stream, cache, seed=0, encoder_name=str(folder), progress=False)


@pytest.mark.parametrize("method", ["dkvb", "dkvb_joint"])
def test_dkvb_trains_from_memory_mapped_indices(method, tiny_run):
    from dkvb_nlp.strategies import STRATEGIES

    ctx = tiny_run
    strategy = STRATEGIES.get(method)(ctx, {"num_codebooks": 4, "num_keys": 64, "epochs": 5,
                                            "key_init_batch_rows": 128})
    strategy.setup()
    for t in range(ctx.num_tasks):
        strategy.learn(t)
    idx = strategy.indices(ctx.split(0, "train"))
    assert idx.dtype == torch.int16 and idx.dim() == 3
    train = ctx.split(ctx.num_tasks - 1, "train")
    accuracy = (strategy.logits(train).argmax(1).numpy() == train.labels).mean()
    assert accuracy > 0.8  # the values fit what they were trained on
    # The cache folder holds only complete cache entries: the index files have no name.
    for entry in ctx.cache.cache_dir.iterdir():
        if entry.name == ".locks":  # the entries' build locks
            continue
        assert (entry / "meta.json").is_file(), entry
