"""The bottleneck core: search, quantize, pooling, key init, freezing, locality, growth, I/O."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dkvb_nlp import KeyValueBottleneck
from dkvb_nlp.bottleneck import SEARCHES
from dkvb_nlp.bottleneck.native import load_kernel, unavailable_reason
from dkvb_nlp.bottleneck.search import faiss_available


def clustered(n_clusters=16, per=40, dim=24, seed=0, spread=0.05):
    """Well-separated Gaussian clusters: (n_clusters * per, dim) and the centres."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=gen) * 3
    x = centres.repeat_interleave(per, 0) + spread * torch.randn(n_clusters * per, dim, generator=gen)
    return x[torch.randperm(len(x), generator=gen)], centres  # shuffled, as init data is


def ready(dim=24, c=4, k=32, classes=3, data=None, **kw):
    """A bottleneck with keys initialised on `data` (clustered by default)."""
    b = KeyValueBottleneck(dim, c, k, num_classes=classes, **kw)
    x = clustered(dim=dim)[0] if data is None else data
    b.init_keys([x[i : i + 128] for i in range(0, len(x), 128)], epochs=3)
    return b


# ---------------------------------------------------------------- nearest-key search
BACKENDS = [name for name in SEARCHES if name != "faiss" or faiss_available()]
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    name == "avx2" and load_kernel() is None, reason=f"fused kernel unavailable: {unavailable_reason()}"))
    for name in BACKENDS]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,c,k,dk", [(5, 3, 7, 2), (1000, 8, 300, 12), (257, 2, 4096, 14)])
def test_search_equals_float64_brute_force(backend, n, c, k, dk):
    gen = torch.Generator().manual_seed(n + k)
    heads, keys = torch.randn(n, c, dk, generator=gen), torch.randn(c, k, dk, generator=gen)
    dists, index = SEARCHES.get(backend)(heads, keys)
    exact = ((heads.double().unsqueeze(2) - keys.double().unsqueeze(0)) ** 2).sum(-1)  # (n, c, k)
    best = exact.min(-1)
    chosen = exact.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    # The chosen key is a nearest one in float64 (a different index only on float32 ties).
    assert torch.allclose(chosen, best.values, rtol=1e-5, atol=1e-5)
    assert (index == best.indices).float().mean() > 0.999
    assert torch.allclose(dists.double(), best.values, rtol=1e-3, atol=1e-3)
    assert index.dtype == torch.int64 and index.shape == (n, c)


def test_torch_search_chunks_bound_memory(monkeypatch):
    import dkvb_nlp.bottleneck.search as search

    monkeypatch.setattr(search, "TORCH_BLOCK_ELEMENTS", 3 * 50 * 7)  # forces chunks of 7 rows
    gen = torch.Generator().manual_seed(1)
    heads, keys = torch.randn(100, 3, 4, generator=gen), torch.randn(3, 50, 4, generator=gen)
    _, chunked = search.torch_search(heads, keys)
    monkeypatch.setattr(search, "TORCH_BLOCK_ELEMENTS", 10**9)
    _, whole = search.torch_search(heads, keys)
    assert torch.equal(chunked, whole)


# ---------------------------------------------------------------- quantize and pooling
def test_quantize_shapes_and_padding():
    b = ready()
    x = torch.randn(5, 7, 24)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[1, 3:] = False
    idx = b.quantize(x, mask)
    assert idx.shape == (5, 7, 4) and idx.dtype == torch.int64
    assert (idx[1, 3:] == -1).all() and (idx[mask] >= 0).all()
    assert b.quantize(x[:, 0]).shape == (5, 4)
    assert torch.equal(b.quantize(x[:, 0]), idx[:, 0])


@pytest.mark.parametrize("pooling", ["mean_before", "cls"])
def test_pooling_before_quantizes_one_vector(pooling):
    b = ready(pooling=pooling)
    x = torch.randn(5, 7, 24)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[:, 4:] = False
    idx = b.quantize(x, mask)
    assert idx.shape == (5, 4)
    pooled = x[:, :4].mean(1) if pooling == "mean_before" else x[:, 0]
    ref = KeyValueBottleneck(24, 4, 32, num_classes=3)
    ref.load_state_dict(b.state_dict())
    assert torch.equal(idx, ref.quantize(pooled))


def test_masked_mean_after_ignores_padding():
    b = ready(value_init="normal", value_init_std=1.0)
    x = torch.randn(4, 6, 24)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, 2:] = False
    mask[3, 5:] = False
    logits = b(x, mask)
    x2 = x.clone()
    x2[~mask] = 1e3 * torch.randn(int((~mask).sum()), 24)  # garbage in padded positions
    assert torch.equal(logits, b(x2, mask))
    # equals the hand-written mean over valid (token, codebook) values
    idx = b.quantize(x, mask)
    for i in range(4):
        fetched = torch.stack([b.values[c, idx[i, t, c]] for t in range(6) if mask[i, t] for c in range(4)])
        assert torch.allclose(logits[i], fetched.mean(0), atol=1e-6)


def test_forward_from_indices_equals_forward_from_features():
    b = ready(value_init="normal")
    x = torch.randn(8, 5, 24)
    mask = torch.rand(8, 5) > 0.3
    mask[:, 0] = True
    assert torch.equal(b(x, mask), b(indices=b.quantize(x, mask)))


def test_random_projection_split_is_seeded_buffer():
    b1 = KeyValueBottleneck(24, 5, 16, num_classes=2, split="random_projection", key_dim=3, seed=7)
    b2 = KeyValueBottleneck(24, 5, 16, num_classes=2, split="random_projection", key_dim=3, seed=7)
    proj = b1.splitter.projection
    assert proj.shape == (5, 24, 3) and not proj.requires_grad
    assert torch.equal(proj, b2.splitter.projection)
    assert "splitter.projection" in b1.state_dict()
    assert b1.heads(torch.randn(9, 24)).shape == (9, 5, 3)


def test_segment_split_is_contiguous_chunks():
    b = KeyValueBottleneck(12, 3, 8, num_classes=2)
    x = torch.arange(24.0).view(2, 12)
    assert torch.equal(b.heads(x)[1, 2], x[1, 8:12])


# ---------------------------------------------------------------- key initialisation
@pytest.mark.parametrize("backend", ["ema", "vector_quantize_pytorch"])
def test_init_covers_clustered_data(backend):
    x, centres = clustered(n_clusters=16, per=40, dim=24)
    b = KeyValueBottleneck(24, 4, 32, num_classes=2)
    b.init_keys([x[i : i + 160] for i in range(0, len(x), 160)], epochs=5, backend=backend)
    idx = b.quantize(x)
    for c in range(4):
        assert idx[:, c].unique().numel() >= 16, f"codebook {c} collapsed"
    assert b.shift_score(x) < 0.5
    if backend == "ema":
        # every cluster centre has a key close to it in every codebook (spread is 0.05 per dim)
        heads = b.heads(centres)
        nearest = ((heads.unsqueeze(2) - b.keys.unsqueeze(0)) ** 2).sum(-1).min(-1).values.sqrt()
        assert nearest.max() < 0.5, nearest.max()


def test_ema_and_reference_backend_agree_on_quality():
    x, _ = clustered(n_clusters=24, per=30, dim=24, spread=0.3)
    scores = {}
    for backend in ("ema", "vector_quantize_pytorch"):
        b = KeyValueBottleneck(24, 4, 32, num_classes=2)
        b.init_keys([x[i : i + 180] for i in range(0, len(x), 180)], epochs=8, backend=backend)
        scores[backend] = b.shift_score(x)
    assert scores["ema"] < 1.25 * scores["vector_quantize_pytorch"], scores


def test_first_batch_smaller_than_codebook_restarts_duplicates():
    x, _ = clustered(n_clusters=16, per=40, dim=24)
    b = KeyValueBottleneck(24, 2, 64, num_classes=2)
    with pytest.warns(UserWarning, match="first batch has 20 vectors for 64 keys"):
        b.init_keys([x[:20], x], epochs=4)
    assert b.quantize(x)[:, 0].unique().numel() >= 16


def test_init_keys_accepts_masked_token_batches():
    b = KeyValueBottleneck(24, 4, 8, num_classes=2)
    x = torch.randn(6, 5, 24)
    mask = torch.zeros(6, 5, dtype=torch.bool)
    mask[:, :2] = True
    x[~mask] = 1e6  # padding must never become a key
    b.init_keys([(x, mask)], epochs=2)
    assert b.keys.abs().max() < 100


# ---------------------------------------------------------------- freezing and locality
def test_keys_are_frozen_buffers():
    b = ready()
    names = {n for n, _ in b.named_parameters()}
    assert names == {"value_table"}
    assert "keys" in dict(b.named_buffers())
    with pytest.raises(RuntimeError, match="already initialised"):
        b.init_keys([torch.randn(10, 24)])


@pytest.mark.parametrize("sparse", [False, True])
def test_one_step_changes_exactly_the_fetched_rows(sparse):
    b = ready(sparse=sparse)
    keys_before = b.keys.clone()
    x = torch.randn(6, 5, 24)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[2, 3:] = False
    idx = b.quantize(x, mask)
    opt = torch.optim.SGD(b.parameters(), lr=1.0)
    before = b.value_table.detach().clone()
    F.cross_entropy(b(indices=idx), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    opt.step()
    changed = (b.value_table.detach() != before).any(1)
    fetched = torch.zeros_like(changed)
    fetched[(idx + b.row_offset)[idx >= 0]] = True
    assert torch.equal(changed, fetched)
    assert torch.equal(b.keys, keys_before)


# ---------------------------------------------------------------- growth
@pytest.mark.parametrize("decoder", ["non_parametric", "linear", "mlp"])
def test_add_classes_keeps_existing_knowledge(decoder):
    value_dim = None if decoder == "non_parametric" else 6
    b = ready(decoder=decoder, value_dim=value_dim, value_init="normal", value_init_std=0.5)
    x = torch.randn(10, 24)
    old_logits = b(x)
    old_values = b.values.detach().clone()
    b.add_classes(2)
    assert b.num_classes == 5
    new_logits = b(x)
    assert new_logits.shape == (10, 5)
    assert torch.allclose(new_logits[:, :3], old_logits, atol=1e-6)  # same weights, new BLAS blocking
    assert torch.equal(b.values[..., : old_values.shape[-1]], old_values)
    if decoder == "non_parametric":
        assert b.value_dim == 5
    else:
        assert b.value_dim == 6 and torch.equal(new_logits[:, 3:], b.decoder.out.bias[3:].expand(10, 2))
    # the new classes can be learned
    opt = torch.optim.SGD(b.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(b(x), torch.full((10,), 4)).backward()
        opt.step()
    assert (b(x).argmax(1) == 4).all()


# ---------------------------------------------------------------- decoders
def test_decoders_shapes_and_non_parametric_identity():
    b = ready(value_init="normal")
    idx = b.quantize(torch.randn(4, 24))
    assert torch.equal(b(indices=idx), b.pool_values(idx))
    for decoder in ("linear", "mlp"):
        d = ready(decoder=decoder, value_dim=8, classes=5)
        assert d(torch.randn(4, 24)).shape == (4, 5)
        assert d.trainable_parameters() > d.value_table.numel()


# ---------------------------------------------------------------- inspection
def test_usage_counts_and_prune_predict_the_same():
    x, _ = clustered(n_clusters=8, per=20, dim=24)
    far = 10 + torch.randn(100, 24, generator=torch.Generator().manual_seed(3))
    b = KeyValueBottleneck(24, 4, 64, num_classes=3, value_init="normal")
    b.init_keys([torch.cat([x[:60], far])])  # keys placed on `far` stay unused by x
    idx = b.quantize(x)
    usage = b.usage_counts(idx)
    assert usage.shape == (4, 64) and usage.sum() == idx.numel()
    assert int((usage > 0).sum(1).max()) < 64
    small = b.prune(usage)
    assert small.num_keys == int((usage > 0).sum(1).max()) < b.num_keys
    assert small.value_table.numel() < b.value_table.numel()
    assert torch.equal(small(x), b(x))


def test_shift_score_grows_under_shift():
    x, _ = clustered(n_clusters=16, per=40, dim=24)
    b = ready(data=x)
    assert b.shift_score(x + 3.0) > 5 * b.shift_score(x)


# ---------------------------------------------------------------- saving
def test_state_dict_round_trip_through_safetensors(tmp_path):
    b = ready(split="random_projection", key_dim=5, decoder="mlp", value_dim=4, value_init="normal")
    path = tmp_path / "bottleneck.safetensors"
    save_file(b.state_dict(), str(path))
    restored = KeyValueBottleneck(**b.config)
    restored.load_state_dict(load_file(str(path)))
    x = torch.randn(7, 3, 24)
    assert bool(restored.keys_initialized)
    assert torch.equal(restored(x), b(x))
    assert torch.equal(restored.quantize(x), b.quantize(x))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=384, num_codebooks=5, num_keys=8, num_classes=2), r"num_codebooks=5 does not divide hidden size 384; use one of 1, 2, 3, 4, 6, 8, 12"),
        (dict(dim=24, num_codebooks=4, num_keys=0, num_classes=2), r"num_keys=0 must be an integer >= 1"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, split="pca"), r"unknown split 'pca'; accepted: random_projection, segment"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, pooling="max"), r"unknown pooling 'max'; accepted: cls, mean_after, mean_before"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, decoder="tree"), r"unknown decoder 'tree'"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, search="annoy"), r"unknown search backend 'annoy'"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, value_init="ones"), r"unknown value_init 'ones'"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, split="random_projection"), r"needs key_dim >= 1"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=2, key_dim=5), r"key_dim=5 disagrees"),
        (dict(dim=24, num_codebooks=4, num_keys=8, num_classes=3, value_dim=4), r"value_dim == num_classes"),
        (dict(dim=24, num_codebooks=4, num_keys=8), r"give num_classes"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KeyValueBottleneck(**kwargs)


def test_bad_inputs_name_the_problem():
    fresh = KeyValueBottleneck(24, 4, 8, num_classes=2)
    with pytest.raises(RuntimeError, match="not initialised"):
        fresh.quantize(torch.randn(3, 24))
    b = ready()
    with pytest.raises(ValueError, match="feature size 10 does not match the bottleneck's dim=24"):
        b.quantize(torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"must be \(B, D\) or \(B, T, D\)"):
        b.quantize(torch.randn(24))
    with pytest.raises(ValueError, match="mask of shape"):
        b.quantize(torch.randn(3, 5, 24), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN or infinite"):
        b.quantize(torch.full((2, 24), float("nan")))
    with pytest.raises(ValueError, match="index 32 out of range"):
        b(indices=torch.full((2, 4), 32))
    with pytest.raises(ValueError, match="index -1 out of range"):
        b(indices=torch.full((2, 4), -1))
    with pytest.raises(ValueError, match="with C=4"):
        b(indices=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="re-iterable"):
        KeyValueBottleneck(24, 4, 8, num_classes=2).init_keys(iter([torch.randn(9, 24)]), epochs=2)
    with pytest.raises(ValueError, match="no feature vectors"):
        KeyValueBottleneck(24, 4, 8, num_classes=2).init_keys([])
    with pytest.raises(ValueError, match="unknown key_init backend 'lloyd'"):
        KeyValueBottleneck(24, 4, 8, num_classes=2).init_keys([torch.randn(9, 24)], backend="lloyd")
