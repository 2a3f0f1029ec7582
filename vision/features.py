"""Backbone features computed once per (backbone, dataset, split) and cached on disk as .npy.

Cache layout: `<cache_dir>/<backbone>/<dataset>_<split>_<key>.npy` (float32 features) with
`.labels.npy` and `.json` (what made it) beside it. The key hashes the backbone's fingerprint
(weights, input size, normalisation) and the images' bytes, so changing either re-extracts
and a stale file is never read. Every file is written atomically (dkvb_nlp.io).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dkvb_nlp.io import atomic_write, atomic_write_json

from .backbones import Backbone
from .datasets import ImageSet

__all__ = ["FeatureSet", "cached_features", "default_cache_dir", "extract_features", "images_digest"]


@dataclass
class FeatureSet:
    """Features (N, D) float32 and labels (N,) int64 of one dataset split under one backbone."""

    features: np.ndarray
    labels: np.ndarray
    path: Path | None = None


def default_cache_dir(cache_dir=None) -> Path:
    """`cache_dir`, else $DKVB_VISION_CACHE_DIR, else ~/.cache/dkvb_vision/features."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("DKVB_VISION_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dkvb_vision" / "features"


def images_digest(images: np.ndarray) -> str:
    """sha256 of the images' shape and bytes (part of the cache key)."""
    h = hashlib.sha256(repr((images.shape, str(images.dtype))).encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()[:16]


def extract_features(backbone: Backbone, images: np.ndarray, batch_size: int = 128,
                     progress: bool = False) -> np.ndarray:
    """Run the backbone over uint8 images (N, H, W, C) in batches: float32 (N, D)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    out = None
    start_time = time.time()
    for start in range(0, images.shape[0], batch_size):
        f = backbone(images[start : start + batch_size]).numpy()
        if out is None:
            out = np.empty((images.shape[0], f.shape[1]), dtype=np.float32)
        out[start : start + f.shape[0]] = f
        done = start + f.shape[0]
        if progress and (done // batch_size) % 20 == 0 or progress and done == images.shape[0]:
            rate = done / max(time.time() - start_time, 1e-9)
            print(f"  {backbone.name}: {done}/{images.shape[0]} images, {rate:.0f}/s", file=sys.stderr, flush=True)
    if out is None:
        raise ValueError("extract_features got no images")
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def cached_features(backbone: Backbone, image_set: ImageSet, cache_dir=None, batch_size: int = 128,
                    progress: bool = False) -> FeatureSet:
    """Features of image_set under backbone, read from the cache or extracted and cached."""
    digest = images_digest(image_set.images)
    key = hashlib.sha256(f"{backbone.fingerprint()}|{digest}".encode()).hexdigest()[:16]
    directory = default_cache_dir(cache_dir) / backbone.name
    stem = f"{image_set.name}_{image_set.split}_{key}"
    feat_path, label_path = directory / f"{stem}.npy", directory / f"{stem}.labels.npy"
    if feat_path.is_file() and label_path.is_file():
        features = np.load(feat_path, mmap_mode="r")
        labels = np.load(label_path)
        if features.shape[0] == len(image_set) and np.array_equal(labels, image_set.labels):
            return FeatureSet(np.array(features, dtype=np.float32), labels, feat_path)  # copy: writable, file closed
        # a mismatch means a damaged file (the key covers content): extract again
    directory.mkdir(parents=True, exist_ok=True)
    started = time.time()
    features = extract_features(backbone, image_set.images, batch_size, progress)
    # labels first, features last: the features file is the "complete" marker read above
    _save_npy(label_path, image_set.labels)
    _save_npy(feat_path, features)
    atomic_write_json(directory / f"{stem}.json", {
        "backbone": backbone.name, "fingerprint": backbone.fingerprint(), "spec": backbone.spec,
        "image_size": backbone.image_size, "dataset": image_set.name, "split": image_set.split,
        "images": len(image_set), "images_sha256_16": digest, "dim": int(features.shape[1]),
        "seconds": round(time.time() - started, 1), "torch": torch.__version__,
    })
    return FeatureSet(features, image_set.labels.copy(), feat_path)
