"""Random-resized-crop boxes and their application, shared by the builders and the replay.

A box is ``(top, left, height, width)`` in pixels of the source image. Sampling follows
torchvision's RandomResizedCrop (area scale and log-uniform aspect ratio, ten tries, then a
centre crop), but draws from an explicit ``torch.Generator`` so every stage is reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]


def sample_crop_box(height: int, width: int, scale: tuple[float, float],
                    generator: torch.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Box:
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        draws = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[1])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # Fallback: the largest centred crop whose aspect ratio lies in range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(x: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Crop ``box`` from float images (..., C, H, W) and resize to ``size`` (bilinear)."""
    top, left, h, w = box
    crop = x[..., top:top + h, left:left + w]
    squeeze = crop.ndim == 3
    if squeeze:
        crop = crop.unsqueeze(0)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0) if squeeze else out
