"""One frozen preset per dataset: everything a build needs to know about it.

A preset is a dataset's declaration (:mod:`fadrm_datasets.catalog`) with its ``build`` settings typed
and checked: the paper's datasets carry FADRM's released settings, ``fashion-mnist`` CPU-sized ones
chosen on its validation split. Code never branches on a dataset's name: it reads the preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from fadrm_datasets import registry

from .methods import METHODS
from fadrm_datasets._checks import one_of


OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class TeacherRecipe:
    """How to train a teacher from scratch on the source's training split."""

    optimizer: str  # one of OPTIMIZERS
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    momentum: float = 0.9  # SGD only
    crop_padding: int = 4  # random crop with this padding, then horizontal flip
    flip: bool = True
    # Larger sets are distilled and labelled best by a longer-trained teacher: (min_ipc, epochs)
    # pairs, ascending; a set of at least min_ipc images per class uses that many epochs instead.
    epochs_from_ipc: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        one_of("teacher optimizer", self.optimizer, OPTIMIZERS)
        thresholds = [min_ipc for min_ipc, _ in self.epochs_from_ipc]
        if thresholds != sorted(set(thresholds)):
            raise ValueError(f"epochs_from_ipc must ascend in IPC without repeats, got {self.epochs_from_ipc}")

    def epochs_for(self, ipc: int) -> int:
        """How long the teacher of a set with ``ipc`` images per class trains."""
        epochs = self.epochs
        for min_ipc, longer in self.epochs_from_ipc:
            if ipc >= min_ipc:
                epochs = longer
        return epochs

    def for_ipc(self, ipc: int) -> TeacherRecipe:
        """The concrete recipe (one epoch count) a set of ``ipc`` images per class uses."""
        return dataclasses.replace(self, epochs=self.epochs_for(ipc), epochs_from_ipc=())


# The preset's facts about the dataset, read from its declaration (recorded with the settings).
FACTS = ("name", "display_name", "num_classes", "channels", "image_size", "mean", "std", "class_names")


@dataclass(frozen=True)
class Preset:
    """A dataset's declaration with its builder settings typed and checked: everything a build needs."""

    info: registry.SetInfo  # the declaration: the dataset's facts (name, classes, geometry, normalisation)
    source: str  # key into builders.sources.SOURCES

    # Teachers. ``teacher`` is FADRM's; ``teachers_plus`` are cycled round-robin by FADRM+.
    teacher: str
    teachers_plus: tuple[str, ...]
    # None: the teachers come pretrained (torchvision ImageNet weights); else trained with this.
    teacher_recipe: TeacherRecipe | None

    # Recover (FADRM). One entry per stage; consecutive stages are joined by an ARC merge,
    # and a change of resolution between them is MRO.
    stage_resolutions: tuple[int, ...]
    stage_iterations: tuple[int, ...]
    lr: float
    adam_betas: tuple[float, float]
    r_bn: float
    first_bn_multiplier: float
    alpha: float  # ARC: x <- alpha * x + (1 - alpha) * Resample(P_s)
    jitter: int  # max random roll in pixels per step
    crop_scale: tuple[float, float]  # per-step RandomResizedCrop scale range
    class_block: int  # classes optimised together in one unit (the BN-matching batch)

    # Patch selection: real crops scored by the teacher; candidates drawn per kept patch.
    patch_candidates: int = 4
    patch_crop_scale: tuple[float, float] = (0.5, 1.0)
    # Training images held out as a validation split for choosing settings (never the test
    # split); patches and random-real subsets are drawn from the rest.
    validation_size: int = 0

    # Soft labels (FKD relabel) and the student protocol.
    relabel_epochs: int = 300
    relabel_batch_size: int = 16
    relabel_crop_scale: tuple[float, float] = (0.08, 1.0)
    soft_label_topk: int | None = None  # None: every class's logit
    # Label size (issue 25): each stored epoch is reused this many times in turn over the student's epochs
    # (1: every epoch stored), unless a number of stored epochs is given (``--label-cycle``); the kept
    # logits' type, float16 or int8 with a per-row scale.
    soft_label_reuse: int = 1
    soft_label_cycle: int | None = None
    soft_label_dtype: str = "float16"
    student: str = "resnet18"
    eval_epochs: int = 300
    eval_lr: float = 1e-3
    eval_weight_decay: float = 0.01
    eval_batch_size: int = 16
    eval_grad_accumulation: int = 2
    temperature: float = 20.0
    evaluate_by_default: bool = False
    # Keyword arguments of the source reader (e.g. which classes of a larger dataset to read).
    source_options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # Per-method settings of this dataset, by method name (e.g. RDED's stitching factor).
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)
    # Per-protocol settings of this dataset, by protocol name (builders/protocols.py); not a build's settings.
    protocols: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)

    @classmethod
    def from_declaration(cls, info: registry.SetInfo) -> Preset:
        """The preset a dataset's declaration describes (its ``build`` settings, typed and checked)."""
        settings = dict(info.build)
        recipe = settings.pop("teacher_recipe", None)
        return cls(info=info, teacher_recipe=TeacherRecipe(**recipe) if recipe is not None else None, **settings)

    name = property(lambda self: self.info.name)
    display_name = property(lambda self: self.info.display_name)
    num_classes = property(lambda self: self.info.num_classes)
    channels = property(lambda self: self.info.channels)
    image_size = property(lambda self: self.info.image_size)
    mean = property(lambda self: self.info.mean)
    std = property(lambda self: self.info.std)
    # The classes' names in label order; None: the source's (Tiny-ImageNet's WordNet ids).
    class_names = property(lambda self: self.info.class_names)

    def __post_init__(self) -> None:
        if len(self.stage_resolutions) != len(self.stage_iterations):
            raise ValueError(
                f"preset {self.name!r}: {len(self.stage_resolutions)} stage resolutions but "
                f"{len(self.stage_iterations)} iteration counts"
            )
        if self.stage_resolutions[-1] != self.image_size:
            raise ValueError(f"preset {self.name!r}: the last stage must run at the image size "
                             f"{self.image_size}, got {self.stage_resolutions[-1]}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"preset {self.name!r}: {len(self.class_names)} class names for {self.num_classes} classes")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"preset {self.name!r}: alpha must lie in [0, 1], got {self.alpha}")
        if self.soft_label_reuse < 1:
            raise ValueError(f"preset {self.name!r}: soft_label_reuse must be at least 1, got {self.soft_label_reuse}")
        self._check_method_settings()

    def _check_method_settings(self) -> None:
        """Each per-method setting names a method that takes it, with a value it accepts."""
        for name, settings in self.methods.items():
            method = METHODS.get(name)
            if method is None or method.stitching is None:
                raise ValueError(f"preset {self.name!r}: methods[{name!r}] names no method with settings "
                                 f"(those with settings: {', '.join(n for n, m in METHODS.items() if m.stitching)})")
            try:
                method.stitching_for(self.methods)
            except (TypeError, ValueError) as error:
                raise ValueError(f"preset {self.name!r}: methods[{name!r}]: {error}") from None

    @property
    def total_iterations(self) -> int:
        return sum(self.stage_iterations)

    def replace(self, **changes) -> Preset:
        """A copy with some settings or facts changed (e.g. from CLI flags); the result is validated."""
        facts = {name: changes.pop(name) for name in FACTS if name in changes}
        if facts:
            changes["info"] = self.info.replace(**facts)
        return dataclasses.replace(self, **changes)

    def for_ipc(self, ipc: int) -> Preset:
        """The preset with the concrete teacher recipe a set of ``ipc`` images per class uses."""
        if self.teacher_recipe is None or not self.teacher_recipe.epochs_from_ipc:
            return self
        return self.replace(teacher_recipe=self.teacher_recipe.for_ipc(ipc))

    def to_dict(self) -> dict:
        """The facts and settings as recorded in a build's manifest."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("info", "protocols")}
        if self.teacher_recipe is not None:
            settings["teacher_recipe"] = dataclasses.asdict(self.teacher_recipe)
        return {**{name: getattr(self, name) for name in FACTS}, **settings}


PRESETS: dict[str, Preset] = {info.name: Preset.from_declaration(info) for info in registry.SETS.values() if info.build}


class UnknownDatasetError(ValueError):
    pass


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(PRESETS))}") from None


__all__ = ["FACTS", "OPTIMIZERS", "PRESETS", "Preset", "TeacherRecipe", "UnknownDatasetError", "get_preset"]
