"""From a run config to ProtocolData: load images, build the backbone, read or extract cached features."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .backbones import build_backbone
from .datasets import load_image_set
from .features import cached_features
from .protocol import ProtocolData

__all__ = ["load_protocol_data", "parse_dataset_ref"]


def parse_dataset_ref(ref: str) -> tuple[str, str]:
    """'cifar100:train' -> ('cifar100', 'train'); a bare name means its train split."""
    name, _, split = str(ref).partition(":")
    if not name:
        raise ValueError(f"dataset reference {ref!r}: expected name[:split], e.g. cifar100:train")
    return name, split or "train"


def load_protocol_data(cfg: Mapping, progress: Callable[[str], None] | None = None) -> ProtocolData:
    """Train/test features of cfg['dataset'] and key-init features of cfg['key_init'], cached."""
    say = progress or (lambda msg: None)
    backbone = build_backbone(cfg["backbone"], **dict(cfg.get("backbone_options") or {}))
    common = dict(root=cfg.get("data_dir"), download=bool(cfg.get("download")))

    def features(name: str, split: str):
        """Cached backbone features of one dataset split."""
        images = load_image_set(name, split, **common)
        say(f"{backbone.name} features of {name}/{split} ({len(images)} images)")
        return cached_features(backbone, images, cfg.get("cache_dir"), progress=progress is not None)

    train = features(cfg["dataset"], "train")
    test = features(cfg["dataset"], "test")
    init_name, init_split = parse_dataset_ref(cfg["key_init"]["dataset"])
    if (init_name, init_split) == (cfg["dataset"], "train"):
        key_x = train.features  # the target's own training images, labels unused
    else:
        key_x = features(init_name, init_split).features
    max_images = cfg["key_init"].get("max_images")
    label = f"{init_name}:{init_split}"
    if max_images is not None and max_images < key_x.shape[0]:
        if max_images < 1:
            raise ValueError(f"key_init.max_images={max_images} must be >= 1")
        # A fixed subset (seed 0), whatever the run's seed: keys then differ only by their own seed.
        keep = np.sort(np.random.default_rng(0).choice(key_x.shape[0], max_images, replace=False))
        key_x = key_x[keep]
        label += f"[{max_images}]"
    return ProtocolData(np.asarray(train.features), train.labels, np.asarray(test.features), test.labels,
                        np.asarray(key_x), dataset=cfg["dataset"], key_init_name=label)
