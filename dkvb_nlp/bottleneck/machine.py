"""What kind of machine this is, for choosing and reporting search backends: CPU model and the
matrix-unit flags that decide which arithmetic is fast (read once from /proc/cpuinfo)."""

from __future__ import annotations

import functools
import platform

import torch

# The /proc/cpuinfo flags that matter for nearest-key search and bf16 matmuls.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset]:
    model, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's model name (e.g. 'Intel(R) Xeon(R) ...'), or the platform's best guess."""
    return _cpuinfo()[0]


def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    return _cpuinfo()[1]


def native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX-512 BF16 or AMX-BF16); elsewhere bf16 is emulated."""
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def machine_kind() -> dict:
    """CPU model, the flags of interest (present or not), torch threads and whether bf16 is native."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "flags": {f: f in flags for f in FLAGS_OF_INTEREST},
            "threads": torch.get_num_threads(), "native_bf16": native_bf16(), "torch": torch.__version__}


def describe(kind: dict | None = None) -> str:
    """One line for logs and benchmark tables: model, present flags, threads, bf16 native or not."""
    kind = kind or machine_kind()
    present = [f.upper() for f, on in kind["flags"].items() if on and f != "fma"] or ["no SIMD flags read"]
    bf16 = "native bf16" if kind["native_bf16"] else "no native bf16"
    return f"{kind['cpu']}; {' / '.join(present)}; {kind['threads']} threads; {bf16}"
