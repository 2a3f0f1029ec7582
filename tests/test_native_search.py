"""The fused AVX2 nearest-key kernel: exact, ties to the lowest index, thread-independent, and a
clean fallback to faiss when it cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dkvb_nlp.bottleneck import KeyValueBottleneck
from dkvb_nlp.bottleneck.native import load_kernel, nearest, unavailable_reason

needs_kernel = pytest.mark.skipif(load_kernel() is None, reason=f"fused kernel unavailable: {unavailable_reason()}")


def brute_force(heads: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return ((heads.double().unsqueeze(2) - keys.double().unsqueeze(0)) ** 2).sum(-1)  # (n, c, k)


@needs_kernel
@pytest.mark.parametrize("n,c,k,dk", [(1, 1, 1, 1), (7, 2, 15, 3), (97, 3, 33, 24), (200, 2, 300, 41)])
def test_kernel_finds_the_float64_nearest_key_on_ragged_shapes(n, c, k, dk):
    # n, k and dk off every tile size of the kernel (6 queries, 96 per task, 16 keys per tile)
    gen = torch.Generator().manual_seed(n * 31 + k)
    heads, keys = torch.randn(n, c, dk, generator=gen), torch.randn(c, k, dk, generator=gen)
    dists, index = nearest(heads, keys)
    exact = brute_force(heads, keys)
    assert index.dtype == torch.int64 and index.shape == (n, c) and dists.shape == (n, c)
    assert int(index.min()) >= 0 and int(index.max()) < k  # never a padding key
    assert torch.allclose(exact.gather(-1, index.unsqueeze(-1)).squeeze(-1), exact.min(-1).values, rtol=1e-5, atol=1e-5)
    assert torch.allclose(dists.double(), exact.min(-1).values, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_ties_go_to_the_lowest_index_as_in_torch_argmin():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(2, 40, 5, generator=gen)
    keys = torch.cat([base, base], dim=1)  # every key twice: indices i and i + 40
    heads = torch.randn(300, 2, 5, generator=gen)
    _, index = nearest(heads, keys)
    assert int(index.max()) < 40
    assert torch.equal(index, brute_force(heads, keys).argmin(-1))


@needs_kernel
def test_results_do_not_depend_on_threads_or_strides():
    gen = torch.Generator().manual_seed(3)
    rows, keys = torch.randn(1000, 4 * 12, generator=gen), torch.randn(4, 500, 12, generator=gen)
    heads = rows.view(1000, 4, 12)  # a view, as the segment splitter gives
    one = nearest(heads, keys, threads=1)
    for threads in (2, 3):
        assert all(torch.equal(a, b) for a, b in zip(one, nearest(heads, keys, threads=threads)))
    strided = torch.randn(1000, 4, 20, generator=gen)[:, :, 3:15]
    strided.copy_(heads)
    assert all(torch.equal(a, b) for a, b in zip(one, nearest(strided, keys)))


@needs_kernel
def test_auto_search_uses_the_kernel_and_quantises_as_faiss_does():
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(600, 48, generator=gen)
    found = {}
    for search in ("auto", "faiss"):
        b = KeyValueBottleneck(48, 4, 64, num_classes=3, search=search, seed=0)
        b.init_keys([x[i : i + 200] for i in range(0, 600, 200)], epochs=2)
        found[search] = (b.keys.clone(), b.quantize(x))
    assert torch.allclose(found["auto"][0], found["faiss"][0], atol=1e-5)
    assert (found["auto"][1] == found["faiss"][1]).float().mean() > 0.999


@pytest.mark.parametrize("env, reason", [({"DKVB_NATIVE_SEARCH": "0"}, "DKVB_NATIVE_SEARCH=0"),
                                         ({"CC": "/nonexistent/cc"}, "no C compiler found")])
def test_without_the_kernel_auto_falls_back_and_says_why(env, reason, tmp_path):
    code = ("import torch; from dkvb_nlp.bottleneck.search import auto_backend; "
            "from dkvb_nlp.bottleneck.native import unavailable_reason; "
            "print(auto_backend(torch.device('cpu'))); print(unavailable_reason())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DKVB_CACHE_DIR": str(tmp_path), **env}).stdout.splitlines()
    assert out[0] in ("faiss", "torch", "matmul") and reason in out[1]  # matmul only where measured faster
    assert not list(tmp_path.glob("kernels/*.so"))


def test_dkvb_search_pins_what_auto_means(monkeypatch):
    from dkvb_nlp.bottleneck.search import auto_backend, resolve_search, torch_search

    monkeypatch.setenv("DKVB_SEARCH", "torch")
    assert auto_backend(torch.device("cpu")) == "torch"
    assert resolve_search("auto", torch.device("cpu")) is torch_search
    from dkvb_nlp.bottleneck.search_auto import explain

    assert explain("cpu") == "search 'auto' = torch on cpu, pinned by DKVB_SEARCH (not measured)"
    monkeypatch.setenv("DKVB_SEARCH", "sse9")
    with pytest.raises(ValueError, match=r"DKVB_SEARCH='sse9' is not a search backend; accepted: auto, avx2, avx512"):
        auto_backend(torch.device("cpu"))
