"""The sets as torchvision datasets, read from local build directories (no Hub), and the registry."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import VisionDataset
from torchvision.transforms import v2

from fadrm_datasets import layout
from fadrm_datasets import registry
from fadrm_datasets.sets import (FADRMCIFAR100, FADRMDataset, FADRMFashionMNIST, FADRMImageNet, FADRMTinyImageNet,
                                 SetNotFoundError)
from tests.fakebuild import CLASSES, expected_pixels, make_build
from tests.helpers import shard_files


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("sets") / layout.build_dir_name(10), seed=7, soft_labels=True)


def test_torchvision_behaviour(build):
    ds = FADRMDataset.from_build(build)
    assert isinstance(ds, VisionDataset)
    assert len(ds) == 40 and ds.ipc == 10 and ds.version is None
    assert ds.classes == CLASSES and ds.class_to_idx == {"ant": 0, "bee": 1, "cat": 2, "dog": 3}
    assert ds.targets == [label for label in range(4) for _ in range(10)]  # canonical order
    assert ds.ipc_ids == list(range(10)) * 4
    image, label = ds[13]
    assert image.mode == "RGB" and image.size == (8, 8) and label == 1
    assert np.array_equal(np.asarray(image), expected_pixels(build)[13])
    assert ds[-1][1] == 3
    with pytest.raises(IndexError):
        ds[40]


def test_transforms_and_target_transform(build):
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    ds = FADRMDataset.from_build(build, transform=transform, target_transform=lambda y: CLASSES[y])
    image, label = ds[25]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and label == "cat"
    assert "ToImage" in repr(ds)


def test_pickle_and_dataloader_workers(build):
    ds = FADRMDataset.from_build(build, transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.uint8)]))
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and copy.targets == ds.targets
    assert torch.equal(copy[5][0], ds[5][0])
    loader = DataLoader(ds, batch_size=16, num_workers=1)
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 8, 8) and labels.tolist() == ds.targets[:16]


def test_repr_shows_ipc_version_and_soft_label_epochs(build):
    text = repr(FADRMDataset.from_build(build, soft_labels=True))
    assert text.startswith("Dataset FADRMDataset") and "Number of datapoints: 40" in text
    assert "IPC: 10" in text and "Version: local build at" in text and "Soft-label epochs: 2" in text
    assert "Soft-label epochs: not loaded" in repr(FADRMDataset.from_build(build))


def test_soft_label_loader_replays_the_recorded_epoch(build):
    ds = FADRMDataset.from_build(build, soft_labels=True)
    batches = list(ds.soft_label_loader(0))
    assert sum(len(y) for _, _, y in batches) == 40
    images, soft, labels = batches[0]
    assert images.shape == (8, 3, 8, 8) and images.dtype == torch.float32 and soft.shape == (8, 4)
    order = ds.soft_label_store.epoch(0).order[:8].long()
    assert labels.tolist() == [ds.targets[i] for i in order]
    again = next(iter(ds.soft_label_loader(0, num_workers=1)))
    assert all(torch.equal(a, b) for a, b in zip(batches[0], again))
    with pytest.raises(RuntimeError, match="soft_labels=True"):
        FADRMDataset.from_build(build).soft_label_loader(0)


def test_integrity_check_and_build_errors(build, tmp_path):
    import shutil

    copy = tmp_path / layout.build_dir_name(10)
    shutil.copytree(build, copy)
    ds = FADRMDataset.from_build(copy)
    assert ds._check_integrity()
    png = copy / layout.image_relpath(2, 3)
    png.write_bytes(png.read_bytes()[:-4] + b"xxxx")
    assert not ds._check_integrity()
    with pytest.raises(ValueError, match="holds ipc=10, not ipc=5"):
        FADRMDataset(None, ipc=5, build_dir=copy)
    with pytest.raises(SetNotFoundError, match="no build directory.*fadrm-build"):
        FADRMDataset.from_build(tmp_path / "nowhere")


def test_missing_set_says_how_to_get_it(tmp_path):
    with pytest.raises(SetNotFoundError) as info:
        FADRMCIFAR100(tmp_path, ipc=10)
    message = str(info.value)
    assert "download=True" in message and "fadrm-build cifar100 --ipc 10" in message and "\n" not in message
    with pytest.raises(ValueError, match="repo_id="):
        FADRMDataset(tmp_path)


def test_flat_subclasses_carry_their_constants(tmp_path):
    assert FADRMCIFAR100.classes[:3] == ["apple", "aquarium_fish", "baby"] and len(FADRMCIFAR100.classes) == 100
    assert FADRMFashionMNIST.classes[0] == "T-shirt/top" and FADRMFashionMNIST.channels == 1
    assert (FADRMTinyImageNet.num_classes, FADRMTinyImageNet.image_size) == (200, 64)
    assert FADRMImageNet.mean == (0.485, 0.456, 0.406) and FADRMImageNet.image_size == 224
    # A flat subclass reads a local build too (classes from the manifest).
    build = make_build(tmp_path / layout.build_dir_name(2), ipc=2, num_classes=10, size=28, channels=1, classes=None)
    ds = FADRMFashionMNIST(None, ipc=2, build_dir=build)
    assert len(ds) == 20 and ds.classes == FADRMFashionMNIST.classes and ds[0][0].mode == "L"


def test_registry(monkeypatch):
    monkeypatch.delenv(registry.ORG_ENV, raising=False)
    assert registry.get_set("cifar100").repo_id == f"{registry.DEFAULT_ORG}/fadrm-cifar100"
    monkeypatch.setenv(registry.ORG_ENV, "mirror")
    assert registry.get_set("cifar100").repo_id == "mirror/fadrm-cifar100"
    assert registry.find_by_repo("mirror/fadrm-imagenet").name == "imagenet"
    assert registry.newest_version(["v1.2.0", "v1.10.0", "v1.9.3", "main", "vx"]) == "v1.10.0"
    imagenet = registry.get_set("imagenet").classes
    assert len(imagenet) == 1000 and len(set(imagenet)) == 1000
    assert registry.unique_names(["a", "b", "a"]) == ("a", "b", "a (2)")
    with pytest.raises(KeyError, match="unknown set 'mnist'"):
        registry.get_set("mnist")
    with pytest.raises(ValueError, match="vX.Y.Z"):
        registry.get_set("cifar100").replace(default_version="1.0")


def test_library_imports_stay_light():
    code = ("import sys, fadrm_datasets, fadrm_datasets.sets, fadrm_datasets.hub, fadrm_datasets.registry\n"
            "bad = [m for m in ('builders', 'datasets', 'huggingface_hub', 'pyarrow', 'click') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_root_is_optional_and_defaults_to_a_per_user_cache(tmp_path, monkeypatch):
    import inspect

    from fadrm_datasets import hub

    monkeypatch.delenv(hub.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.default_root() == tmp_path / "xdg" / "fadrm_datasets"
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "mine"))  # like HF_HOME for the Hub's cache
    assert hub.default_root() == tmp_path / "mine"
    for cls in (FADRMCIFAR100, FADRMTinyImageNet, FADRMImageNet, FADRMFashionMNIST, FADRMDataset):
        assert inspect.signature(cls).parameters["root"].default is None
    with pytest.raises(SetNotFoundError, match="download=True"):  # the cache is where it looks
        FADRMImageNet(ipc=10)
    assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine").rglob("*.parquet"))


def test_a_local_build_is_checked_against_its_manifest_when_opened(build, tmp_path):
    import shutil

    from fadrm_datasets.sets import IntegrityError

    copy = tmp_path / layout.build_dir_name(10)
    shutil.copytree(build, copy)
    FADRMDataset.from_build(copy, soft_labels=True)
    shard = shard_files(copy / layout.SOFT_LABELS)[0]
    shard.write_bytes(shard.read_bytes()[:-2] + b"\x00\x01")
    FADRMDataset.from_build(copy)  # the images alone are intact
    with pytest.raises(IntegrityError, match="do not match the sha256"):
        FADRMDataset.from_build(copy, soft_labels=True)
    png = copy / layout.image_relpath(1, 2)
    png.write_bytes(png.read_bytes()[:-4] + b"xxxx")
    with pytest.raises(IntegrityError, match="do not match the sha256"):
        FADRMDataset.from_build(copy)


def test_a_local_build_refuses_images_its_manifest_does_not_record(build, tmp_path):
    import shutil

    from fadrm_datasets.sets import IntegrityError

    copy = tmp_path / layout.build_dir_name(10)
    shutil.copytree(build, copy)
    extra = copy / layout.image_relpath(3, 10)  # as a killed recover, or a hand, would leave it
    shutil.copy(copy / layout.image_relpath(3, 9), extra)
    with pytest.raises(IntegrityError, match=f"{layout.image_relpath(3, 10)} is not recorded"):
        FADRMDataset.from_build(copy)


def test_the_type_stub_lists_every_flat_class_the_declarations_make():
    import ast
    from pathlib import Path

    import fadrm_datasets
    from fadrm_datasets.sets import SET_CLASSES

    stub = ast.parse((Path(fadrm_datasets.__file__).parent / "__init__.pyi").read_text())
    listed = sorted(node.name for node in stub.body if isinstance(node, ast.ClassDef))
    assert listed == sorted(cls.__name__ for cls in SET_CLASSES.values()), "update fadrm_datasets/__init__.pyi"
    assert all(getattr(fadrm_datasets, name) is SET_CLASSES[getattr(fadrm_datasets, name).set_name] for name in listed)
