"""The methods a build can use, each one named piece in one place.

A :class:`Method` says everything that makes it itself: which teachers it distils from, how its real
patches are chosen, what its images start from and whether and how they are optimised, and how an
image is made from its patches when they are not optimised. The stages ask the build's method; they
never test its name. Adding a method is adding its definition to :data:`METHODS` (its ``help`` is
what the CLI and the cards say of it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

INITS = ("patches", "gaussian")  # where the images start: the real patches, or Gaussian noise
DIFFICULTIES = ("easy", "medium", "hard", "random")  # which real patches: by teacher cross-entropy, or random


@dataclass(frozen=True)
class PatchChoice:
    """How the real patches are chosen from the training images."""

    difficulty: str = "medium"  # by the teacher's cross-entropy on each crop, or at random
    whole_images: bool = False  # whole training images, not crops


@dataclass(frozen=True)
class Optimisation:
    """How the images are optimised against the teachers' BN statistics (recover)."""

    init: str = "patches"  # start from the real patches, or from Gaussian noise
    arc: bool = True  # merge the real patches back in between stages (ARC)
    mro: bool = True  # follow the preset's per-stage resolutions (MRO)


@dataclass(frozen=True)
class Stitching:
    """Images assembled from real crops, ``factor`` x ``factor`` to an image (RDED's, from LINs-lab/RDED's
    synthesize/: MultiRandomCrop, selector and mix_images). ``images_per_class`` real images of a class
    each give ``crops_per_image`` square random-resized crops at 1/factor of the image's side; each image
    keeps the crop the teacher finds easiest, and the class keeps the ``ipc * factor**2`` easiest of those.
    A dataset's declaration may set any of these for the method (``methods={"rded": {"factor": 2}}``)."""

    factor: int = 1  # RDED's --factor: 1 for CIFAR and Tiny-ImageNet, 2 for the 224-pixel sets
    # RDED's --mipc in every released script; where ipc * factor**2 is more, that many images are drawn.
    images_per_class: int = 300
    crops_per_image: int = 5  # RDED's --num-crop
    crop_scale: tuple[float, float] = (0.08, 1.0)  # torchvision's RandomResizedCrop default, which RDED keeps

    def __post_init__(self) -> None:
        counts = {"factor": self.factor, "images_per_class": self.images_per_class,
                  "crops_per_image": self.crops_per_image}
        for name, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be 0 < MIN <= MAX <= 1, got {self.crop_scale}")


def stitch(crops: torch.Tensor, factor: int, size: int) -> torch.Tensor:
    """``ipc`` images of ``size`` pixels from ``ipc * factor**2`` uint8 crops (easiest first): block ``b``
    (row-major) of image ``k`` is crop ``b * ipc + k``, resized (nearest) to its region; the first
    ``size % factor`` rows and columns of blocks are a pixel larger, as in RDED's mix_images."""
    ipc = len(crops) // factor ** 2
    sides = [size // factor + (1 if i < size % factor else 0) for i in range(factor)]
    starts = [sum(sides[:i]) for i in range(factor)]
    images = torch.empty((ipc, crops.shape[1], size, size), dtype=crops.dtype)
    for block in range(factor ** 2):
        row, col = divmod(block, factor)
        part = crops[block * ipc:(block + 1) * ipc]
        if part.shape[-2:] != (sides[row], sides[col]):
            part = F.interpolate(part.float(), size=(sides[row], sides[col]), mode="nearest").to(crops.dtype)
        images[:, :, starts[row]:starts[row] + sides[row], starts[col]:starts[col] + sides[col]] = part
    return images


# What the switches of a method that does not optimise read as (recorded in its options).
NOT_OPTIMISED = Optimisation(init="patches", arc=False, mro=False)


@dataclass(frozen=True)
class Method:
    """What a ``--method`` name means; explicit switches (``--no-arc``...) override its defaults."""

    name: str
    help: str
    cycled_teachers: bool = False  # the preset's several teachers, cycled round-robin (FADRM+)
    patches: PatchChoice = PatchChoice()
    optimisation: Optimisation | None = Optimisation()  # None: the images are made from the chosen patches
    stitching: Stitching | None = None  # None: an image is one patch (optimised or not)

    @property
    def optimises(self) -> bool:
        return self.optimisation is not None

    def switches(self) -> dict:
        """The method's values of the switches a user may override: arc, mro, init, difficulty."""
        optimisation = self.optimisation or NOT_OPTIMISED
        return {"arc": optimisation.arc, "mro": optimisation.mro, "init": optimisation.init,
                "difficulty": self.patches.difficulty}

    def teacher_names(self, fadrm_teacher: str, cycled: tuple[str, ...]) -> tuple[str, ...]:
        """The teachers it distils from: the preset's (or the user's) one, or the preset's cycled set."""
        return cycled if self.cycled_teachers else (fadrm_teacher,)

    def patch_crop_scale(self, preset_scale: tuple[float, float]) -> tuple[float, float]:
        """The area range of the crops its patches are cut with."""
        return (1.0, 1.0) if self.patches.whole_images else preset_scale

    def stitching_for(self, settings: Mapping[str, Mapping]) -> Stitching | None:
        """Its stitching with a dataset's settings for this method (a preset's ``methods``) applied."""
        if self.stitching is None:
            return None
        chosen = dict(settings.get(self.name, {}))
        if "crop_scale" in chosen:
            chosen["crop_scale"] = tuple(chosen["crop_scale"])
        return dataclasses.replace(self.stitching, **chosen)

    def patches_per_image(self, settings: Mapping[str, Mapping]) -> int:
        stitching = self.stitching_for(settings)
        return stitching.factor ** 2 if stitching else 1

    def assemble(self, patches: torch.Tensor, settings: Mapping[str, Mapping], size: int) -> torch.Tensor:
        """A class's images from its chosen patches (uint8), for a method that does not optimise them."""
        stitching = self.stitching_for(settings)
        return stitch(patches, stitching.factor, size) if stitching else patches


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("fadrm", "FADRM: real patches optimised with ARC and MRO"),
    Method("fadrm+", "FADRM+: FADRM with several teachers, cycled round-robin", cycled_teachers=True),
    Method("sre2l", "the SRe2L baseline: Gaussian init, no ARC, one resolution",
           optimisation=Optimisation(init="gaussian", arc=False, mro=False)),
    Method("random-real", "a random real subset: whole training images, no optimisation",
           patches=PatchChoice(difficulty="random", whole_images=True), optimisation=None),
    Method("rded", "RDED: the teacher's easiest real crops, factor x factor stitched into each image, no "
           "optimisation", patches=PatchChoice(difficulty="easy"), optimisation=None, stitching=Stitching()),
)}

__all__ = ["DIFFICULTIES", "INITS", "METHODS", "Method", "NOT_OPTIMISED", "Optimisation", "PatchChoice", "Stitching",
           "stitch"]
