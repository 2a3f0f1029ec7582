"""Load a frozen encoder and its tokenizer."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..bottleneck.machine import native_bf16
from .resolve import resolve_encoder


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the encoder is the frozen front of the model."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def hidden_size(encoder: nn.Module) -> int:
    """The width of the encoder's token states (`last_hidden_state`)."""
    config = getattr(encoder, "config", None)
    for attr in ("hidden_size", "dim", "d_model"):  # BERT/RoBERTa/MPNet, DistilBERT, others
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the hidden size of encoder {type(encoder).__name__}")


def load_encoder(name_or_path: str | os.PathLike, *, local_files_only: bool | None = None,
                 trust_remote_code: bool = False) -> nn.Module:
    """The frozen `AutoModel` for an encoder name or path (see `resolve_encoder`)."""
    from transformers import AutoModel

    source = resolve_encoder(name_or_path, local_files_only=local_files_only)
    model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code,
                                      local_files_only=bool(local_files_only))
    return freeze(model)


def load_tokenizer(name_or_path: str | os.PathLike, *, local_files_only: bool | None = None,
                   trust_remote_code: bool = False):
    """The tokenizer that belongs to an encoder name or path."""
    from transformers import AutoTokenizer

    source = resolve_encoder(name_or_path, local_files_only=local_files_only)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                         local_files_only=bool(local_files_only))


def autocast_dtype(setting: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The autocast dtype for the encoder pass: 'bf16', 'off', or 'auto' (a fast reduced precision).

    'auto' on CUDA: bf16 where the GPU computes it natively (Ampere and later), else float16
    (Volta, Turing), whose narrower range the feature cache guards: it refuses non-finite
    token states (`FeatureCache._write_batch`), and `autocast: off` is the way out. On the
    CPU: bf16 only with native bf16 instructions, else none (float32). Other devices: none.
    """
    accepted = ("auto", "bf16", "off")
    if setting not in accepted:
        raise ValueError(f"unknown autocast {setting!r}; accepted: {', '.join(accepted)}")
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if _cuda_has_native_bf16(device) else torch.float16
    if device.type == "cpu":
        # Only native bf16 matmuls (AVX-512 BF16 / AMX) make it faster (~2x); emulated is slower.
        return torch.bfloat16 if native_bf16() else None
    return None


def encoder_autocast_dtype(setting: str, encoder: torch.nn.Module) -> torch.dtype | None:
    """`autocast_dtype` for this encoder's device, or None where its weights are already in another low
    precision (loaded with dtype=float16 on a bf16 machine): it then runs in its own, since bf16
    autocast would feed its float16 layer norms bf16 inputs (a dtype error on the CPU)."""
    weights = next(encoder.parameters(), torch.empty(0))
    dtype = autocast_dtype(setting, weights.device)
    return None if dtype is not None and weights.dtype not in (torch.float32, dtype) else dtype


def _cuda_has_native_bf16(device: torch.device) -> bool:
    """True on GPUs that multiply bf16 natively (compute capability 8.0 and up); emulated bf16 is slow."""
    return torch.cuda.get_device_capability(device)[0] >= 8
