"""The fused AVX2 nearest-key kernel (`nearest_avx2.c`): compiled at first use, loaded with ctypes.

The kernel keeps each tile of distances in registers and keeps only the running argmin, where a
BLAS-based search (faiss) writes every distance to memory and reads it back: for DKVB's short
heads (24 dims) that is about 2x faster (`python benchmarks/speed.py --section search`).

The C file is compiled once per source and compiler with the system's C compiler (`$CC`, else
`cc`, `gcc` or `clang`) into `$DKVB_CACHE_DIR/kernels` (default `~/.cache/dkvb_nlp/kernels`), written
under a temporary name and renamed. Anything that stops it (no compiler, not x86-64, a CPU
without AVX2 and FMA, a failed build, `DKVB_NATIVE_SEARCH=0`) makes `load_kernel()` return None
and the search falls back to faiss, with the reason in `unavailable_reason()`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..io import default_cache_dir

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("nearest_avx2.c")
FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC")
QUERIES_PER_TASK = 96  # QB in the C file
KEYS_PER_TILE = 16  # KT in the C file
ENV_SWITCH = "DKVB_NATIVE_SEARCH"

_reason: list[str] = []


def unavailable_reason() -> str | None:
    """Why the kernel could not be loaded (None when it is loaded or not tried yet)."""
    return _reason[0] if _reason else None


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.isfile(cc) else None)
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so.tmp")
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[:500]}")
        os.replace(tmp, target)  # atomic: concurrent builders write the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel library, or None (see `unavailable_reason()`)."""

    def unavailable(why: str) -> None:
        _reason[:] = [why]
        logger.info("fused nearest-key kernel unavailable (%s); using faiss", why)
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
        tag = hashlib.sha256(SOURCE.read_bytes() + repr((FLAGS, compiler, version)).encode()).hexdigest()[:16]
        target = default_cache_dir() / "kernels" / f"nearest_avx2-{tag}.so"
        if not target.is_file():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return unavailable(f"build or load failed: {err}")
    if not lib.dkvb_avx2_supported():
        return unavailable("the CPU lacks AVX2 or FMA")
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.dkvb_nearest.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64]
    lib.dkvb_nearest.restype = ctypes.c_int
    return lib


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dkvb-nearest")


def tiled_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (C, K, dk) as the kernel reads them: tiles (C, kp/16, dk, 16) and norms (C, kp), +inf at padding."""
    c, k, dk = keys.shape
    kp = -(-k // KEYS_PER_TILE) * KEYS_PER_TILE
    padded = keys.new_zeros(c, kp, dk)
    padded[:, :k] = keys
    tiles = padded.view(c, kp // KEYS_PER_TILE, KEYS_PER_TILE, dk).transpose(2, 3).contiguous()
    norms = torch.full((c, kp), float("inf"), dtype=keys.dtype)
    norms[:, :k] = (keys * keys).sum(-1)
    return tiles, norms


def nearest(heads: torch.Tensor, keys: torch.Tensor, threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance and index of the nearest key: heads (N, C, dk), keys (C, K, dk) -> two (N, C)."""
    lib = load_kernel()
    if lib is None:
        raise RuntimeError(f"the fused nearest-key kernel is unavailable: {unavailable_reason()}")
    if heads.device.type != "cpu" or keys.device.type != "cpu":
        raise ValueError(f"search='avx2' runs on CPU tensors, got {heads.device} and {keys.device}; use 'torch'")
    h = heads.detach().float()
    if h.stride(-1) != 1:
        h = h.contiguous()
    n, c, dk = h.shape
    tiles, norms = tiled_keys(keys.detach().float().contiguous())
    dists = torch.empty(n, c, dtype=torch.float32)
    index = torch.empty(n, c, dtype=torch.int64)
    tasks = c * -(-n // QUERIES_PER_TASK)
    workers = max(1, min(threads or torch.get_num_threads(), tasks))
    args = (h.data_ptr(), h.stride(0), h.stride(1), tiles.data_ptr(), norms.data_ptr(), dists.data_ptr(),
            index.data_ptr(), n, c, tiles.shape[1] * KEYS_PER_TILE, dk)
    bounds = [tasks * i // workers for i in range(workers + 1)]
    if workers == 1:
        codes = [lib.dkvb_nearest(*args, 0, tasks)]
    else:  # ctypes releases the GIL during the call, so the threads run in parallel
        codes = list(_pool(workers).map(lambda i: lib.dkvb_nearest(*args, bounds[i], bounds[i + 1]), range(workers)))
    if any(codes):
        raise MemoryError(f"the fused nearest-key kernel could not allocate {QUERIES_PER_TASK} x {dk} floats")
    return dists, index
