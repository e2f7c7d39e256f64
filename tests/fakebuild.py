"""Fake, tiny build directories for the library and publishing tests (no recover run needed).

``make_build(path, seed=...)`` writes what the build stages would: ``images/<class>/<ipc_id>.png``,
a teacher file, optionally a real soft-label store (written by ``builders.relabel``), and a
``manifest.json`` with the preset, options, teachers, evaluations and the sha256 of every file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fadrm_datasets import layout
from fadrm_datasets.layout import BuildDirectory
from builders.imaging import save_png
from builders.presets import get_preset

NUM_CLASSES, IPC, SIZE = 4, 10, 8
CLASSES = ["ant", "bee", "cat", "dog"]


def tiny_preset(num_classes: int = NUM_CLASSES, size: int = SIZE, channels: int = 3):
    return get_preset("cifar100").replace(name="tiny-test", display_name="Tiny test", source="none", num_classes=num_classes,
                            class_names=None,
                            image_size=size, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels,
                            stage_resolutions=(size,), stage_iterations=(1,), relabel_epochs=2,
                            relabel_batch_size=8, relabel_crop_scale=(0.5, 1.0))


def tiny_convnet(channels: int, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def make_build(path: Path, seed: int = 0, ipc: int = IPC, num_classes: int = NUM_CLASSES, size: int = SIZE,
               channels: int = 3, soft_labels: bool = False, teacher: bool = True, classes=CLASSES) -> Path:
    """A finished build of ``num_classes x ipc`` random images (pixels depend on ``seed``)."""
    path = Path(path)
    preset = tiny_preset(num_classes, size, channels)
    build = BuildDirectory(path)
    rng = np.random.default_rng(seed)
    for label in range(num_classes):
        for ipc_id in range(ipc):
            pixels = rng.integers(0, 256, size=(channels, size, size), dtype=np.uint8)
            pixels[:, 0, 0] = (label * 20 + ipc_id) % 256  # makes every image tell which it is
            save_png(build.image_path(label, ipc_id), torch.from_numpy(pixels))
    teachers = {}
    if teacher:
        from safetensors.torch import save_file

        teacher_file = path.parent / f"teachers-{path.name}" / layout.teacher_file("tiny-convnet")
        teacher_file.parent.mkdir(parents=True, exist_ok=True)
        save_file(tiny_convnet(channels, num_classes).state_dict(), str(teacher_file))
        from fadrm_datasets._io import sha256_file

        teachers["tiny-convnet"] = {"source": "trained", "file": teacher_file.name, "sha256": sha256_file(teacher_file),
                                    "test_top1": "91.50", "test_top5": "99.90", "arch": "tiny-convnet"}
    if soft_labels:
        from builders.relabel import RelabelConfig, write_soft_labels

        images, _, _ = build.load_images(channels)
        config = RelabelConfig(epochs=preset.relabel_epochs, batch_size=preset.relabel_batch_size,
                               crop_scale=preset.relabel_crop_scale, seed=seed)
        write_soft_labels([tiny_convnet(channels, num_classes)], ["tiny-convnet"], images, preset,
                          build.soft_labels, config, progress=False)
    # The local paths a real build records: publishing must leave them all out.
    options = {"dataset": preset.name, "ipc": ipc, "method": "fadrm", "seed": seed, "device": "cpu",
               "build_root": str(path.parent), "build_dir": str(path), "data_root": str(path.parent / "data")}
    manifest = dict(dataset=preset.name, ipc=ipc, method="fadrm", seed=seed, preset=preset.to_dict(),
                    options=options, teachers=teachers, format_version=1,
                    evaluations=[{"student": "convnet-bn", "split": "test", "epochs": 3, "top1_best": 55.5, "top1_final": 54.0,
                                  "top5": 90.25, "command": f"fadrm-build evaluate {path} --data-root {path.parent}/data"}])
    if teacher:
        manifest["teachers_dir"] = str(teacher_file.parent)
    if classes is not None:
        manifest["classes"] = list(classes)[:num_classes]
    build.update_manifest(recorded_files(build), **manifest)  # as recover and relabel record them
    return path


def recorded_files(build: BuildDirectory) -> list[str]:
    """What recover and relabel record: every image, and the soft-label store's index and shards."""
    from fadrm_datasets.schema import SOFT_LABEL_INDEX_FILE, read
    from fadrm_datasets.softlabels import INDEX, store_files

    files = [entry.path.relative_to(build.root).as_posix() for entry in build.scan_images()]
    if (build.soft_labels / INDEX).is_file():
        index = read(build.soft_labels / INDEX, SOFT_LABEL_INDEX_FILE)
        files += [f"{layout.SOFT_LABELS}/{name}" for name in store_files(index)]
    return files


def expected_pixels(build: Path, channels: int = 3) -> list[np.ndarray]:
    """The build's images as HWC (or HW) uint8 arrays, in canonical order (label, ipc_id)."""
    from PIL import Image

    out = []
    for png in sorted((Path(build) / layout.IMAGES).glob("*/*.png")):
        with Image.open(png) as img:
            out.append(np.asarray(img.convert("L" if channels == 1 else "RGB")))
    return out
