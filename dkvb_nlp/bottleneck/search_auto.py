"""What search='auto' means on this machine: the fastest exact backend, measured once and cached.

Today's rule (`rule_choice`: the fused AVX2 kernel on x86-64 CPUs, else faiss, else torch) is the
default; a challenger that runs here replaces it only when a small probe measures it faster: the
matmul backend (`search_matmul.py`, exact in float64 but not always the AVX2 kernel's index on a
float32 near-tie) by at least `MARGIN`, so noise on a shared machine does not flip the choice; the
AVX-512 kernels (`avx512`, `avx512_bf16`: the AVX2 result bit for bit) by `IDENTICAL_MARGIN`.
The probe (2,048 x 16 queries against the default 16 x 4096 keys of 24 dims, best of 3; a
challenger stops after a run twice as slow as the rule's; a smaller probe measured fixed costs,
scheduler noise and key preparation, which the real calls, blocks of 8,192 rows, amortise) takes
about a second and runs once per machine kind: the choice is stored in
`$DKVB_CACHE_DIR/kernels/search_auto.json` under a key made of the CPU model and flags, torch
version, threads, device type, candidates and probe, and kept in memory for the process.
`explain()` says which backend was chosen and the measured times; `DKVB_SEARCH` (search.py) pins it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time

import torch

from ..io import default_cache_dir

logger = logging.getLogger(__name__)

MARGIN = 1.25  # a challenger must be this many times faster than the rule's choice
# ... unless it gives the rule's avx2 result bit for bit: then a switch changes no number and only
# needs a margin against noise.
IDENTICAL_MARGIN = 1.05
IDENTICAL_TO_AVX2 = ("avx512", "avx512_bf16")
PROBE = {"n": 2048, "c": 16, "k": 4096, "d": 24}  # the default DKVB codebooks, a quarter of a key-init block
CACHE_NAME = "search_auto.json"
CHALLENGERS = ("avx512", "avx512_bf16", "matmul")

_records: dict[str, dict] = {}


def rule_choice(device: torch.device) -> str:
    """The backend today's fixed rule picks: avx2 when the kernel loads, else faiss, else torch (torch off CPU)."""
    from .native import load_kernel
    from .search import faiss_available

    if device.type != "cpu":
        return "torch"
    if load_kernel() is not None:
        return "avx2"
    return "faiss" if faiss_available() else "torch"


def available(name: str) -> bool:
    """Whether challenger `name` runs here (the native kernels need their instructions and a compiler)."""
    from .native import bf16_unavailable_reason, load_kernel

    if name == "avx512":
        return load_kernel("avx512") is not None
    if name == "avx512_bf16":
        return bf16_unavailable_reason() is None
    return True


def margin(name: str, rule: str) -> float:
    """How many times faster than the rule's `rule` challenger `name` must be measured to replace it."""
    return IDENTICAL_MARGIN if rule == "avx2" and name in IDENTICAL_TO_AVX2 else MARGIN


def fingerprint(device: torch.device, candidates: list[str]) -> str:
    """The cache key: machine kind, torch version and threads, device type, the candidates and the probe."""
    from .machine import machine_kind

    kind = machine_kind()
    if device.type == "cuda":
        kind["gpu"] = torch.cuda.get_device_name(device)
    text = json.dumps({**kind, "device": device.type, "candidates": candidates, "probe": PROBE}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(names: list[str], device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Best-of-`repeats` seconds of each backend on the probe (after one small warm-up call); a backend
    after the first stops early once a run takes twice the first's best (one slow run on a busy
    machine must not rule out a backend that is close)."""
    from .search import SEARCHES

    gen = torch.Generator().manual_seed(0)
    heads = torch.randn(PROBE["n"], PROBE["c"], PROBE["d"], generator=gen).to(device)
    keys = torch.randn(PROBE["c"], PROBE["k"], PROBE["d"], generator=gen).to(device)
    seconds = {}
    for name in names:
        fn = SEARCHES.get(name)
        fn(heads[:8], keys)
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            fn(heads, keys)
            _sync(device)
            best = min(best, time.perf_counter() - start)
            if seconds and best >= 2 * next(iter(seconds.values())):
                break  # twice as slow as the rule's: it cannot win; spare the other runs
        seconds[name] = best
    return seconds


def _read_cache(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path, key: str, record: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = _read_cache(path)
        table[key] = record
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent writer loses at most its own record
    except OSError as err:  # a read-only cache only costs a probe per process
        logger.info("search 'auto': could not cache the choice in %s (%s)", path, err)


@functools.lru_cache(maxsize=None)
def choose(device_type: str) -> str:
    """The backend 'auto' means for tensors on a device of `device_type` (measured once, cached)."""
    from .machine import describe

    device = torch.device(device_type)
    default = rule_choice(device)
    runs_here = [name for name in CHALLENGERS if device.type == "cpu" or name == "matmul"]  # native: CPU only
    candidates = [default, *[name for name in runs_here if name != default and available(name)]]
    key = fingerprint(device, candidates)
    path = default_cache_dir() / "kernels" / CACHE_NAME
    record = _read_cache(path).get(key)
    if record is None or record.get("backend") not in candidates:
        seconds = measure(candidates, device)
        winners = [name for name in candidates[1:] if seconds[name] * margin(name, default) < seconds[default]]
        backend = min(winners, key=seconds.get) if winners else default
        record = {"backend": backend, "seconds": seconds, "rule": default, "machine": describe(),
                  "device": device_type, "probe": PROBE,
                  "margin": {name: margin(name, default) for name in candidates[1:]}}
        _write_cache(path, key, record)
        logger.info("search 'auto' on %s: %s (probe seconds %s)", device_type, backend,
                    {k: round(v, 4) for k, v in seconds.items()})
    _records[device_type] = record
    return record["backend"]


def explain(device_type: str = "cpu") -> str:
    """One line: what 'auto' picks on `device_type`, on which machine, from which measured times."""
    from .search import ENV_OVERRIDE, auto_backend

    pinned = auto_backend(torch.device(device_type))
    if os.environ.get(ENV_OVERRIDE, "").strip() not in ("", "auto"):
        return f"search 'auto' = {pinned} on {device_type}, pinned by {ENV_OVERRIDE} (not measured)"
    backend = choose(device_type)
    rec = _records[device_type]
    times = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(rec["seconds"].items(), key=lambda kv: kv[1]))
    margins = rec["margin"] if isinstance(rec["margin"], dict) else {}
    needs = ", ".join(f"{k} {v}x" for k, v in margins.items()) or "none"
    return (f"search 'auto' = {backend} on {device_type} ({rec['machine']}); probe {rec['probe']['n']:,} x "
            f"{rec['probe']['c']} queries, {rec['probe']['k']} keys: {times}; the rule's {rec['rule']} is kept "
            f"unless another is faster by its margin ({needs})")
