"""One build as its stages see it: the effective preset, the options, the device, the build directory
and the teachers, decided once by :func:`open_build` and handed to every stage."""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from typing import Iterator

import torch

from fadrm_datasets.layout import BuildDirectory

from . import distributed
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
        """Write the teachers into the build's manifest (``teachers_dir`` is local: never published)."""
        return self.directory.update_manifest(teachers=self.teachers.records(),
                                              teachers_dir=str(self.options.teachers_dir.resolve()))


def device_name(device: torch.device) -> str:
    """The device in words, for records: the GPU's name, or the CPU with its intra-op threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' * (threads > 1)})"


def environment(device: torch.device) -> dict:
    """What decides the exact bits a build writes (RELIABILITY.md, "Determinism"): the same values give
    byte-identical images and soft labels, whatever the order or the number of processes."""
    env = {"torch": torch.__version__, "device": device.type, "threads": torch.get_num_threads(),
           "machine": platform.machine()}
    if device.type == "cuda":
        env.update(gpu=device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


@contextlib.contextmanager
def hold(directory: BuildDirectory, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group (if launched by it) and hold ``directory`` for this job: one builder
    at a time, a second one refused at once. The ranks of one job share it: rank 0 holds it for them."""
    held = directory.lock() if distributed.is_main() else contextlib.nullcontext()
    with distributed.process_group(device), held:
        yield


@contextlib.contextmanager
def open_build(preset: Preset, options: BuildOptions, retrain: bool = False) -> Iterator[BuildContext]:
    """The build of ``options`` with ``preset``, its directory held for this builder alone (a second one
    is refused at once) and its teachers resolved once (trained when missing). Under torchrun each rank
    opens it; rank 0 holds the directory and trains a missing teacher."""
    device = distributed.local_device(torch.device(options.device))
    directory = BuildDirectory(options.directory)
    with hold(directory, device):
        with distributed.main_first():  # rank 0 trains a missing teacher while the others wait
            teachers = resolve_teachers(preset, options, device, retrain)
        yield BuildContext(preset, options, device, directory, teachers)


__all__ = ["BuildContext", "device_name", "environment", "hold", "open_build"]
