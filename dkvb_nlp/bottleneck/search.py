"""Nearest-key search: for each codebook, the index of the closest key by L2 distance.

A small pluggable piece, every backend exact: `avx2` (our fused kernel, `native.py`: distances
stay in registers; the fast path on x86-64 CPUs), `avx512` (the same arithmetic on AVX-512
registers) and `avx512_bf16` (a bf16 screen, then the few keys it cannot rule out in the AVX2
kernel's float32 arithmetic), both giving the avx2 result bit for bit; `faiss` (IndexFlatL2 brute
force, BLAS-backed), `torch` (chunked `baddbmm` + `argmin`; runs on any device) and `matmul`
(`search_matmul.py`: bf16 or float32 matmul scores, a proved error bound, float64 re-rank).
`auto` starts from the rule (CPU: `avx2` when it compiles and loads, else faiss when installed,
else torch; torch on other devices) and takes another backend instead only where a one-off probe
measures it faster (`search_auto.py`, cached per machine kind).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..registry import Registry
from .search_matmul import matmul_search

# A search takes heads (N, C, dk) and keys (C, K, dk) and returns (squared distances, indices),
# both (N, C); indices are int64.
SearchFn = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
SEARCHES: Registry[SearchFn] = Registry("search backend")

# Bound on the (C, chunk, K) distance block of the torch backend, in elements (~256 MB fp32).
TORCH_BLOCK_ELEMENTS = 64 * 1024 * 1024

# Queries from which faiss computes distances with BLAS (see faiss_search).
FAISS_BLAS_THRESHOLD = 20


@SEARCHES.register("torch")
def torch_search(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact search with ||k||^2 - 2 x.k, never materialising N x C x K x dk."""
    n, c, _ = heads.shape
    k = keys.shape[1]
    keys = keys.to(heads.dtype)
    key_sq = (keys * keys).sum(-1).unsqueeze(1)  # (C, 1, K)
    keys_t = keys.transpose(1, 2)  # (C, dk, K)
    chunk = max(1, TORCH_BLOCK_ELEMENTS // max(1, c * k))
    dists = torch.empty(n, c, dtype=heads.dtype, device=heads.device)
    index = torch.empty(n, c, dtype=torch.long, device=heads.device)
    for start in range(0, n, chunk):
        x = heads[start : start + chunk].transpose(0, 1)  # (C, n, dk)
        d = torch.baddbmm(key_sq, x, keys_t, alpha=-2.0)  # (C, n, K)
        best, arg = d.min(dim=-1)
        dists[start : start + chunk] = (best + (x * x).sum(-1)).clamp_min_(0).T
        index[start : start + chunk] = arg.T
    return dists, index


@SEARCHES.register("faiss")
def faiss_search(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss exact brute force (`faiss.knn`, as IndexFlatL2), one call per codebook."""
    import faiss  # optional dependency; imported here so the core imports without it
    import numpy as np

    if heads.device.type != "cpu":
        raise ValueError(f"search='faiss' runs on CPU tensors, got device {heads.device}; use 'torch'")
    h = heads.detach().float().numpy()
    kk = keys.detach().float().contiguous().numpy()
    n, c, _ = h.shape
    dists = np.empty((c, n), dtype=np.float32)
    index = np.empty((c, n), dtype=np.int64)
    # This faiss build only takes its BLAS path from 128,000 queries up; below that its
    # sequential kernel is ~14x slower for small key dims (measured: 7.2 vs 0.5 us per query,
    # 4096 keys x 12 dims). Both are exact brute force; use BLAS from faiss's documented
    # threshold of 20 queries, and restore the global setting afterwards.
    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD
    try:
        for j in range(c):
            d, i = faiss.knn(np.ascontiguousarray(h[:, j, :]), kk[j], 1)
            dists[j], index[j] = d[:, 0], i[:, 0]
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    return torch.from_numpy(dists).T, torch.from_numpy(index).T


@SEARCHES.register("avx2")
def avx2_search(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused AVX2 kernel (`native.nearest`): exact, ties to the lowest index."""
    from .native import nearest

    return nearest(heads, keys)


@SEARCHES.register("avx512")
def avx512_search(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused kernel on AVX-512 registers (`native.nearest(kernel='avx512')`): the avx2 result, bit for bit."""
    from .native import nearest

    return nearest(heads, keys, kernel="avx512")


@SEARCHES.register("avx512_bf16")
def avx512_bf16_search(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bf16 screen (AVX-512 BF16) + exact float32 re-rank (`native.nearest_bf16`): the avx2 result, bit for bit."""
    from .native import nearest_bf16

    return nearest_bf16(heads, keys)


# Low-precision matmul scores + a proved error bound + float64 re-rank (search_matmul.py): bf16 where
# the machine multiplies bf16 natively, else float32.
SEARCHES.register("matmul")(matmul_search)


def faiss_available() -> bool:
    """True when faiss can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# Pins what 'auto' means (e.g. DKVB_SEARCH=avx2 to reproduce a run bit for bit on another machine).
ENV_OVERRIDE = "DKVB_SEARCH"


def resolve_search(name: str, device: torch.device) -> SearchFn:
    """The search function for `name` ('auto' or a registered backend) on `device`."""
    if name == "auto":
        name = auto_backend(device)
    return SEARCHES.get(name)


def auto_backend(device: torch.device) -> str:
    """The backend 'auto' means on `device`: $DKVB_SEARCH when set, else the fastest exact one, measured
    once (`search_auto.py`)."""
    import os

    pinned = os.environ.get(ENV_OVERRIDE, "").strip()
    if pinned and pinned != "auto":
        if pinned not in SEARCHES:
            raise ValueError(f"{ENV_OVERRIDE}={pinned!r} is not a search backend; accepted: auto, {', '.join(SEARCHES)}")
        return pinned
    from .search_auto import choose

    return choose(torch.device(device).type)
