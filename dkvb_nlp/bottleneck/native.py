"""The fused nearest-key kernels, compiled at first use and loaded with ctypes:

- `avx2` (`nearest_avx2.c`): keeps each tile of distances in registers and only the running argmin,
  where a BLAS-based search (faiss) writes every distance to memory and reads it back: for DKVB's
  short heads (24 dims) about 2x faster (`python benchmarks/speed.py --section search`);
- `avx512` (`nearest_avx512.c`): the same arithmetic on 16-float registers (`nearest(...,
  kernel="avx512")`, bit for bit the AVX2 result), and on CPUs with AVX-512 BF16 a bf16 screen
  with an exact float32 re-rank of the few keys it cannot rule out (`nearest_bf16`, bit for bit
  the AVX2 result too; the proof is in the C file).

Each C file is compiled once per source and compiler with the system's C compiler (`$CC`, else
`cc`, `gcc` or `clang`) into `$DKVB_CACHE_DIR/kernels` (default `~/.cache/dkvb_nlp/kernels`), written
under a temporary name and renamed. Anything that stops it (no compiler, not x86-64, a CPU
without the instructions, a failed build, `DKVB_NATIVE_SEARCH=0`) makes `load_kernel(name)` return
None and the search falls back (avx2: to faiss), with the reason in `unavailable_reason(name)`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import default_cache_dir

logger = logging.getLogger(__name__)

FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC")
QUERIES_PER_TASK = 96  # QB in both C files
ENV_SWITCH = "DKVB_NATIVE_SEARCH"


@dataclass(frozen=True)
class Kernel:
    source: Path  # the C file
    supported: str  # its function saying whether this CPU runs it
    keys_per_tile: int  # KT in the C file
    needs: str  # the instructions, for messages


KERNELS = {
    "avx2": Kernel(Path(__file__).with_name("nearest_avx2.c"), "dkvb_avx2_supported", 16, "AVX2 and FMA"),
    "avx512": Kernel(Path(__file__).with_name("nearest_avx512.c"), "dkvb_avx512_supported", 32, "AVX-512F"),
}
SOURCE = KERNELS["avx2"].source
KEYS_PER_TILE = KERNELS["avx2"].keys_per_tile

_reasons: dict[str, str] = {}


def unavailable_reason(name: str = "avx2") -> str | None:
    """Why kernel `name` could not be loaded (None when it is loaded or not tried yet)."""
    return _reasons.get(name)


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.isfile(cc) else None)
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(compiler: str, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so.tmp")
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *FLAGS, "-o", tmp, str(source), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[:500]}")
        os.replace(tmp, target)  # atomic: concurrent builders write the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def load_kernel(name: str = "avx2") -> ctypes.CDLL | None:
    """The compiled library of kernel `name` ('avx2' or 'avx512'), or None (see `unavailable_reason(name)`)."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; accepted: {', '.join(KERNELS)}")
    kernel = KERNELS[name]

    def unavailable(why: str) -> None:
        _reasons[name] = why
        logger.info("fused nearest-key kernel %s unavailable (%s)", name, why)
        return None

    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return unavailable(f"{ENV_SWITCH}={os.environ[ENV_SWITCH]}")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return unavailable(f"the CPU is {platform.machine()}, not x86-64")
    compiler = _compiler()
    if compiler is None:
        return unavailable("no C compiler found ($CC, cc, gcc, clang)")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        tag = hashlib.sha256(kernel.source.read_bytes() + repr((FLAGS, compiler, version)).encode()).hexdigest()[:16]
        target = default_cache_dir() / "kernels" / f"{kernel.source.stem}-{tag}.so"
        if not target.is_file():
            _build(compiler, kernel.source, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return unavailable(f"build or load failed: {err}")
    if not getattr(lib, kernel.supported)():
        return unavailable(f"the CPU lacks {kernel.needs}")
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.dkvb_nearest.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64]
    lib.dkvb_nearest.restype = ctypes.c_int
    if name == "avx512" and hasattr(lib, "dkvb_nearest_bf16"):  # absent when the compiler lacks AVX-512 BF16
        lib.dkvb_nearest_bf16.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64]
        lib.dkvb_nearest_bf16.restype = ctypes.c_int64
    return lib


def bf16_unavailable_reason() -> str | None:
    """Why the bf16 screen cannot run here (None when it can)."""
    lib = load_kernel("avx512")
    if lib is None:
        return f"the AVX-512 kernel is unavailable: {unavailable_reason('avx512')}"
    if not lib.dkvb_bf16_supported():
        return "the CPU lacks AVX-512 BF16 (or the compiler is older than GCC 10 / clang 9)"
    return None


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dkvb-nearest")


def tiled_keys(keys: torch.Tensor, keys_per_tile: int = KEYS_PER_TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (C, K, dk) as the kernels read them: tiles (C, kp/KT, dk, KT) and norms (C, kp), +inf at padding."""
    c, k, dk = keys.shape
    kp = -(-k // keys_per_tile) * keys_per_tile
    padded = keys.new_zeros(c, kp, dk)
    padded[:, :k] = keys
    tiles = padded.view(c, kp // keys_per_tile, keys_per_tile, dk).transpose(2, 3).contiguous()
    norms = torch.full((c, kp), float("inf"), dtype=keys.dtype)
    norms[:, :k] = (keys * keys).sum(-1)
    return tiles, norms


def bf16_pairs(keys: torch.Tensor, keys_per_tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (C, K, dk) float32 as the bf16 screen reads them: (C, kp/KT, ceil(dk/2), KT) 32-bit words, each
    holding dims 2p (low half) and 2p + 1 (high half; zero past dk and at padding keys) of one key,
    rounded to bf16 (to nearest even); and per codebook a bound on the norm of a key's rounding
    residual k - k^ (float64), k^ as VDPBF16PS reads it: k - bf16(k) is exact in float32, and a
    bf16 subnormal, read as zero, adds at most 2^-126 per dimension."""
    c, k, dk = keys.shape
    kp = -(-k // keys_per_tile) * keys_per_tile
    half = (dk + 1) // 2
    padded = torch.zeros(c, kp, 2 * half, dtype=torch.bfloat16)
    rounded = padded[:, :k, :dk]
    rounded.copy_(keys)  # round to nearest even
    residual = torch.linalg.vector_norm(keys - rounded.float(), dim=-1, dtype=torch.float64).amax(-1)
    residual = residual * (1 + 2.0 ** -40) + math.sqrt(dk) * 2.0 ** -126  # the norm's own rounding; subnormals
    words = padded.view(torch.int32)  # little-endian: dim 2p is the low half of word p
    tiles = words.view(c, kp // keys_per_tile, keys_per_tile, half).transpose(2, 3).contiguous()
    return tiles, residual


def _prepared(heads: torch.Tensor, keys: torch.Tensor, search: str) -> tuple[torch.Tensor, torch.Tensor]:
    if heads.device.type != "cpu" or keys.device.type != "cpu":
        raise ValueError(f"search={search!r} runs on CPU tensors, got {heads.device} and {keys.device}; use 'torch'")
    h = heads.detach().float()
    if h.stride(-1) != 1:
        h = h.contiguous()
    return h, keys.detach().float().contiguous()


def _run(call, tasks: int, threads: int | None) -> list[int]:
    """call(t0, t1) over `tasks` tasks split evenly between up to `threads` threads; the return codes."""
    workers = max(1, min(threads or torch.get_num_threads(), tasks))
    bounds = [tasks * i // workers for i in range(workers + 1)]
    if workers == 1:
        return [call(0, tasks)]
    # ctypes releases the GIL during the call, so the threads run in parallel
    return list(_pool(workers).map(lambda i: call(bounds[i], bounds[i + 1]), range(workers)))


def nearest(heads: torch.Tensor, keys: torch.Tensor, threads: int | None = None,
            kernel: str = "avx2") -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance and index of the nearest key: heads (N, C, dk), keys (C, K, dk) -> two (N, C).

    `kernel` 'avx2' or 'avx512': the same float32 arithmetic, so the same result bit for bit."""
    lib = load_kernel(kernel)
    if lib is None:
        raise RuntimeError(f"the fused nearest-key kernel {kernel} is unavailable: {unavailable_reason(kernel)}")
    h, k32 = _prepared(heads, keys, kernel)
    n, c, dk = h.shape
    tiles, norms = tiled_keys(k32, KERNELS[kernel].keys_per_tile)
    dists = torch.empty(n, c, dtype=torch.float32)
    index = torch.empty(n, c, dtype=torch.int64)
    args = (h.data_ptr(), h.stride(0), h.stride(1), tiles.data_ptr(), norms.data_ptr(), dists.data_ptr(),
            index.data_ptr(), n, c, tiles.shape[1] * tiles.shape[3], dk)
    if any(_run(lambda t0, t1: lib.dkvb_nearest(*args, t0, t1), c * -(-n // QUERIES_PER_TASK), threads)):
        raise MemoryError(f"the fused nearest-key kernel could not allocate {QUERIES_PER_TASK} x {dk} floats")
    return dists, index


def nearest_bf16(heads: torch.Tensor, keys: torch.Tensor, threads: int | None = None,
                 stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`nearest`'s result, bit for bit, through the bf16 screen (AVX-512 BF16): heads (N, C, dk), keys (C, K, dk).

    `stats`, when given, receives 'rows' (N x C) and 'searched_again' (rows the screen could not settle,
    searched again in full by the float32 kernel). Keys with a non-finite or huge norm (beyond 2^60,
    where the screen's bound could overflow) go to the float32 kernel directly."""
    why = bf16_unavailable_reason()
    if why is not None:
        raise RuntimeError(f"the bf16 nearest-key screen is unavailable: {why}")
    lib = load_kernel("avx512")
    h, k32 = _prepared(heads, keys, "avx512_bf16")
    n, c, dk = h.shape
    big_m = torch.linalg.vector_norm(k32, dim=-1, dtype=torch.float64).max(-1).values
    if stats is not None:
        stats.update(rows=n * c, searched_again=0)
    if n == 0 or not bool(torch.isfinite(big_m).all()) or float(big_m.max()) > 2.0 ** 60:
        if stats is not None:
            stats["searched_again"] = n * c
        return nearest(heads, keys, threads, kernel="avx512")
    kt = KERNELS["avx512"].keys_per_tile
    tiles, norms = tiled_keys(k32, kt)
    big_kn = norms.masked_fill(torch.isinf(norms), 0.0).max(-1).values.double()
    dists = torch.empty(n, c, dtype=torch.float32)
    index = torch.empty(n, c, dtype=torch.int64)
    pairs, residual = bf16_pairs(k32, kt)
    info = torch.stack([big_m, big_kn, residual], dim=1).contiguous()  # per codebook: M, KN, Ek
    args = (h.data_ptr(), h.stride(0), h.stride(1), tiles.data_ptr(), pairs.data_ptr(), norms.data_ptr(),
            info.data_ptr(), dists.data_ptr(), index.data_ptr(), n, c, tiles.shape[1] * tiles.shape[3], dk)
    again = _run(lambda t0, t1: lib.dkvb_nearest_bf16(*args, t0, t1), c * -(-n // QUERIES_PER_TASK), threads)
    if any(a < 0 for a in again):
        raise MemoryError(f"the bf16 nearest-key screen could not allocate its buffers for {QUERIES_PER_TASK} queries")
    if stats is not None:
        stats["searched_again"] = sum(again)
    return dists, index
