"""Random-resized-crop boxes and their application, shared by the builders and the replay.

A box is ``(top, left, height, width)`` in pixels of the source image. Sampling follows
torchvision's RandomResizedCrop (area scale and log-uniform aspect ratio, ten tries, then a
centre crop), but draws from an explicit ``torch.Generator`` so every stage is reproducible:
:func:`sample_crop_box` one box at a time (patches, recover), :func:`sample_crop_boxes` a whole
epoch at once (the soft-label plans).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]
CROP_RATIO = (3 / 4, 4 / 3)


def sample_crop_box(height: int, width: int, scale: tuple[float, float],
                    generator: torch.Generator, ratio: tuple[float, float] = CROP_RATIO) -> Box:
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
    h, w = _fallback_size(height, width, ratio)
    return (height - h) // 2, (width - w) // 2, h, w


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(height, width) of the largest crop whose aspect ratio lies in range (centred by callers)."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return round(width / ratio[0]), width
    if in_ratio > ratio[1]:
        return height, round(height * ratio[1])
    return height, width


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], generator: torch.Generator,
                      ratio: tuple[float, float] = CROP_RATIO, tries: int = 10) -> torch.Tensor:
    """``n`` RandomResizedCrop boxes (top, left, height, width) as int64 (n, 4), vectorised.

    The distribution of torchvision's RandomResizedCrop: area share uniform in ``scale``, aspect
    ratio log-uniform in ``ratio``, the first of ``tries`` draws that fits, else the largest
    centred crop whose aspect ratio lies in range.
    """
    area = height * width
    draws = torch.rand(n, tries, 2, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.long().argmax(1), torch.full((n,), -1, dtype=torch.long))
    fh, fw = _fallback_size(height, width, ratio)
    pick = first.clamp(min=0)
    rows = torch.arange(n)
    bh = torch.where(first >= 0, h[rows, pick], torch.full((n,), fh, dtype=torch.long))
    bw = torch.where(first >= 0, w[rows, pick], torch.full((n,), fw, dtype=torch.long))
    place = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(place[:, 0] * (height - bh + 1)).long().clamp(max=height - bh)
    left = torch.floor(place[:, 1] * (width - bw + 1)).long().clamp(max=width - bw)
    top = torch.where(first >= 0, top, (height - bh) // 2)
    left = torch.where(first >= 0, left, (width - bw) // 2)
    return torch.stack([top, left, bh, bw], dim=1)


def resized_crop(x: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Crop ``box`` from float images (..., C, H, W) and resize to ``size`` (bilinear)."""
    top, left, h, w = box
    crop = x[..., top:top + h, left:left + w]
    squeeze = crop.ndim == 3
    if squeeze:
        crop = crop.unsqueeze(0)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0) if squeeze else out


__all__ = ["Box", "CROP_RATIO", "resized_crop", "sample_crop_box", "sample_crop_boxes"]
