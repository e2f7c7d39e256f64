"""Every dataset through the whole pipeline, on fake data in its real on-disk format.

As torchvision's dataset tests do, each configuration writes a fake source in the layout a user has
(torchvision's CIFAR-100 pickles, the Tiny-ImageNet zip or its extracted folder, an ImageNet
ImageFolder tree or an image dataset on the Hub, Fashion-MNIST's idx files), at a few images per
class. The preset keeps its real geometry, class count, class blocks, MRO schedule and soft-label
layout; only the teacher is a tiny ConvNet and the budgets are a step or an epoch. Then, as a user
would: ``fadrm-build DATASET --ipc N ...`` (teacher, patches, recover, relabel, evaluate) ->
``fadrm-build push`` to the loopback Hub -> the flat class with no root downloads it into the cache
directory and replays its soft labels through the stock DataLoader.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from builders import presets
from builders.methods import METHODS
from fadrm_datasets import hub as fhub
from fadrm_datasets import layout
from fadrm_datasets import registry
from fadrm_datasets.sets import SET_CLASSES
from tests import fakedata
from tests.helpers import run_cli_ok


@dataclass(frozen=True)
class Variant:
    """One way a user has a source on disk, and what the test builds from it."""

    id: str
    make_source: Callable  # (folder, hub, monkeypatch) -> --data-root
    ipc: int = 1
    method: str = "fadrm"


@dataclass(frozen=True)
class Config:
    id: str
    dataset: str
    ipc: int
    version: str
    make_source: Callable
    teacher: str  # a tiny architecture that fits the image size
    method: str = "fadrm"
    flags: tuple[str, ...] = ()
    given_weights: bool = False  # pass the teacher as --teacher-weights (a preset with no recipe)
    threads: int = 1  # 224-pixel units are worth both cores


def fashion_source(folder: Path, hub, monkeypatch) -> str:
    return str(fakedata.make_fashion_mnist(folder, per_class=30, test_per_class=3))


def cifar_source(folder: Path, hub, monkeypatch) -> str:
    from torchvision.datasets import CIFAR100

    md5 = fakedata.make_cifar100(folder)
    # torchvision checks the archive's files against its md5 list; the fake files have their own.
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    return str(folder)


def tiny_zip_source(folder: Path, hub, monkeypatch) -> str:
    return str(fakedata.make_tiny_imagenet(folder, zipped=True))


def tiny_folder_source(folder: Path, hub, monkeypatch) -> str:
    return str(fakedata.make_tiny_imagenet(folder, zipped=False))


def imagenet_folder_source(folder: Path, hub, monkeypatch) -> str:
    return str(fakedata.make_imagenet_folder(folder))


def imagenet_hub_source(folder: Path, hub, monkeypatch) -> str:
    return fakedata.push_imagenet_to_hub(hub.repo_id("imagenet-1k"))


def imagenet_subset_options() -> list[dict]:
    return [dict(p.source_options) for p in presets.PRESETS.values() if p.source == "imagenet-subset"]


def imagenet_subset_release_source(folder: Path, hub, monkeypatch) -> str:
    # A maker is not told which dataset it feeds: this one writes the release of every ImageNet subset.
    for options in imagenet_subset_options():
        fakedata.make_imagenet_subset_release(folder, options["release"], options["wnids"])
    return str(folder)


def imagenet_subset_tree_source(folder: Path, hub, monkeypatch) -> str:
    # An ImageNet tree holds every subset's classes and others that none reads.
    wnids = sorted({wnid for options in imagenet_subset_options() for wnid in options["wnids"]} | {"n09999999"})
    return str(fakedata.make_image_folder_tree(folder, wnids))


# The fake sources of each source reader (a preset's ``source``), one per on-disk form a user has.
# The Hub source is about reading the data: its set is the random real subset (no recover), which
# still goes through the teacher, patches, relabel, evaluate, push and load. Fashion-MNIST is loaded
# exactly as the README writes it, at IPC 10.
FAKE_SOURCES: dict[str, tuple[Variant, ...]] = {
    "fashion-mnist": (Variant("", fashion_source, ipc=10),),
    "cifar100": (Variant("", cifar_source), Variant("fadrm+", cifar_source, ipc=2, method="fadrm+"),
                 Variant("rded", cifar_source, method="rded")),
    "tiny-imagenet": (Variant("zip", tiny_zip_source), Variant("folder", tiny_folder_source, ipc=2),
                      Variant("folder-rded", tiny_folder_source, method="rded")),
    "imagenet": (Variant("folder", imagenet_folder_source),
                 Variant("hf-random-real", imagenet_hub_source, method="random-real"),
                 Variant("folder-rded", imagenet_folder_source, method="rded")),
    "imagenet-subset": (Variant("release", imagenet_subset_release_source),
                        Variant("imagenet-tree", imagenet_subset_tree_source, ipc=2),
                        # RDED at factor 2 on 224-pixel images, in the default suite.
                        Variant("release-rded", imagenet_subset_release_source, method="rded")),
}

# Recover takes a small step on 224-pixel images so they stay smooth: the pushed parquet stays small.
SMALL_STEP = ("--lr", "0.001")


def tiny_teacher_name(image_size: int) -> str:
    """A tiny ConvNet-BN deep enough to pool an image of this size down (28 -> 2 blocks ... 224 -> 5)."""
    depth = min(5, max(2, image_size.bit_length() - 3))
    return f"convnet-bn-w{4 if image_size >= 224 else 8}-d{depth}"


def configs() -> list:
    """Every declared dataset, through each on-disk form of its source, as pytest parameters; a
    dataset whose source has no fake form here fails (add one to FAKE_SOURCES)."""
    found = []
    for dataset, preset in sorted(presets.PRESETS.items()):
        large = preset.image_size >= 224
        for number, variant in enumerate(FAKE_SOURCES.get(preset.source, (Variant("no-fake-source", None),))):
            config = Config("-".join(filter(None, (dataset, variant.id))), dataset, variant.ipc, f"v1.{number}.0",
                            variant.make_source, tiny_teacher_name(preset.image_size), variant.method,
                            flags=SMALL_STEP if large and METHODS[variant.method].optimises else (),
                            given_weights=preset.teacher_recipe is None, threads=2 if large else 1)
            found.append(pytest.param(config, id=config.id))
    return found


CONFIGS = configs()


def tiny_preset(preset: presets.Preset, teacher: str) -> presets.Preset:
    """The dataset's preset with a tiny teacher and student and budgets of one step or epoch; its
    geometry, classes, class blocks, MRO schedule, RDED factor and soft-label layout stay the real ones."""
    recipe = preset.teacher_recipe
    if recipe is not None:
        recipe = dataclasses.replace(recipe, epochs=1, batch_size=64, epochs_from_ipc=())
    # Its real factor; one crop an image: ImageNet-1K's teacher scores 4,000 crops of 224 pixels, not 8,000.
    rded = {**preset.methods.get("rded", {}), "images_per_class": 2, "crops_per_image": 1}
    return preset.replace(methods={**preset.methods, "rded": rded},
                          teacher=teacher, teachers_plus=(teacher, teacher.rsplit("-d", 1)[0] + "-d2"),
                          teacher_recipe=recipe, student=teacher, patch_candidates=2,
                          stage_iterations=(1,) * len(preset.stage_resolutions), relabel_epochs=1, eval_epochs=1)


@pytest.fixture
def user_cache(tmp_path, monkeypatch, hub) -> Path:
    """The per-user cache the flat classes use without a root, and the Hub organisation of the sets."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv(fhub.CACHE_ENV, str(cache))
    monkeypatch.setenv(registry.ORG_ENV, hub.org)
    return cache


@pytest.mark.parametrize("config", CONFIGS)
def test_dataset_end_to_end(config: Config, tmp_path, hub, monkeypatch, user_cache):
    from safetensors.torch import save_file

    from builders.models import build_model

    assert config.make_source is not None, f"no fake source for {config.dataset}'s reader: add one to FAKE_SOURCES"
    torch.set_num_threads(config.threads)  # the one_thread fixture puts it back
    real = presets.get_preset(config.dataset)
    preset = tiny_preset(real, config.teacher)
    monkeypatch.setitem(presets.PRESETS, config.dataset, preset)
    data_root = config.make_source(tmp_path / "data", hub, monkeypatch)
    build_dir = tmp_path / "build" / layout.build_dir_name(config.ipc)
    args = [config.dataset, "--ipc", str(config.ipc), "--method", config.method, "--data-root", data_root,
            "--build-root", str(tmp_path / "build"), "--build-dir", str(build_dir), "--device", "cpu",
            "--epochs", "1", "--evaluate", *config.flags]
    if config.given_weights:
        weights = tmp_path / f"{config.teacher}.safetensors"  # not a set's name: given weights
        save_file(build_model(config.teacher, real.num_classes, real.channels, real.image_size).state_dict(),
                  str(weights))
        args += ["--teacher", config.teacher, "--teacher-weights", str(weights)]
    run_cli_ok(args)

    manifest = json.loads((build_dir / layout.MANIFEST).read_text())
    assert manifest["stages"]["relabel"]["complete"] and manifest["stages"]["recover"]["complete"]
    teachers = preset.teachers_plus if config.method == "fadrm+" else (config.teacher,)
    assert sorted(manifest["teachers"]) == sorted(teachers)
    if METHODS[config.method].optimises:
        assert manifest["stages"]["recover"]["settings"]["teachers"] == list(teachers)  # in round-robin order
        units = manifest["stages"]["recover"]["units_total"]
        assert units == config.ipc * -(-real.num_classes // real.class_block)  # class blocks of the real preset
    evaluation, = manifest["evaluations"]
    assert evaluation["epochs"] == 1 and evaluation["student"] == config.teacher and 0 <= evaluation["top1_final"] <= 100

    repo_id = f"{hub.org}/{registry.get_set(config.dataset).repo_name}"
    run_cli_ok(["push", str(build_dir), "--repo", repo_id, "--version", config.version])

    flat = SET_CLASSES[config.dataset]
    if config.dataset == "fashion-mnist":
        data = flat(ipc=10, download=True)  # exactly as the README writes it: no root, no version
        assert data.version == config.version
        data = flat(ipc=10, download=True, soft_labels=True)
    else:
        data = flat(ipc=config.ipc, version=config.version, download=True, soft_labels=True)
    assert Path(data.root) == user_cache and (fhub.version_dir(user_cache, repo_id, config.version) / layout.MANIFEST).is_file()

    # What a user sees: the images and classes of the set, at its size and colour mode.
    assert len(data) == real.num_classes * config.ipc and len(data.classes) == real.num_classes
    expected_classes = real.class_names or fakedata.tiny_imagenet_wnids()
    assert data.classes == list(registry.unique_names(expected_classes))
    image, label = data[len(data) - 1]
    assert image.size == (real.image_size, real.image_size) and image.mode == ("L" if real.channels == 1 else "RGB")
    assert label == real.num_classes - 1
    assert data.targets == [c for c in range(real.num_classes) for _ in range(config.ipc)]
    pixels = np.asarray(image)
    local = np.asarray(flat.from_build(build_dir)[len(data) - 1][0])
    assert np.array_equal(pixels, local)  # the pushed set is the built one, byte for byte

    # The soft labels replay through the stock DataLoader: dense, or top-k for ImageNet's 1000 classes.
    store = data.soft_label_store
    assert store.topk == real.soft_label_topk and store.epochs == 1
    record = store.epoch(0)
    seen = 0
    for images, soft, labels in data.soft_label_loader(0, num_workers=0):
        batch = slice(seen, seen + len(labels))
        assert images.shape == (len(labels), real.channels, real.image_size, real.image_size)
        assert torch.equal(soft, record.logits[batch])
        assert labels.tolist() == [data.targets[i] for i in record.order[batch].tolist()]
        seen += len(labels)
    assert seen == len(data)

    # The card: the dataset's own text, its configs, the measured evaluation, the image grid.
    from huggingface_hub import hf_hub_download

    from builders.card import cards_dir, split_front_matter

    card = Path(hf_hub_download(repo_id, layout.README, repo_type="dataset", revision=config.version)).read_text()
    front, body = split_front_matter(card)
    assert layout.ipc_dir(config.ipc) in [c["config_name"] for c in front["configs"]]
    assert front["license"] == registry.get_set(config.dataset).license
    assert (cards_dir() / f"{config.dataset}.md").read_text().strip() in body
    assert f"from fadrm_datasets import {flat.__name__}" in body and "| 1 |" in body
    assert f"![IPC {config.ipc} images](ipc{config.ipc}/grid.png)" in body
