"""Content fingerprints that key the caches: same content, same key; any change, a new key."""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Sequence

import torch
from torch import nn


def hash_texts(texts: Sequence[str], pairs: Sequence[str] | None = None) -> str:
    """sha256 of a list of texts (and their pairs), order included."""
    h = hashlib.sha256()
    for i, text in enumerate(texts):
        h.update(text.encode("utf-8"))
        h.update(b"\x00")
        if pairs is not None:
            h.update(pairs[i].encode("utf-8"))
        h.update(b"\x01")
    return h.hexdigest()


def hash_tensors(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over named tensors' names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encoder_fingerprint(encoder: nn.Module) -> str:
    """Fingerprint of an encoder's weights and config, wherever it was loaded from."""
    config = getattr(encoder, "config", None)
    cfg = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else ""
    h = hashlib.sha256(cfg.encode())
    h.update(hash_tensors(sorted(encoder.state_dict().items())).encode())
    return h.hexdigest()


def hash_json(obj) -> str:
    """sha256 of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
