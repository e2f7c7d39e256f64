"""What a user chooses for one build.

:class:`BuildOptions` fills the switches a user left open (None) from its method
(:mod:`builders.methods`) when it is made, so ``BuildOptions(dataset=..., method="sre2l")``
from Python and ``fadrm-build ... --method sre2l`` build the same thing, and it refuses conflicting
choices up front with one line. The choice lists here are the ones the CLI offers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from fadrm_datasets import layout
from fadrm_datasets._checks import one_of

from .methods import DIFFICULTIES, INITS, METHODS, Method
from .presets import Preset


class BuildError(RuntimeError):
    """A build cannot go on as asked; the message says what to do."""


class BuildFailed(BuildError):
    """The work itself failed (not the input), e.g. recover units whose loss became NaN."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees it, else the CPU; refuses devices a build cannot use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise BuildError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BuildError(f"--device {name} asked for, but PyTorch sees no CUDA device; use --device cpu")
    return device


@dataclass(frozen=True)
class BuildOptions:
    """Everything a user chose for one build (recorded in the manifest).

    ``arc``, ``mro``, ``init`` and ``difficulty`` left as None take the method's value; ``amp`` left
    as None is on with CUDA and off on the CPU, where fp16 autocast is many times slower (asked for
    there, it runs, to test AMP's path); ``device`` ``auto`` becomes the concrete device.
    """

    dataset: str
    ipc: int
    method: str = layout.DEFAULT_METHOD
    seed: int = 0
    build_root: str = "build"
    data_root: str = "data"
    download: bool = False
    device: str = "auto"
    arc: bool | None = None
    mro: bool | None = None
    amp: bool | None = None
    init: str | None = None
    difficulty: str | None = None
    teacher: str | None = None  # overrides the preset's FADRM teacher
    teacher_weights: str | None = None
    build_dir: str | None = None
    evaluate: bool | None = None  # train and test a student after relabel; None: preset.evaluate_by_default

    def __post_init__(self) -> None:
        method = METHODS[one_of("method", self.method, METHODS)]
        if not isinstance(self.ipc, int) or isinstance(self.ipc, bool) or self.ipc <= 0:
            raise BuildError(f"ipc must be a positive integer, got {self.ipc!r}")
        resolved = {name: default if getattr(self, name) is None else getattr(self, name)
                    for name, default in method.switches().items()}
        one_of("init", resolved["init"], INITS)
        one_of("difficulty", resolved["difficulty"], DIFFICULTIES)
        device = resolve_device(self.device)
        amp = device.type == "cuda" if self.amp is None else self.amp
        if method.cycled_teachers and self.teacher:
            raise BuildError(f"--teacher {self.teacher} names FADRM's one teacher, but {method.name} cycles the "
                             "preset's several teachers; drop --teacher, or use --method fadrm")
        if method.cycled_teachers and self.teacher_weights:
            raise BuildError(f"--teacher-weights gives one weights file, but {method.name} cycles several "
                             "teachers; drop --teacher-weights (they are trained or downloaded), or use --method fadrm")
        for name, value in {**resolved, "device": str(device), "amp": amp}.items():
            object.__setattr__(self, name, value)

    @property
    def spec(self) -> Method:
        """The method's meaning."""
        return METHODS[self.method]

    @property
    def directory(self) -> Path:
        if self.build_dir:
            return Path(self.build_dir)
        return layout.build_dir(self.build_root, self.dataset, self.ipc, self.method)

    @property
    def teachers_dir(self) -> Path:
        return layout.teachers_dir(self.build_root, self.dataset)

    def teacher_names(self, preset: Preset) -> tuple[str, ...]:
        return self.spec.teacher_names(self.teacher or preset.teacher, preset.teachers_plus)

    def replace(self, **changes) -> BuildOptions:
        return dataclasses.replace(self, **changes)


__all__ = ["BuildError", "BuildFailed", "BuildOptions", "resolve_device"]
