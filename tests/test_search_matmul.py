"""The matmul search backend: equal to the float64 brute force (indices and distances) in float32
and bf16, on random and near-tie inputs; its error bound holds; 'auto' measures once and caches."""

from __future__ import annotations

import json

import pytest
import torch

from dkvb_nlp.bottleneck import search_auto
from dkvb_nlp.bottleneck.search_matmul import error_coefficients, matmul_search

PRECISIONS = ("float32", "bfloat16")


def brute_force(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (distances, indices), a few queries at a time to bound memory; ties to the lowest index."""
    step = max(1, (1 << 23) // (keys.numel() + 1))
    out = [((heads[i : i + step].double().unsqueeze(2) - keys.double().unsqueeze(0)) ** 2).sum(-1).min(-1)
           for i in range(0, heads.shape[0], step)]
    return torch.cat([o.values for o in out]), torch.cat([o.indices for o in out])


def assert_exact(heads, keys, precision, stats=None):
    dists, index = matmul_search(heads, keys, precision=precision, stats=stats)
    ref_d, ref_i = brute_force(heads, keys)
    assert index.dtype == torch.int64 and index.shape == ref_i.shape and dists.shape == ref_i.shape
    assert torch.equal(index, ref_i)
    assert torch.equal(dists, ref_d.to(dists.dtype))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n,c,k,d", [(1, 1, 1, 1), (7, 2, 15, 3), (12, 16, 4096, 24), (8, 8, 4096, 48),
                                     (2, 256, 1024, 14)])  # off-size, then the text and vision shapes
def test_equals_float64_brute_force_on_random_inputs(precision, n, c, k, d):
    gen = torch.Generator().manual_seed(n * 7 + c)
    assert_exact(torch.randn(n, c, d, generator=gen), torch.randn(c, k, d, generator=gen), precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_near_ties_duplicates_last_bit_keys_and_large_offsets(precision):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(3, 100, 8, generator=gen)
    # every key twice, and once more with its last coordinate one float32 step up
    keys = torch.cat([base, base, base.clone()], dim=1)
    keys[:, 200:, -1] = torch.nextafter(keys[:, 200:, -1], torch.full_like(keys[:, 200:, -1], 1e9))
    # queries: on keys, halfway between keys, and exactly equidistant pairs (real ties)
    on = base[:, torch.randint(100, (60,), generator=gen)].transpose(0, 1)
    mid = (base[:, :60] + base[:, 40:]).transpose(0, 1) / 2
    heads = torch.cat([on, mid, torch.randn(60, 3, 8, generator=gen)])
    stats = {}
    assert_exact(heads, keys, precision, stats)
    assert stats["reranked"] > 0  # the duplicates cannot be told apart by the scores
    offset = 1e4  # scores lose their low bits to |k|^2 and x.k: the bound must keep many candidates
    assert_exact(heads + offset, keys + offset, precision)
    # exact real ties: query a, keys a + e and a - e (small integers: no rounding anywhere)
    a = torch.randint(-4, 5, (50, 8), generator=gen).float()
    a[:, 0] += 100 * torch.arange(50)
    e = torch.randint(-3, 4, (50, 8), generator=gen).float()
    pairs = torch.stack([a + e, a - e], dim=1).reshape(1, 100, 8)
    dists, index = matmul_search(a.unsqueeze(1), pairs, precision=precision)
    assert torch.equal(index[:, 0], 2 * torch.arange(50))
    assert_exact(a.unsqueeze(1), pairs, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_empty_and_out_of_range_inputs(precision):
    dists, index = matmul_search(torch.zeros(0, 4, 6), torch.randn(4, 9, 6), precision=precision)
    assert dists.shape == index.shape == (0, 4) and index.dtype == torch.int64
    gen = torch.Generator().manual_seed(2)
    heads, keys = torch.randn(30, 2, 5, generator=gen), torch.randn(2, 40, 5, generator=gen)
    for scale in (1e-25, 1e-40, 1e20):  # underflow, subnormals, and beyond the proof: float64 brute force
        assert_exact(heads * scale, keys * scale, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_error_bound_holds_for_the_scores_as_computed(precision):
    gen = torch.Generator().manual_seed(4)
    d = 24
    x, k = torch.randn(300, d, generator=gen) * 3, torch.randn(500, d, generator=gen)
    exact = (k.double() ** 2).sum(-1) - 2 * x.double() @ k.double().T
    kk32 = (k.double() ** 2).sum(-1).float()
    if precision == "float32":
        scores = torch.cat([x, torch.ones(300, 1)], 1) @ torch.cat([-2 * k, kk32[:, None]], 1).T
    else:
        scores = torch.sub(kk32, (x.bfloat16() @ k.bfloat16().T).float(), alpha=2.0)
    a, b = error_coefficients(precision, d)
    bound = a * (k.double() ** 2).sum(-1) + b * x.double().norm(dim=1, keepdim=True) * k.double().norm(dim=1)
    err = (scores.double() - exact).abs()
    assert bool((err <= bound).all())
    assert float((err / bound).max()) > 1e-3  # and it is not vacuous


def test_float32_matmuls_in_reduced_precision_use_the_loose_bound():
    from dkvb_nlp.bottleneck.search_matmul import ieee_float32_matmuls

    matmul = torch.backends.mkldnn.matmul
    saved = matmul.fp32_precision
    gen = torch.Generator().manual_seed(6)
    heads, keys = torch.randn(50, 2, 24, generator=gen), torch.randn(2, 300, 24, generator=gen)
    try:
        matmul.fp32_precision = "bf16"
        assert not ieee_float32_matmuls(torch.device("cpu"))
        assert_exact(heads, keys, "float32")
    finally:
        matmul.fp32_precision = saved
    assert ieee_float32_matmuls(torch.device("cpu")) == (torch.get_float32_matmul_precision() == "highest")


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        matmul_search(torch.randn(2, 1, 3), torch.randn(1, 4, 3), precision="fp8")
    with pytest.raises(ValueError, match=r"disagree: \(2, 1, 3\) and \(2, 4, 3\)"):
        matmul_search(torch.randn(2, 1, 3), torch.randn(2, 4, 3))


def test_auto_measures_once_keeps_the_rule_unless_clearly_faster_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("DKVB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(search_auto, "rule_choice", lambda device: "torch")
    monkeypatch.setattr(search_auto, "available", lambda name: name == "matmul")
    calls = []

    def fake(times):
        def measure(names, device, repeats=3):
            calls.append(names)
            return {name: times[name] for name in names}
        return measure

    for times, expected in (({"torch": 1.0, "matmul": 0.9}, "torch"), ({"torch": 1.0, "matmul": 0.5}, "matmul")):
        (tmp_path / "kernels" / search_auto.CACHE_NAME).unlink(missing_ok=True)
        search_auto.choose.cache_clear()
        monkeypatch.setattr(search_auto, "measure", fake(times))
        assert search_auto.choose("cpu") == expected
        assert search_auto.choose("cpu") == expected  # in memory
        search_auto.choose.cache_clear()
        assert search_auto.choose("cpu") == expected  # from the file
    assert calls == [["torch", "matmul"]] * 2
    record, = json.loads((tmp_path / "kernels" / search_auto.CACHE_NAME).read_text()).values()
    assert record["backend"] == "matmul" and record["rule"] == "torch"
    assert "search 'auto' = matmul on cpu" in search_auto.explain("cpu")
    search_auto.choose.cache_clear()


def test_auto_takes_a_bit_identical_kernel_on_a_small_margin_and_matmul_only_on_a_large_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DKVB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(search_auto, "rule_choice", lambda device: "avx2")
    monkeypatch.setattr(search_auto, "available", lambda name: True)
    cases = (({"avx2": 1.0, "avx512": 0.99, "avx512_bf16": 0.9, "matmul": 0.85}, "avx512_bf16"),
             ({"avx2": 1.0, "avx512": 0.99, "avx512_bf16": 0.97, "matmul": 0.85}, "avx2"),
             ({"avx2": 1.0, "avx512": 0.9, "avx512_bf16": 0.94, "matmul": 0.7}, "matmul"))
    for times, expected in cases:
        (tmp_path / "kernels" / search_auto.CACHE_NAME).unlink(missing_ok=True)
        search_auto.choose.cache_clear()
        monkeypatch.setattr(search_auto, "measure", lambda names, device, repeats=3: {n: times[n] for n in names})
        assert search_auto.choose("cpu") == expected
    assert "avx512_bf16 1.05x" in search_auto.explain("cpu") and "matmul 1.25x" in search_auto.explain("cpu")
    search_auto.choose.cache_clear()
