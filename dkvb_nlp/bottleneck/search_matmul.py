"""Exact nearest-key search through the machine's matrix unit: low-precision scores from one matrix
product per block, a rigorous error bound to keep every key that could still win, and an exact
float64 re-rank of those few.

Why. Where bf16 matmuls are native (AMX / AVX-512 BF16 through oneDNN; any GPU) one product
x @ K^T is far cheaper than a float32 search; the price is rounding, which the bound makes harmless.

The result equals the float64 brute force argmin_k sum_i (x_i - k_i)^2 (as `tests/` compute it),
ties to the lowest index, as the other exact backends; distances are that float64 value (float32
unless the heads are float64). Proof, for one query x and the keys k of its codebook:

Let v(k) = |k|^2 - 2 x.k in exact arithmetic (the squared distance less |x|^2, the same for every
key), u = 2^-24 (float32 unit roundoff), b = 2^-8 (bf16: 8 significant bits), g_m = m u / (1 - m u)
and s = sum_i |x_i k_i| <= |x| |k| (Cauchy-Schwarz). The computed score S(k) is
- float32 path: S = [x32, 1].[-2 k32, kk32] by one `bmm`, kk32 = float32(|k|^2 from float64).
  Rounding the inputs to float32 costs (2u + u^2) s; kk32 is within 2u |k|^2; the d + 1 terms are
  summed in float32 in any order, within g_{d+1} (their absolute sum) [Higham, Accuracy and
  Stability, Lemma 3.1 and (3.5)]. So |S - v| <= A |k|^2 + B |x||k| with
  A = 2u + g_{d+1}(1 + 2u), B = 2(2u + u^2) + 2 g_{d+1}(1 + u)^2.
- bf16 path: x^ = bf16(x), k^ = bf16(k), each component within b' = b(1 + u) + u (through float32);
  their products are exact in float32 (8 x 8 bits) and summed in float32 (oneDNN and torch's
  fallback accumulate in float32; on CUDA we switch off bf16 reduced-precision reductions for the
  call): e1 = (1 + b')^2 - 1, e2 = e1 + g_d (1 + b')^2 bound |acc - x.k| <= e2 s; the product is
  returned in bf16 (torch's CPU matmul has no float32 output for bf16 inputs), within b |acc|,
  so |P - x.k| <= beta s with beta = e2 + b (1 + e2); then S = kk32 - 2P in float32, one more
  rounding. So A = 2u + u (1 + 2u), B = 2 beta + 2u (1 + beta).
  If float32 matmuls may run in a reduced precision (TF32, bf16 or bf16x3 inside, by torch's
  precision settings: `ieee_float32_matmuls`), the float32 path adds |k|^2 outside the product and
  uses this bound, which covers them.
Underflow adds absolute errors [Higham, (2.8)]: at most 2^-150 per float32 product and 2^-134 per
bf16 rounding (an input component: 2^-134 |k_i| or |x_i| in the product; the result: 2 x 2^-134
in S; sums that land among subnormals are exact), so eta = (4d + 8) 2^-149 + 2^-130 +
2^-132 sqrt(d) (|x| + M) covers them (M = max |k| over the codebook).
Overflow cannot happen while |x| + M <= 2^60 (every term and partial sum stays below 2^123); a
block with a row beyond that, or a non-finite one, and a codebook with a non-finite key, go to
the float64 brute force. Let E(k) = A |k|^2 + B |x||k| + eta <= E_max = A M^2 + B |x| M + eta.

Candidates: C = {k : S(k) <= T}, T = min_j S(j) + 2 E_max + mu. Let j* minimise S. For k not in C,
v(k) >= S(k) - E(k) > S(j*) + E_max + mu >= v(j*) + mu >= min_{c in C} v(c) + mu: every key outside C
is farther than the best candidate by more than mu = (4d + 8) 2^-53 (|x| + M)^2, which exceeds the
float64 rounding of any sum_i (x_i - k_i)^2 (at most (d + 2) 2^-53 (|x| + |k|)^2, each side), so the
float64 brute force also picks its winner inside C. T is evaluated in float64 and rounded up to
float32, and E is inflated by 1e-6 against the float64 rounding of its own evaluation. Within C the
float64 distances are computed with the brute force's own torch expression (bitwise equal in the
tests: the reduction over d does not depend on the outer shape), and ties go to the lowest index.
Whatever the float64 rounding, the key nearest in exact arithmetic is always in C.

There is no separate failure case: when the bound cannot separate the best key from the rest, C
simply holds every key the bound cannot exclude, up to the whole codebook, and the float64
re-rank of C is then the exact search for that row. Where the bound is tight (float32, or bf16 on
well-separated keys) C is one key for almost every row and the re-rank is a gather; bf16 scores
of 4096 keys in 24 dims are too coarse (about 1% of |x||k|) and most rows keep tens of candidates.
Memory: the (C, rows, K) score block holds at most `BLOCK_ELEMENTS` floats, and the re-rank at
most `PAIR_CHUNK` (query, key) pairs at a time.
"""

from __future__ import annotations

import contextlib
import math

import torch

BLOCK_ELEMENTS = 4 * 1024 * 1024  # scores per block (16 MB of float32, plus a 4 MB mask)
PAIR_CHUNK = 1 << 18  # (query, candidate) pairs re-ranked at once: 256k x dk float64
NORM_LIMIT = 2.0 ** 60  # |x| + max |k| up to which no float32 intermediate can overflow
PRECISIONS = ("auto", "float32", "bfloat16")

U32, UBF16 = 2.0 ** -24, 2.0 ** -8


def _gamma(m: int) -> float:
    return m * U32 / (1 - m * U32)


def error_coefficients(bound: str, d: int) -> tuple[float, float]:
    """(A, B) with |S(k) - v(k)| <= A |k|^2 + B |x||k| + eta for `bound` 'float32' or 'bfloat16' scores."""
    u, b = U32, UBF16
    if bound == "float32":
        g = _gamma(d + 1)
        a, bb = 2 * u + g * (1 + 2 * u), 2 * (2 * u + u * u) + 2 * g * (1 + u) ** 2
    elif bound == "bfloat16":
        bp = b * (1 + u) + u
        e1 = (1 + bp) ** 2 - 1
        e2 = e1 + _gamma(d) * (1 + bp) ** 2
        beta = e2 + b * (1 + e2)
        a, bb = 2 * u + u * (1 + 2 * u), 2 * beta + 2 * u * (1 + beta)
    else:
        raise ValueError(f"unknown error bound {bound!r}; accepted: float32, bfloat16")
    return a * (1 + 1e-6), bb * (1 + 1e-6)


def default_precision(device: torch.device) -> str:
    """'bfloat16' where bf16 matmuls are native (AMX / AVX-512 BF16 CPUs, bf16-capable GPUs), else 'float32'."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        from .machine import native_bf16

        return "bfloat16" if native_bf16() else "float32"
    return "float32"


def ieee_float32_matmuls(device: torch.device) -> bool:
    """False when float32 matmuls on `device` may run in TF32 or bf16 (torch's precision settings)."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else getattr(torch.backends.mkldnn, "matmul", None)
    setting = getattr(backend, "fp32_precision", "none")
    if setting != "none":
        return setting == "ieee"
    try:
        return torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # legacy and new settings mixed: assume the worst
        return False


@contextlib.contextmanager
def _full_precision_reductions(device: torch.device):
    """On CUDA, bf16 GEMMs may reduce partial sums in bf16; the bound needs float32 accumulation."""
    if device.type != "cuda":
        yield
        return
    flag = torch.backends.cuda.matmul
    saved = flag.allow_bf16_reduced_precision_reduction
    flag.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        flag.allow_bf16_reduced_precision_reduction = saved


def float64_search(heads: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 brute force (chunked): (squared distances, indices), ties to the lowest index."""
    n, c, d = heads.shape
    k = keys.shape[1]
    keys64 = keys.detach().double()
    rows = max(1, BLOCK_ELEMENTS // max(1, c * k * d))
    dists = torch.empty(n, c, dtype=torch.float64, device=heads.device)
    index = torch.empty(n, c, dtype=torch.long, device=heads.device)
    for start in range(0, n, rows):
        x = heads[start : start + rows].detach().double()
        best = ((x.unsqueeze(2) - keys64.unsqueeze(0)) ** 2).sum(-1).min(-1)
        dists[start : start + rows], index[start : start + rows] = best.values, best.indices
    return dists, index


def _rerank(x64: torch.Tensor, keys: torch.Tensor, cb: torch.Tensor, q: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """Index of the float64-nearest candidate for the rows (cb, q) of x64 (C, rows, d); mask (u, K)."""
    u, k = mask.shape
    r, j = mask.nonzero(as_tuple=True)  # row-major: pairs of a row together, keys ascending
    dd = torch.empty(r.numel(), dtype=torch.float64, device=x64.device)
    for s in range(0, r.numel(), PAIR_CHUNK):
        rr, jj = r[s : s + PAIR_CHUNK], j[s : s + PAIR_CHUNK]
        dd[s : s + PAIR_CHUNK] = ((x64[cb[rr], q[rr]] - keys[cb[rr], jj].double()) ** 2).sum(-1)
    row_min = torch.full((u,), math.inf, dtype=torch.float64, device=x64.device)
    row_min.scatter_reduce_(0, r, dd, "amin")
    tied = torch.where(dd == row_min[r], j, torch.full_like(j, k))
    return torch.full((u,), k, dtype=torch.long, device=x64.device).scatter_reduce_(0, r, tied, "amin")


def matmul_search(heads: torch.Tensor, keys: torch.Tensor, precision: str = "auto",
                  stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact search via low-precision matmul scores + float64 re-rank: heads (N, C, d), keys (C, K, d) -> two (N, C).

    `precision`: 'float32', 'bfloat16' or 'auto' (`default_precision`). `stats`, when given, receives
    the number of rows whose candidate set held more than the nearest key by the scores ('reranked')
    and of all rows ('rows').
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    if heads.dim() != 3 or keys.dim() != 3 or keys.shape[0] != heads.shape[1] or keys.shape[2] != heads.shape[2]:
        raise ValueError(f"heads (N, C, d) and keys (C, K, d) disagree: {tuple(heads.shape)} and {tuple(keys.shape)}")
    n, c, d = heads.shape
    k = keys.shape[1]
    if k == 0:
        raise ValueError("keys have K=0 keys per codebook; need at least one")
    out_dtype = torch.float64 if heads.dtype == torch.float64 else torch.float32
    device = heads.device
    keys = keys.detach().to(device)
    if stats is not None:
        stats.update(rows=n * c, reranked=0)
    if n == 0:
        return torch.empty(0, c, dtype=out_dtype, device=device), torch.empty(0, c, dtype=torch.long, device=device)
    if precision == "auto":
        precision = default_precision(device)
    bound = "float32" if precision == "float32" and ieee_float32_matmuls(device) else "bfloat16"
    coef_a, coef_b = error_coefficients(bound, d)
    eta_fixed, eta_norm = (4 * d + 8) * 2.0 ** -149 + 2.0 ** -130, 2.0 ** -132 * math.sqrt(d)

    keys32 = keys.float()
    exact_keys = keys if keys.dtype == torch.float64 else keys32  # what the re-rank reads
    key_norm = torch.linalg.vector_norm(exact_keys, dim=-1, dtype=torch.float64)  # (C, K)
    key_max = key_norm.max(-1).values  # (C,)
    if not bool(torch.isfinite(key_max).all()) or float(key_max.max()) > NORM_LIMIT:
        dists, index = float64_search(heads, keys)  # outside the proof's range: no shortcut
        if stats is not None:
            stats["reranked"] = n * c
        return dists.to(out_dtype), index
    kk32 = key_norm.square().float().unsqueeze(1)  # (C, 1, K); within 2u of |k|^2
    work = torch.bfloat16 if precision == "bfloat16" else torch.float32
    fold = bound == "float32"  # only then may |k|^2 ride in the product (bf16 inside would round it)
    if fold:  # |k|^2 as a (d+1)-th term of the product: no separate pass to add it
        keys_t = torch.cat([-2.0 * keys32, kk32.transpose(1, 2)], dim=2).transpose(1, 2).contiguous()
    else:
        keys_t = keys32.to(work).transpose(1, 2).contiguous()  # (C, d, K)
    codebook = torch.arange(c, device=device)
    m = key_max.unsqueeze(1)  # (C, 1)

    rows = max(1, BLOCK_ELEMENTS // (c * k))
    dists = torch.empty(n, c, dtype=out_dtype, device=device)
    index = torch.empty(n, c, dtype=torch.long, device=device)
    with _full_precision_reductions(device):
        for start in range(0, n, rows):
            block = heads[start : start + rows].detach()
            x64 = block.transpose(0, 1).double()  # (C, nb, d)
            x_norm = torch.linalg.vector_norm(x64, dim=-1)
            if not bool(torch.isfinite(x_norm).all()) or float((x_norm + m).max()) > NORM_LIMIT:
                d64, i64 = float64_search(block, keys)
                dists[start : start + rows], index[start : start + rows] = d64.to(out_dtype), i64
                if stats is not None:
                    stats["reranked"] += d64.numel()
                continue
            x = block.transpose(0, 1).float()
            if fold:
                scores = torch.bmm(torch.cat([x, x.new_ones(c, x.shape[1], 1)], dim=2), keys_t)
            else:
                scores = torch.sub(kk32, torch.bmm(x.to(work), keys_t).float(), alpha=2.0)
            smin, amin = scores.min(-1)  # (C, nb)
            e_max = coef_a * m * m + coef_b * x_norm * m + eta_fixed + eta_norm * (x_norm + m)
            mu = (4 * d + 8) * 2.0 ** -53 * (x_norm + m) ** 2
            t64 = smin.double() + 2 * e_max + mu
            t32 = t64.float()
            t32 = torch.where(t32.double() < t64, torch.nextafter(t32, torch.full_like(t32, math.inf)), t32)
            # A row is settled when no key but the scores' nearest is under the threshold: hide that
            # key and take the minimum again (two cheap passes; a mask and a count are slower).
            scores.scatter_(-1, amin.unsqueeze(-1), math.inf)
            unsure = scores.amin(-1) <= t32
            best = amin
            if bool(unsure.any()):
                cb, q = unsure.nonzero(as_tuple=True)
                mask = scores[cb, q] <= t32[cb, q].unsqueeze(-1)
                mask[torch.arange(cb.numel(), device=device), amin[cb, q]] = True
                best = amin.clone()
                best[cb, q] = _rerank(x64, exact_keys, cb, q, mask)
                if stats is not None:
                    stats["reranked"] += cb.numel()
            chosen = exact_keys[codebook.unsqueeze(1), best].double()  # (C, nb, d)
            dists[start : start + rows] = ((x64 - chosen) ** 2).sum(-1).T.to(out_dtype)
            index[start : start + rows] = best.T
    return dists, index
