"""Image datasets as uint8 arrays: Fashion-MNIST offline (IDX files), CIFAR10/100 and STL10 via torchvision.

Every loader returns an `ImageSet`: images (N, H, W, channels) uint8, labels (N,) int64 (-1 for
unlabelled images), class names. torchvision is imported only by the loaders that need it, so
`vision` imports (and Fashion-MNIST loads) without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dkvb_nlp.registry import Registry

from .idx import read_idx

__all__ = ["DATASETS", "FASHION_MNIST_DIRS", "ImageSet", "load_image_set", "vision_data_dir"]

# Where Debian's `dataset-fashion-mnist` package puts the IDX files.
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

SPLITS = ("train", "test", "unlabeled")


@dataclass
class ImageSet:
    """Images (N, H, W, channels) uint8 with labels (N,) int64 (-1 = unlabelled) and class names."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.name}/{self.split}: images must be uint8 (N, H, W, channels), "
                             f"got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}/{self.split}: {self.labels.shape[0]} labels for "
                             f"{self.images.shape[0]} images")
        self.labels = self.labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return self.images.shape[0]


LoaderFn = Callable[[str, "Path | None", bool], ImageSet]
DATASETS: Registry[LoaderFn] = Registry("image dataset")


def vision_data_dir(root=None) -> Path:
    """Root for downloaded image datasets: `root`, else $DKVB_VISION_DATA_DIR, else ~/.cache/dkvb_vision/data."""
    if root is not None:
        return Path(root)
    env = os.environ.get("DKVB_VISION_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dkvb_vision" / "data"


def _check_split(name: str, split: str, accepted: tuple[str, ...]) -> None:
    if split not in accepted:
        raise ValueError(f"dataset {name!r} has no split {split!r}; accepted: {', '.join(accepted)}")


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{stem}[.gz] not found in {directory}")


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(split: str, root=None, download: bool = False) -> ImageSet:
    """Fashion-MNIST from IDX files in `root`, $DKVB_FASHION_MNIST_DIR or Debian's package folder."""
    _check_split("fashion_mnist", split, ("train", "test"))
    env = os.environ.get("DKVB_FASHION_MNIST_DIR")
    dirs = [Path(root)] if root is not None else ([Path(env)] if env else [Path(d) for d in FASHION_MNIST_DIRS])
    prefix = "train" if split == "train" else "t10k"
    for directory in dirs:
        try:
            images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"))
        except FileNotFoundError:
            continue
        if images.ndim != 3:
            raise ValueError(f"{directory}: Fashion-MNIST images must be (N, 28, 28), got {images.shape}")
        return ImageSet("fashion_mnist", split, images[..., None].astype(np.uint8), labels,
                        FASHION_MNIST_CLASSES)
    where = ", ".join(map(str, dirs))
    raise FileNotFoundError(
        f"Fashion-MNIST {split} IDX files not found in {where}; install Debian's package "
        "(apt-get install dataset-fashion-mnist), or point DKVB_FASHION_MNIST_DIR / root at a folder "
        f"holding {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]"
    )


def _torchvision():
    try:
        import torchvision  # noqa: F401 - optional: only these loaders need it
    except ImportError:
        raise ImportError("this dataset loads through torchvision, which is not installed; "
                          "pip install torchvision (or use fashion_mnist, which needs no download)") from None
    import torchvision.datasets as tvd

    return tvd


def _from_hwc(name, split, data, targets, classes) -> ImageSet:
    images = np.ascontiguousarray(np.asarray(data, dtype=np.uint8))
    return ImageSet(name, split, images, np.asarray(targets, dtype=np.int64), tuple(classes))


@DATASETS.register("cifar10")
def load_cifar10(split: str, root=None, download: bool = False) -> ImageSet:
    """CIFAR-10 through torchvision (32x32 RGB, 10 classes)."""
    _check_split("cifar10", split, ("train", "test"))
    ds = _torchvision().CIFAR10(str(vision_data_dir(root)), train=split == "train", download=download)
    return _from_hwc("cifar10", split, ds.data, ds.targets, ds.classes)


@DATASETS.register("cifar100")
def load_cifar100(split: str, root=None, download: bool = False) -> ImageSet:
    """CIFAR-100 through torchvision (32x32 RGB, 100 classes; the paper's key-init set)."""
    _check_split("cifar100", split, ("train", "test"))
    ds = _torchvision().CIFAR100(str(vision_data_dir(root)), train=split == "train", download=download)
    return _from_hwc("cifar100", split, ds.data, ds.targets, ds.classes)


@DATASETS.register("stl10")
def load_stl10(split: str, root=None, download: bool = False) -> ImageSet:
    """STL-10 through torchvision (96x96 RGB; 'unlabeled' is the 100k-image key-init split)."""
    _check_split("stl10", split, SPLITS)
    ds = _torchvision().STL10(str(vision_data_dir(root)), split=split, download=download)
    # torchvision keeps STL10 as (N, C, H, W); labels of the unlabelled split are -1 already.
    return _from_hwc("stl10", split, np.transpose(ds.data, (0, 2, 3, 1)), ds.labels, ds.classes)


def load_image_set(name: str, split: str, root=None, download: bool = False) -> ImageSet:
    """Load split `split` of the registered dataset `name` (see DATASETS.names())."""
    return DATASETS.get(name)(split, root, download)
