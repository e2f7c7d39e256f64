"""Select the real patches P_s that seed each synthetic image (and that ARC merges back in).

For every class we crop ``ipc * preset.patch_candidates`` random real training images
(random-resized crops), score each crop with the teacher's cross-entropy for its class, rank
them, and keep ``ipc`` crops from the easy end, the middle, or the hard end of the ranking.
Every class draws from its own generator seeded from (seed, class), so the choice does not depend
on the order classes are visited in. The result is one safetensors file, so a build can be
repeated exactly and the patches published next to the images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fadrm_datasets._checks import one_of
from fadrm_datasets._io import atomic_write_bytes, read_safetensors_metadata, safetensors_bytes
from fadrm_datasets.augment import resized_crop, sample_crop_box, sample_crop_boxes
from fadrm_datasets.layout import PATCHES

from . import distributed
from .context import BuildContext
from .imaging import normalize
from .methods import DIFFICULTIES, Stitching
from .options import BuildError
from .presets import Preset
from .progress import progress_bar
from .seeding import derive_seed
from .sources import load_split

log = logging.getLogger(__name__)


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
    one_of("difficulty", difficulty, DIFFICULTIES)
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


def draw_class_images(targets: torch.Tensor, label: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` training images of class ``label`` in random order: without replacement while the class
    has enough, then cycling through them again."""
    pool = class_indices(targets, label)
    if len(pool) == 0:
        raise ValueError(f"class {label} has no training images")
    order = torch.randperm(len(pool), generator=generator)
    return pool[order.repeat(count // len(pool) + 1)[:count]]


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
    for label in progress_bar(range(preset.num_classes), "patches", leave=False):
        generator = torch.Generator().manual_seed(derive_seed(seed, "patches", label))
        wanted = ipc * per_patch
        picks = draw_class_images(train.targets, label, wanted, generator)
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


def _class_crops(train: Dataset, picks: torch.Tensor, stitching: Stitching, size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``crops_per_image`` square random-resized crops of each picked image, at ``size``: uint8
    (len(picks), crops, C, size, size) and their boxes (len(picks), crops, 4)."""
    crops, boxes = [], []
    for index in picks.tolist():
        image = train[index][0]
        drawn = sample_crop_boxes(stitching.crops_per_image, image.shape[1], image.shape[2], stitching.crop_scale,
                                  generator, ratio=(1.0, 1.0))
        # Only each crop is made float (the same values as the whole image made float first).
        crops.append(torch.stack([resized_crop(image[:, top:top + h, left:left + w].float(), (0, 0, h, w), size)
                                  for top, left, h, w in drawn.tolist()]))
        boxes.append(drawn)
    return torch.stack(crops).round().clamp(0, 255).to(torch.uint8), torch.stack(boxes)


def padded_cross_entropy(teacher: nn.Module, crops: torch.Tensor, label: int, preset: Preset, device,
                         batch: int = 256) -> torch.Tensor:
    """The teacher's cross-entropy for ``label`` on each crop, normalised and zero-padded about its centre
    to the image size (as RDED's selector scores its crops)."""
    pad = preset.image_size - crops.shape[-1]
    sides = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)
    scores = []
    for start in range(0, len(crops), batch):
        x = F.pad(normalize(crops[start:start + batch].to(device), preset), sides)
        logits = teacher(x).float().cpu()
        scores.append(F.cross_entropy(logits, torch.full((len(logits),), label), reduction="none"))
    return torch.cat(scores)


def keep_stitched(ce: torch.Tensor, kept: int, difficulty: str = "easy") -> tuple[torch.Tensor, torch.Tensor]:
    """From the teacher's cross-entropy on each image's crops (images x crops), each image's easiest
    crop, and ``kept`` of those images by ``difficulty`` (the easiest, for RDED): the images' rows and
    their crops' columns, in the order they are kept."""
    best = ce.argmin(dim=1)
    rows = keep_by_difficulty(ce[torch.arange(len(ce)), best], kept, difficulty)
    return rows, best[rows]


@torch.no_grad()
def select_stitched_crops(preset: Preset, train: Dataset, teacher: nn.Module, ipc: int, stitching: Stitching,
                          difficulty: str = "easy", seed: int = 0, device="cpu") -> Patches:
    """``ipc * factor**2`` real crops per class for images stitched from them (see
    :class:`builders.methods.Stitching`), ordered as they are kept (easiest first for ``easy``)."""
    factor = stitching.factor
    size, kept = preset.image_size // factor, ipc * factor ** 2
    images, sources, boxes, scores = [], [], [], []
    for label in progress_bar(range(preset.num_classes), "patches", leave=False):
        generator = torch.Generator().manual_seed(derive_seed(seed, "stitched-crops", label))
        count = max(kept, stitching.images_per_class)
        picks = draw_class_images(train.targets, label, count, generator)
        crops, crop_boxes = _class_crops(train, picks, stitching, size, generator)
        ce = padded_cross_entropy(teacher, crops.flatten(0, 1), label, preset, device).view(count, -1)
        rows, best = keep_stitched(ce, kept, difficulty)
        images.append(crops[rows, best])
        sources.append(picks[rows])
        boxes.append(crop_boxes[rows, best])
        scores.append(ce[rows, best])
    patches = Patches(torch.stack(images), torch.stack(sources), torch.stack(boxes), torch.stack(scores).float())
    log.info("patches: %d crops per class for %dx%d stitching, mean teacher CE %.3f", kept, factor, factor,
             patches.cross_entropy.mean().item())
    return patches


# --- the build stage ----------------------------------------------------------------------------

def chooser_weights(ctx: BuildContext) -> dict[str, str]:
    """The weights of the teacher that ranks the patches; none when they are drawn at random."""
    return {} if _chosen_at_random(ctx) else ctx.teachers.weights_ids(1)


def _chosen_at_random(ctx: BuildContext) -> bool:
    """No teacher looks at the patches: drawn at random, and not stitched (stitching scores every crop)."""
    return ctx.options.difficulty == "random" and not ctx.options.spec.stitching


def _selection(ctx: BuildContext) -> tuple[Preset, dict]:
    """The preset the patches are chosen with, and what decides the choice, as their file records it."""
    options = ctx.options
    preset = ctx.preset.replace(patch_crop_scale=options.spec.patch_crop_scale(ctx.preset.patch_crop_scale))
    selection = {"difficulty": options.difficulty, "seed": options.seed, "ipc": options.ipc,
                 "teacher_weights": json.dumps(chooser_weights(ctx))}
    stitching = options.spec.stitching_for(preset.methods)
    if stitching:  # its crops are cut and counted by its own settings, not the preset's patch ones
        selection["stitching"] = json.dumps(dataclasses.asdict(stitching))
    else:
        selection.update(crop_scale=list(preset.patch_crop_scale), candidates=preset.patch_candidates)
    return preset, selection


def check_patches(ctx: BuildContext) -> None:
    """Refuse to reuse patches chosen otherwise (other teacher weights, seed, difficulty...), checked
    before anything is written; patches changed or damaged since they were written are deleted, to be
    selected again."""
    path = ctx.directory.patches
    if path.is_file() and ctx.directory.damaged((PATCHES,)):
        log.warning("patches: %s changed since it was written; selecting the patches again", path)
        path.unlink()
    if path.is_file():
        recorded = read_safetensors_metadata(path)
        wanted = _selection(ctx)[1]
        other = [key for key in wanted if key in recorded and recorded[key] != wanted[key]]  # older files hold fewer
        if other:
            what = "other teacher weights" if other == ["teacher_weights"] else f"another {', '.join(other)}"
            raise BuildError(f"{path} was selected with {what}; pass --build-dir to build elsewhere, or delete it "
                             "and images/ to start over")


def stage_patches(ctx: BuildContext) -> Patches:
    """Select and save the real patches (reused when the file exists); under torchrun rank 0 selects
    them and the other ranks read its file."""
    with distributed.main_first():
        return _select_or_reuse(ctx)


def _select_or_reuse(ctx: BuildContext) -> Patches:
    build, options = ctx.directory, ctx.options
    check_patches(ctx)
    if build.patches.is_file():
        log.info("patches: reusing %s", build.patches)
        return Patches.load(build.patches)
    start = time.perf_counter()
    train = load_split(ctx.preset, options.data_root, "distill", options.download)
    build.update_manifest(classes=list(ctx.preset.class_names or train.classes))
    preset, selection = _selection(ctx)
    teacher = None if _chosen_at_random(ctx) else ctx.teachers.modules()[0]
    method = options.spec
    if method.stitching:
        patches = select_stitched_crops(preset, train, teacher, options.ipc, method.stitching_for(preset.methods),
                                        options.difficulty, options.seed, ctx.device)
    else:
        patches = select_patches(preset, train, teacher, options.ipc, options.difficulty, options.seed, ctx.device)
    patches.save(build.patches, selection)
    build.record_stage("patches", {"difficulty": options.difficulty,
                                   "seconds": round(time.perf_counter() - start, 2),
                                   "mean_teacher_ce": round(patches.cross_entropy.mean().item(), 4)},
                       written=(PATCHES,))
    return patches


__all__ = ["Patches", "check_patches", "chooser_weights", "keep_by_difficulty", "keep_stitched", "padded_cross_entropy", "select_patches",
           "select_stitched_crops", "stage_patches"]
