"""One build as its stages see it: the effective preset, the options, the device, the build directory
and the teachers, decided once by :func:`open_build` and handed to every stage."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fadrm_datasets.layout import BuildDirectory

from .options import BuildOptions
from .presets import Preset
from .teachers import TeacherSet, resolve_teachers


@dataclass
class BuildContext:
    preset: Preset
    options: BuildOptions
    device: torch.device
    directory: BuildDirectory
    teachers: TeacherSet

    def record_teachers(self) -> dict:
        """Write the teachers into the build's manifest."""
        return self.directory.update_manifest(teachers=self.teachers.records(),
                                              teachers_dir=str(self.options.teachers_dir))


def open_build(preset: Preset, options: BuildOptions, retrain: bool = False) -> BuildContext:
    """The build of ``options`` with ``preset``: its teachers resolved (trained when missing) once."""
    device = torch.device(options.device)
    return BuildContext(preset, options, device, BuildDirectory(options.directory),
                        resolve_teachers(preset, options, device, retrain))


__all__ = ["BuildContext", "open_build"]
