"""Teacher and student architectures, built by name.

- ``convnet-bn[-w<width>][-d<depth>]``: the dataset-distillation ConvNet (conv3x3-BN-ReLU-avgpool
  blocks, then a linear layer), with BatchNorm so its statistics can be matched.
- ``resnet18-cifar``: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, the
  variant used for 32/64 px inputs.
- any torchvision classification model by its name (``resnet18``, ``densenet121``,
  ``shufflenet_v2_x0_5``, ``mobilenet_v2``, ...); a one-channel image is fed as three equal channels.
- ``<torchvision name>-cifar`` for the families whose stem is one stride-2 convolution and at most a
  top-level max-pool (ShuffleNetV2, MobileNetV2/V3, MNASNet, EfficientNet, RegNet; for example
  ``shufflenet_v2_x0_5-cifar``): that convolution at stride 1 (kernel unchanged), no max-pool. An
  ImageNet stem divides the image by 32, so a 28 px image is 1x1 after the last stage and the
  network learns poorly; this stem's larger feature maps cost time instead (ShuffleNetV2 x0.5 on
  Fashion-MNIST with either stem, accuracy and seconds: BENCHMARKS.md, "Other students").
"""

from __future__ import annotations

import re

import torch
from torch import nn

_CONVNET = re.compile(r"^convnet-bn(?:-w(?P<width>\d+))?(?:-d(?P<depth>\d+))?$")


class UnknownModelError(ValueError):
    pass


class ConvNetBN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 width: int = 64, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            channels, size = width, size // 2
        self.features = nn.Sequential(*layers)
        # Global pooling keeps the head valid at every MRO resolution, not just the native one.
        self.pool = nn.AdaptiveAvgPool2d(max(1, size))
        self.classifier = nn.Linear(width * max(1, size) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class GreyAsRGB(nn.Module):
    """A torchvision model (built for RGB) fed a one-channel image as three equal channels: the model,
    and its pretrained stem if any, stay as they are."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


def _resnet18_cifar(num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


# Families whose ImageNet stem is one stride-2 convolution and at most a top-level ``maxpool``, so
# that ``_small_image_stem`` undoes all of its downsampling.
SMALL_STEM_FAMILIES = ("shufflenet_v2", "mobilenet_v2", "mobilenet_v3", "mnasnet", "efficientnet", "regnet")


def _small_image_stem(model: nn.Module) -> nn.Module:
    """Undo the ImageNet stem's downsampling: its first convolution to stride 1, no max-pool."""
    first = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    first.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    return model


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A freshly initialised model; weights are loaded by ``builders.teachers``."""
    match = _CONVNET.match(name)
    if match:
        return ConvNetBN(
            num_classes,
            in_channels,
            image_size,
            width=int(match["width"] or 64),
            depth=int(match["depth"] or 3),
        )
    if name == "resnet18-cifar":
        return _resnet18_cifar(num_classes, in_channels)

    import torchvision.models

    base, small_images = (name[: -len("-cifar")], True) if name.endswith("-cifar") else (name, False)
    if base not in torchvision.models.list_models(torchvision.models) or (
            small_images and not base.startswith(SMALL_STEM_FAMILIES)):
        raise UnknownModelError(
            f"unknown model {name!r}; use convnet-bn[-w<width>][-d<depth>], resnet18-cifar, "
            "a torchvision classification model name such as resnet18 or mobilenet_v2, or -cifar after "
            f"a model of these families for its small-image stem: {', '.join(SMALL_STEM_FAMILIES)}"
        )
    model = torchvision.models.get_model(base, num_classes=num_classes)
    if small_images:
        model = _small_image_stem(model)
    return model if in_channels == 3 else GreyAsRGB(model)


__all__ = ["SMALL_STEM_FAMILIES", "ConvNetBN", "GreyAsRGB", "UnknownModelError", "build_model"]
