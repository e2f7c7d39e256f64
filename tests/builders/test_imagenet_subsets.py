"""The ImageNet-subset source (ImageNette, ImageWoof) on fake data in fastai's released layout and in an
ImageNet ImageFolder tree."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from builders.presets import PRESETS
from builders.sources import DataNotFoundError, load_imagenet_subset, load_split
from tests.fakedata import make_image_folder_tree, make_imagenet_subset_release

# Not sorted: the labels must follow the declaration's order, not the folders' names.
WNIDS = ("n03000684", "n01440764", "n02102040")


def class_of(path: str) -> str:
    return Path(path).parent.name


def test_the_release_is_read_in_the_declared_class_order(tmp_path):
    make_imagenet_subset_release(tmp_path, "imagenette2-320", WNIDS, per_class=2, val_per_class=1)
    train = load_imagenet_subset(tmp_path, "train", False, release="imagenette2-320", wnids=WNIDS)
    test = load_imagenet_subset(tmp_path, "test", False, release="imagenette2-320", wnids=WNIDS)
    assert train.classes == list(WNIDS) and train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert [class_of(f) for f in train.files] == [w for w in WNIDS for _ in range(2)]
    assert [Path(f).parts[-3] for f in test.files] == ["val"] * 3 and test.targets.tolist() == [0, 1, 2]
    image, label = train[2]
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and label == 1


def test_an_imagenet_tree_is_filtered_to_the_declared_classes(tmp_path):
    make_image_folder_tree(tmp_path, ("n01443537", *WNIDS, "n09999999"), per_class=2, val_per_class=1)
    train = load_imagenet_subset(tmp_path, "train", False, release="imagenette2-320", wnids=WNIDS)
    val = load_imagenet_subset(tmp_path, "test", False, release="imagenette2-320", wnids=WNIDS)
    assert [class_of(f) for f in train.files] == [w for w in WNIDS for _ in range(2)]
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2] and val.targets.tolist() == [0, 1, 2]


def test_a_missing_class_says_which_and_where(tmp_path):
    make_imagenet_subset_release(tmp_path, "imagewoof2-320", WNIDS[:2])
    with pytest.raises(DataNotFoundError, match=rf"no images of class {WNIDS[2]} in .*imagewoof2-320/train/"
                                                rf"{WNIDS[2]}; point --data-root at the whole imagewoof2-320"):
        load_imagenet_subset(tmp_path, "train", False, release="imagewoof2-320", wnids=WNIDS)


@pytest.mark.parametrize("url, advice", [("https://example.invalid/imagewoof2-320.tgz", "pass --download to fetch it"),
                                         (None, "no download is known for it")])
def test_no_data_says_where_it_looked_and_what_to_do(tmp_path, url, advice):
    with pytest.raises(DataNotFoundError) as raised:
        load_imagenet_subset(tmp_path, "train", False, release="imagewoof2-320", wnids=WNIDS, url=url)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(advice)
    assert f"{tmp_path}/imagewoof2-320/" in message and f"{tmp_path}/imagewoof2-320.tgz" in message


def write_release_archive(tmp_path: Path, release: str, archive: Path) -> None:
    make_imagenet_subset_release(tmp_path / "made", release, WNIDS, per_class=1, val_per_class=1)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / release, arcname=release)
    shutil.rmtree(tmp_path / "made")


def test_a_release_archive_beside_the_data_is_extracted(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_release_archive(tmp_path, "imagewoof2-320", root / "imagewoof2-320.tgz")
    train = load_imagenet_subset(root, "train", False, release="imagewoof2-320", wnids=WNIDS)
    assert train.targets.tolist() == [0, 1, 2] and (root / "imagewoof2-320" / "val" / WNIDS[0]).is_dir()


def test_an_archive_reaching_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "imagewoof2-320.tgz", "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 2
        tar.addfile(member, io.BytesIO(b"hi"))
    with pytest.raises(DataNotFoundError, match="refusing the path '../escaped.txt'.*delete .*imagewoof2-320.tgz"):
        load_imagenet_subset(root, "train", False, release="imagewoof2-320", wnids=WNIDS)
    assert not (tmp_path / "escaped.txt").exists() and os.listdir(root) == ["imagewoof2-320.tgz"]


def test_a_cut_archive_gets_one_line_and_leaves_no_half_release(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    whole = tmp_path / "whole.tgz"
    write_release_archive(tmp_path, "imagewoof2-320", whole)
    (root / "imagewoof2-320.tgz").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataNotFoundError, match="cannot be extracted .*; delete .* and pass --download") as refused:
        load_imagenet_subset(root, "train", False, release="imagewoof2-320", wnids=WNIDS)
    assert len(str(refused.value).splitlines()) == 1
    assert os.listdir(root) == ["imagewoof2-320.tgz"]  # no partial release folder, no staging folder


def test_imagewoof_downloads_from_its_url_and_is_extracted(tmp_path, monkeypatch):
    fetched = []

    def fake_download_url(url, root, filename=None, md5=None):
        fetched.append((url, md5))
        write_release_archive(tmp_path, "imagewoof2-320", Path(root) / filename)

    monkeypatch.setattr("torchvision.datasets.utils.download_url", fake_download_url)
    root = tmp_path / "data"
    root.mkdir()
    url = "https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz"
    train = load_imagenet_subset(root, "train", True, release="imagewoof2-320", wnids=WNIDS, url=url)
    assert fetched == [(url, None)] and len(train) == 3


def test_imagenette_downloads_through_torchvision_with_its_checksum(tmp_path, monkeypatch):
    fetched = []

    def fake_download_and_extract_archive(url, download_root, md5=None, **kwargs):
        fetched.append((url, md5))
        make_imagenet_subset_release(download_root, "imagenette2-320", WNIDS, per_class=1)

    monkeypatch.setattr("torchvision.datasets.imagenette.download_and_extract_archive",
                        fake_download_and_extract_archive)
    train = load_imagenet_subset(tmp_path, "train", True, release="imagenette2-320", wnids=WNIDS)
    (url, md5), = fetched
    assert url == "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz" and len(md5) == 32
    assert train.targets.tolist() == [0, 1, 2]


SUBSETS = sorted(name for name, preset in PRESETS.items() if preset.source == "imagenet-subset")


@pytest.mark.parametrize("dataset", SUBSETS)
def test_a_declared_subset_reads_its_release_with_its_options(tmp_path, dataset):
    preset = PRESETS[dataset]
    release, wnids = preset.source_options["release"], preset.source_options["wnids"]
    make_imagenet_subset_release(tmp_path, release, wnids, per_class=1, val_per_class=1)
    train, test = load_split(preset, tmp_path, "train"), load_split(preset, tmp_path, "test")
    assert train.classes == list(wnids) and len(preset.class_names) == len(wnids) == preset.num_classes
    assert train.targets.tolist() == test.targets.tolist() == list(range(preset.num_classes))
    assert all(Path(f).parts[-4] == release for f in train.files + test.files)
