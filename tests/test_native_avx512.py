"""The AVX-512 nearest-key kernels give the AVX2 kernel's result bit for bit: the float32 one by the
same arithmetic, the bf16 screen by a proved bound and an exact re-rank (`nearest_avx512.c`)."""

from __future__ import annotations

import pytest
import torch

from dkvb_nlp.bottleneck.native import (bf16_unavailable_reason, load_kernel, nearest, nearest_bf16,
                                        unavailable_reason)
from dkvb_nlp.bottleneck.search import SEARCHES

needs_avx2 = pytest.mark.skipif(load_kernel() is None, reason=f"AVX2 kernel unavailable: {unavailable_reason()}")
needs_avx512 = pytest.mark.skipif(load_kernel("avx512") is None,
                                  reason=f"AVX-512 kernel unavailable here: {unavailable_reason('avx512')}")
needs_bf16 = pytest.mark.skipif(bf16_unavailable_reason() is not None,
                                reason=f"bf16 screen unavailable here: {bf16_unavailable_reason()}")

SHAPES = [(1, 1, 1, 1), (7, 2, 15, 3), (97, 3, 33, 24), (200, 2, 300, 41), (131, 2, 64, 70), (25, 1, 5, 2)]


def avx512(heads, keys, threads=None):
    return nearest(heads, keys, threads, kernel="avx512")


def bf16(heads, keys, threads=None):
    stats = {}
    out = nearest_bf16(heads, keys, threads, stats=stats)
    assert stats["rows"] == heads.shape[0] * heads.shape[1] and 0 <= stats["searched_again"] <= stats["rows"]
    return out


def same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def hard_inputs(n, c, k, dk, seed):
    """Random heads and keys with duplicated keys, heads on keys and heads on midpoints of two keys."""
    gen = torch.Generator().manual_seed(seed)
    heads, keys = torch.randn(n, c, dk, generator=gen), torch.randn(c, k, dk, generator=gen)
    if k >= 4:
        keys[:, 1::3] = keys[:, 0:-1:3][:, : keys[:, 1::3].shape[1]]  # ties: equal keys at two indices
    m = min(n // 3, k)
    heads[:m] = keys[:, :m].transpose(0, 1)
    if k >= 2:
        p = min(n // 3, k - 1)
        heads[n - p :] = ((keys[:, :p] + keys[:, 1 : p + 1]) / 2).transpose(0, 1)  # equidistant in exact arithmetic
    return heads, keys


@needs_avx2
@pytest.mark.parametrize("kernel", [pytest.param(avx512, marks=needs_avx512), pytest.param(bf16, marks=needs_bf16)])
@pytest.mark.parametrize("n,c,k,dk", SHAPES)
def test_avx2_result_bit_for_bit_on_ragged_shapes_and_ties(kernel, n, c, k, dk):
    heads, keys = hard_inputs(n, c, k, dk, seed=n * 7 + k)
    assert same(kernel(heads, keys), nearest(heads, keys))


@needs_avx2
@needs_bf16
def test_bf16_screen_on_keys_bf16_cannot_tell_apart():
    # keys that differ below bf16's 8 bits: the screen sees ties, the float32 re-rank decides
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(2, 40, 24, generator=gen)
    keys = torch.cat([base + 1e-4 * torch.randn(2, 40, 24, generator=gen) for _ in range(4)], dim=1)  # 160 keys
    heads = base.repeat(1, 5, 1)[:, :190].transpose(0, 1) + 1e-4 * torch.randn(190, 2, 24, generator=gen)
    stats = {}
    out = nearest_bf16(heads, keys, stats=stats)
    assert same(out, nearest(heads, keys))
    # 20 copies of one key: more candidates than the screen keeps, so those rows are searched again in full
    crowd = torch.cat([base[:, :1] + 1e-6 * torch.randn(2, 20, 24, generator=gen), base], dim=1)
    stats = {}
    out = nearest_bf16(base[:, :1].transpose(0, 1).repeat(30, 1, 1), crowd, stats=stats)
    assert same(out, nearest(base[:, :1].transpose(0, 1).repeat(30, 1, 1), crowd))
    assert stats["searched_again"] == 60


@needs_avx2
@needs_bf16
def test_bf16_screen_where_rounding_reverses_the_order():
    # x = k_a exactly, but bf16 rounds k_a's components down and k_b's up: the screen ranks k_b first
    # by about half its error bound, and the exact re-rank must still find k_a (a bound under half
    # the proved one would drop k_a here)
    a, b = 1 + 0.99 * 2.0 ** -8, 1 + 1.01 * 2.0 ** -8
    keys = torch.tensor([[b] * 24, [a] * 24, [-1.0] * 24])[None]  # k_b first: k_a comes under its threshold
    heads = torch.tensor([a] * 24)[None, None].repeat(13, 1, 1)
    stats = {}
    out = nearest_bf16(heads, keys, stats=stats)
    assert same(out, nearest(heads, keys)) and bool((out[1] == 1).all())
    assert stats["searched_again"] == 0  # settled by the screen and the re-rank, not the fallback


@needs_avx2
@needs_bf16
def test_bf16_screen_hands_rows_and_keys_outside_its_bound_to_the_float32_kernel():
    heads, keys = hard_inputs(120, 2, 50, 6, seed=3)
    heads[5, 0] = float("nan")
    heads[6, 1, 2] = float("inf")
    heads[7, 0] = 1e30  # norm beyond 2^60
    stats = {}
    assert same(nearest_bf16(heads, keys, stats=stats), nearest(heads, keys))
    assert stats["searched_again"] >= 3
    keys[1, 7] = 3e38  # a key norm that overflows: the whole call goes to the float32 kernel
    assert same(nearest_bf16(heads, keys, stats=stats), nearest(heads, keys))
    assert stats["searched_again"] == stats["rows"]


@needs_avx2
@pytest.mark.parametrize("kernel", [pytest.param(avx512, marks=needs_avx512), pytest.param(bf16, marks=needs_bf16)])
def test_threads_and_strides_do_not_change_the_result(kernel):
    gen = torch.Generator().manual_seed(3)
    rows, keys = torch.randn(1000, 4 * 12, generator=gen), torch.randn(4, 500, 12, generator=gen)
    heads = rows.view(1000, 4, 12)
    one = kernel(heads, keys, threads=1)
    for threads in (2, 3):
        assert same(one, kernel(heads, keys, threads=threads))
    strided = torch.randn(1000, 4, 20, generator=gen)[:, :, 3:15]
    strided.copy_(heads)
    assert same(one, kernel(strided, keys))
    assert same(one, nearest(heads, keys))


@needs_bf16
def test_registered_backends_and_clear_errors():
    heads, keys = hard_inputs(50, 2, 40, 8, seed=9)
    assert same(SEARCHES.get("avx512_bf16")(heads, keys), SEARCHES.get("avx512")(heads, keys))
    with pytest.raises(ValueError, match="runs on CPU tensors, got meta"):
        nearest_bf16(heads.to("meta"), keys)
    with pytest.raises(ValueError, match="unknown kernel 'sse'; accepted: avx2, avx512"):
        load_kernel("sse")
