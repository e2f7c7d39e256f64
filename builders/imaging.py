"""Pixel-space helpers shared by the stages: normalisation, batch augmentation, saving images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fadrm_datasets._io import atomic_write_bytes
from fadrm_datasets.layout import encode_png

from .presets import Preset


def _stats(preset: Preset, device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(preset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(preset.std, device=device).view(1, -1, 1, 1)
    return mean, std


def normalize(images: torch.Tensor, preset: Preset) -> torch.Tensor:
    """uint8 or [0, 1] float images -> the teacher's normalised input space (float32)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    mean, std = _stats(preset, images.device)
    return (images - mean) / std


def denormalize(x: torch.Tensor, preset: Preset) -> torch.Tensor:
    mean, std = _stats(preset, x.device)
    return x * std + mean


def pixel_bounds(preset: Preset, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel limits of valid pixels ([0, 1] before normalisation) in normalised space."""
    mean, std = _stats(preset, device)
    return (0 - mean) / std, (1 - mean) / std


def to_uint8(x: torch.Tensor, preset: Preset) -> torch.Tensor:
    """Normalised float images -> uint8 pixels, rounded (the PNG that is saved)."""
    return (denormalize(x.detach().float(), preset).clamp(0, 1) * 255).round().to(torch.uint8)


def random_pad_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch (the classic CIFAR augmentation)."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def save_png(path, image: torch.Tensor) -> None:
    """uint8 (C, H, W) -> a PNG file, written atomically."""
    atomic_write_bytes(path, encode_png(image))


__all__ = ["denormalize", "normalize", "pixel_bounds", "random_flip", "random_pad_crop", "save_png", "to_uint8"]
