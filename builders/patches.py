"""Select the real patches P_s that seed each synthetic image (and that ARC merges back in).

For every class we crop ``ipc * preset.patch_candidates`` random real training images
(random-resized crops), score each crop with the teacher's cross-entropy for its class, rank
them, and keep ``ipc`` crops from the easy end, the middle, or the hard end of the ranking.
Every class draws from its own generator seeded from (seed, class), so the choice does not depend
on the order classes are visited in. The result is one safetensors file, so a build can be
repeated exactly and the patches published next to the images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fadrm_datasets._io import atomic_write_bytes, safetensors_bytes
from fadrm_datasets.augment import resized_crop, sample_crop_box

from .imaging import normalize
from .presets import Preset
from .progress import progress
from .seeding import derive_seed

log = logging.getLogger(__name__)

DIFFICULTIES = ("easy", "medium", "hard", "random")


@dataclass
class Patches:
    images: torch.Tensor  # uint8 (num_classes, ipc, C, H, W)
    source_index: torch.Tensor  # int64 (num_classes, ipc): index into the train split
    box: torch.Tensor  # int64 (num_classes, ipc, 4): crop box (top, left, height, width)
    cross_entropy: torch.Tensor  # float32 (num_classes, ipc): the teacher's score

    @property
    def ipc(self) -> int:
        return self.images.shape[1]

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        tensors = {"images": self.images, "source_index": self.source_index, "box": self.box,
                   "cross_entropy": self.cross_entropy}
        atomic_write_bytes(path, safetensors_bytes(tensors, metadata))

    @classmethod
    def load(cls, path: Path) -> "Patches":
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["images"], t["source_index"], t["box"], t["cross_entropy"])


def keep_by_difficulty(scores: torch.Tensor, count: int, difficulty: str) -> torch.Tensor:
    """Indices of ``count`` entries of ``scores`` (cross-entropy; low = easy) for ``difficulty``."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if difficulty == "random":  # candidates are already in random order
        return torch.arange(count)
    order = torch.argsort(scores, stable=True)
    if difficulty == "easy":
        return order[:count]
    if difficulty == "hard":
        return order[len(order) - count:]
    start = (len(order) - count) // 2
    return order[start:start + count]


def class_indices(targets: torch.Tensor, label: int) -> torch.Tensor:
    return torch.nonzero(torch.as_tensor(targets) == label).flatten()


@torch.no_grad()
def select_patches(preset: Preset, train: Dataset, teacher: nn.Module | None, ipc: int,
                   difficulty: str = "medium", seed: int = 0, device="cpu",
                   candidates: int | None = None) -> Patches:
    """One real patch per (class, ipc_id). ``teacher=None`` only with ``difficulty='random'``."""
    if teacher is None and difficulty != "random":
        raise ValueError("scoring patches by difficulty needs a teacher")
    per_patch = 1 if difficulty == "random" else (candidates or preset.patch_candidates)
    size = preset.image_size
    images, sources, boxes, scores = [], [], [], []
    for label in progress(range(preset.num_classes), "patches", leave=False):
        generator = torch.Generator().manual_seed(derive_seed(seed, "patches", label))
        pool = class_indices(train.targets, label)
        if len(pool) == 0:
            raise ValueError(f"class {label} has no training images")
        wanted = ipc * per_patch
        # Without replacement while the class has enough images, then cycling through them.
        order = torch.randperm(len(pool), generator=generator)
        picks = pool[order.repeat(wanted // len(pool) + 1)[:wanted]]
        crops, crop_boxes = [], []
        for index in picks.tolist():
            image = train[index][0]
            box = sample_crop_box(image.shape[1], image.shape[2], preset.patch_crop_scale, generator)
            crops.append(resized_crop(image.float(), box, size).round().clamp(0, 255).to(torch.uint8))
            crop_boxes.append(box)
        crops_t = torch.stack(crops)
        if teacher is None:
            ce = torch.zeros(wanted)
        else:
            logits = teacher(normalize(crops_t.to(device), preset)).float().cpu()
            ce = F.cross_entropy(logits, torch.full((wanted,), label), reduction="none")
        keep = keep_by_difficulty(ce, ipc, difficulty)
        images.append(crops_t[keep])
        sources.append(picks[keep])
        boxes.append(torch.tensor(crop_boxes, dtype=torch.long)[keep])
        scores.append(ce[keep])
    patches = Patches(torch.stack(images), torch.stack(sources), torch.stack(boxes),
                      torch.stack(scores).float())
    log.info("patches: %d per class, difficulty %s, mean teacher CE %.3f", ipc, difficulty,
             patches.cross_entropy.mean().item())
    return patches
