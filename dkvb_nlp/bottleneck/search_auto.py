"""What search='auto' means on this machine: the fastest exact backend, measured once and cached.

Today's rule (`rule_choice`: the fused AVX2 kernel on x86-64 CPUs, else faiss, else torch) is the
default; the matmul backend (`search_matmul.py`) replaces it only when a small probe measures it
at least `MARGIN` times faster, so noise on a shared machine does not flip the choice. The probe
(256 x 16 queries against the default 16 x 4096 keys of 24 dims, best of 3; a challenger stops
after a run that cannot win; a smaller probe measured fixed costs and scheduler noise, not search)
takes well under a second and runs once
per machine kind: the choice is stored in `$DKVB_CACHE_DIR/kernels/search_auto.json` under a key
made of the CPU model and flags, torch version, threads and device type, and kept in memory for
the process. `explain()` says which backend was chosen and the measured times.
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
PROBE = {"n": 256, "c": 16, "k": 4096, "d": 24}  # the default DKVB codebooks, few queries
CACHE_NAME = "search_auto.json"
CHALLENGERS = ("matmul",)

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


def fingerprint(device: torch.device, candidates: list[str]) -> str:
    """The cache key: machine kind, torch version and threads, device type and the candidates."""
    from .machine import machine_kind

    kind = machine_kind()
    if device.type == "cuda":
        kind["gpu"] = torch.cuda.get_device_name(device)
    text = json.dumps({**kind, "device": device.type, "candidates": candidates}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(names: list[str], device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Best-of-`repeats` seconds of each backend on the probe (after one small warm-up call); a backend
    after the first stops early once it is slower than the first divided by `MARGIN`."""
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
            if seconds and best * MARGIN >= next(iter(seconds.values())):
                break  # it cannot win; spare the second run
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
    candidates = [default, *[name for name in CHALLENGERS if name != default]]
    key = fingerprint(device, candidates)
    path = default_cache_dir() / "kernels" / CACHE_NAME
    record = _read_cache(path).get(key)
    if record is None or record.get("backend") not in candidates:
        seconds = measure(candidates, device)
        fastest = min(seconds, key=seconds.get)
        backend = fastest if seconds[fastest] * MARGIN < seconds[default] else default
        record = {"backend": backend, "seconds": seconds, "rule": default, "machine": describe(),
                  "device": device_type, "probe": PROBE, "margin": MARGIN}
        _write_cache(path, key, record)
        logger.info("search 'auto' on %s: %s (probe seconds %s)", device_type, backend,
                    {k: round(v, 4) for k, v in seconds.items()})
    _records[device_type] = record
    return record["backend"]


def explain(device_type: str = "cpu") -> str:
    """One line: what 'auto' picks on `device_type`, on which machine, from which measured times."""
    backend = choose(device_type)
    rec = _records[device_type]
    times = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(rec["seconds"].items(), key=lambda kv: kv[1]))
    return (f"search 'auto' = {backend} on {device_type} ({rec['machine']}); probe {rec['probe']['n']:,} x "
            f"{rec['probe']['c']} queries, {rec['probe']['k']} keys: {times}; the rule's {rec['rule']} is kept "
            f"unless another is {rec['margin']}x faster")
