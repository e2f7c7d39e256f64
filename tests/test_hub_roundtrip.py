"""Publish tiny sets to the loopback Hub with the real clients, then load them back every way.

v1.0.0 and v1.1.0 of one repo hold different pixels (other seeds), so each test can tell which
version it got. Tests that change a repo (moving a tag, adding an IPC) use a repo of their own.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fadrm_datasets import hub as fhub
from fadrm_datasets import layout
from fadrm_datasets.registry import SETS, SetInfo, get_set
from fadrm_datasets.sets import (FADRMDataset, FADRMFashionMNIST, IntegrityError, IPCNotPublishedError,
                                 OfflineError, RepoNotFoundError, SetNotFoundError, VersionNotFoundError)
from builders.card import grid_layout
from tests.fakebuild import CLASSES, expected_pixels, make_build
from tests.helpers import pixels, run_cli


def same_pixels(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """A repo with v1.0.0 (seed 0, soft labels) and v1.1.0 (seed 1) of the same ipc10 set."""
    from builders.publish import push

    base = tmp_path_factory.mktemp("published")
    v1 = make_build(base / "v1" / layout.build_dir_name(10), seed=0, soft_labels=True)
    v2 = make_build(base / "v2" / layout.build_dir_name(10), seed=1)
    repo_id = hub.repo_id("fadrm-tiny")
    first = push(v1, repo_id, "v1.0.0")
    second = push(v2, repo_id, "v1.1.0")
    assert first.commit != second.commit
    return {"repo_id": repo_id, "v1": v1, "v2": v2}


def test_pinned_version_gets_its_own_bytes(published, tmp_path):
    ds = FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, version="v1.0.0", download=True)
    assert ds.version == "v1.0.0" and len(ds) == 40
    assert same_pixels(pixels(ds), expected_pixels(published["v1"]))
    assert ds.targets == sorted(ds.targets) and ds.classes == CLASSES
    assert ds._check_integrity()
    folder = fhub.version_dir(tmp_path, published["repo_id"], "v1.0.0")
    assert (folder / layout.MANIFEST).is_file() and (folder / layout.parquet_shard(10, 0, 1)).is_file()
    assert not (folder / layout.README).exists() and not (folder / layout.TEACHERS).exists()  # only what ipc10 needs


def test_no_version_gets_the_newest_tag(published, tmp_path):
    ds = FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, download=True)
    assert ds.version == "v1.1.0"
    assert same_pixels(pixels(ds), expected_pixels(published["v2"]))
    assert fhub.list_versions(published["repo_id"]) == ["v1.0.0", "v1.1.0"]


def test_registry_pin_wins_over_newest(published, tmp_path, monkeypatch):
    info = SetInfo(name="tiny-test", display_name="Tiny", repo_name="unused", num_classes=4, channels=3,
                   image_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, versions=("v1.0.0", "v1.1.0"),
                   default_version="v1.0.0", repo=published["repo_id"])
    monkeypatch.setitem(SETS, "tiny-test", info)
    ds = FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, download=True)
    assert ds.version == "v1.0.0"
    assert same_pixels(pixels(ds), expected_pixels(published["v1"]))


def test_datasets_load_dataset_matches_the_class(published, tmp_path):
    import datasets

    ours = FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, version="v1.0.0", download=True)
    theirs = datasets.load_dataset(published["repo_id"], layout.ipc_dir(10), revision="v1.0.0", split="train")
    assert isinstance(theirs.features["image"], datasets.Image)
    assert isinstance(theirs.features["label"], datasets.ClassLabel)
    assert theirs.features["label"].names == CLASSES
    assert theirs["label"] == ours.targets
    assert theirs["ipc_id"] == ours.ipc_ids
    assert same_pixels([np.asarray(im.convert("RGB")) for im in theirs["image"]], pixels(ours))


def test_corrupted_cached_file_is_detected_and_fetched_again(published, tmp_path, caplog):
    repo_id = published["repo_id"]
    FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    shard = fhub.version_dir(tmp_path, repo_id, "v1.0.0") / layout.parquet_shard(10, 0, 1)
    good = shard.read_bytes()
    shard.write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(IntegrityError, match="corrupted.*pass download=True"):
        FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0")
    with caplog.at_level("WARNING", logger="fadrm_datasets.hub"):
        ds = FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    assert "fetching them again" in caplog.text
    assert shard.read_bytes() == good
    assert same_pixels(pixels(ds), expected_pixels(published["v1"]))
    shard.unlink()  # a missing file is fetched again too
    FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    assert shard.read_bytes() == good


def test_offline_uses_a_filled_cache_and_fails_clearly_otherwise(published, tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo_id = published["repo_id"]
    FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ds = FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    assert same_pixels(pixels(ds), expected_pixels(published["v1"]))
    # No version and no pin: the newest downloaded version, without asking the Hub.
    assert FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, download=True).version == "v1.0.0"
    with pytest.raises(OfflineError, match="v1.1.0.*not downloaded.*HF_HUB_OFFLINE"):
        FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.1.0", download=True)
    shard = fhub.version_dir(tmp_path, repo_id, "v1.0.0") / layout.parquet_shard(10, 0, 1)
    shard.write_bytes(b"not parquet")
    with pytest.raises(OfflineError, match="corrupted.*HF_HUB_OFFLINE is set"):
        FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    with pytest.raises(SetNotFoundError, match="no downloaded version.*HF_HUB_OFFLINE"):
        FADRMDataset(tmp_path / "empty", repo_id=repo_id, ipc=10, download=True)


def test_unknown_version_unpublished_ipc_and_missing_repo(published, hub, tmp_path):
    repo_id = published["repo_id"]
    with pytest.raises(VersionNotFoundError, match=r"no version 'v9.9.9' \(published: v1.0.0, v1.1.0\)"):
        FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v9.9.9", download=True)
    with pytest.raises(VersionNotFoundError, match="like 'v1.0.0'"):
        FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="latest", download=True)
    with pytest.raises(IPCNotPublishedError, match=r"no ipc=50 \(published IPCs: 10\)"):
        FADRMDataset(tmp_path, repo_id=repo_id, ipc=50, version="v1.0.0", download=True)
    with pytest.raises(RepoNotFoundError, match="not found"):
        FADRMDataset(tmp_path, repo_id=hub.repo_id("never-pushed"), ipc=10, download=True)
    with pytest.raises(RepoNotFoundError, match="not found"):
        FADRMDataset(tmp_path, repo_id=hub.repo_id("never-pushed"), ipc=10, version="v1.0.0", download=True)
    with pytest.raises(SetNotFoundError, match="download=True.*fadrm-build"):
        FADRMDataset(tmp_path / "nothing", repo_id=repo_id, ipc=10, version="v1.0.0")


def test_soft_labels_travel_with_the_set(published, tmp_path):
    import torch

    local = FADRMDataset.from_build(published["v1"], soft_labels=True)
    remote = FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, version="v1.0.0", download=True,
                          soft_labels=True)
    assert remote.soft_label_epochs == 2 and "Soft-label epochs: 2" in repr(remote)
    for (xa, sa, ya), (xb, sb, yb) in zip(local.soft_label_loader(1), remote.soft_label_loader(1)):
        assert torch.equal(xa, xb) and torch.equal(sa, sb) and torch.equal(ya, yb)
    with pytest.raises(SetNotFoundError, match="no soft labels"):
        FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, version="v1.1.0", download=True,
                     soft_labels=True)


def test_pickled_hub_dataset_reads_its_shards_again(published, tmp_path):
    ds = FADRMDataset(tmp_path, repo_id=published["repo_id"], ipc=10, version="v1.0.0", download=True)
    data = pickle.dumps(ds)
    assert len(data) < 20_000  # the images are not in the pickle
    copy = pickle.loads(data)
    assert same_pixels(pixels(copy), pixels(ds)) and copy.targets == ds.targets


def test_card_validates_and_its_grid_is_a_real_png(published):
    from huggingface_hub import DatasetCard, hf_hub_download
    from PIL import Image

    repo_id = published["repo_id"]
    card_path = hf_hub_download(repo_id, layout.README, repo_type="dataset", revision="v1.1.0")
    card = DatasetCard.load(card_path)
    card.validate(repo_type="dataset")  # POST /api/validate-yaml on the loopback Hub
    assert card.data.to_dict()["configs"] == [
        {"config_name": layout.ipc_dir(10), "data_files": [{"split": "train", "path": layout.parquet_pattern(10)}]}]
    assert card.data.to_dict()["task_categories"] == ["image-classification"]
    assert "![IPC 10 images](ipc10/grid.png)" in card.text and "| 91.50 |" in card.text
    grid = hf_hub_download(repo_id, layout.ipc_prefix(10) + layout.GRID, repo_type="dataset", revision="v1.1.0")
    with Image.open(grid) as img:
        assert img.format == "PNG" and img.size == grid_layout(4, 10, 8).size
    manifest = json.loads(open(hf_hub_download(repo_id, layout.MANIFEST, repo_type="dataset",
                                               revision="v1.1.0")).read())
    ipc = layout.ipc_prefix(10)
    assert set(manifest["files"]) == {layout.README, ipc + layout.GRID, ipc + layout.MANIFEST,
                                      layout.parquet_shard(10, 0, 1), layout.repo_teacher("tiny-convnet")}
    assert manifest["version"] == "v1.1.0" and manifest["ipcs"]["10"]["version"] == "v1.1.0"


def test_existing_version_refused_then_forced_and_another_ipc_merged(hub, tmp_path, capsys):
    from huggingface_hub import DatasetCard, HfApi, hf_hub_download

    repo_id = hub.repo_id("fadrm-force")
    a = make_build(tmp_path / "a" / layout.build_dir_name(10), seed=3)
    b = make_build(tmp_path / "b" / layout.build_dir_name(10), seed=4)
    c = make_build(tmp_path / "c" / layout.build_dir_name(5), seed=5, ipc=5)
    assert run_cli(["push", str(a), "--repo", repo_id, "--version", "v1.0.0"])[0] == 0
    capsys.readouterr()
    assert run_cli(["push", str(b), "--repo", repo_id, "--version", "v1.0.0"])[0] == 2  # refused input
    err = capsys.readouterr().err.strip()
    assert err.startswith("fadrm-build: error:") and "already has version v1.0.0" in err and "--force" in err
    assert "\n" not in err
    assert run_cli(["push", str(b), "--repo", repo_id, "--version", "v1.0.0", "--force"])[0] == 0
    assert "tag moved" in capsys.readouterr().out
    tags = HfApi().list_repo_refs(repo_id, repo_type="dataset").tags
    assert [t.name for t in tags] == ["v1.0.0"]
    ds = FADRMDataset(tmp_path / "root", repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    assert same_pixels(pixels(ds), expected_pixels(b))

    # Another IPC in the same repo: both configs on the card, both IPCs loadable at the new tag.
    assert run_cli(["push", str(c), "--repo", repo_id, "--version", "v1.1.0"])[0] == 0
    card = DatasetCard.load(hf_hub_download(repo_id, layout.README, repo_type="dataset", revision="v1.1.0"))
    assert [c["config_name"] for c in card.data.to_dict()["configs"]] == [layout.ipc_dir(5), layout.ipc_dir(10)]
    card.validate(repo_type="dataset")
    five = FADRMDataset(tmp_path / "root", repo_id=repo_id, ipc=5, download=True)
    ten = FADRMDataset(tmp_path / "root", repo_id=repo_id, ipc=10, download=True)
    assert five.version == ten.version == "v1.1.0" and len(five) == 20 and len(ten) == 40
    assert same_pixels(pixels(five), expected_pixels(c)) and same_pixels(pixels(ten), expected_pixels(b))


def test_flat_subclass_uses_the_registry(hub, tmp_path, monkeypatch):
    """FADRMFashionMNIST finds its repo, classes and constants through the registry."""
    from builders.publish import push

    repo_id = hub.repo_id("fadrm-fashion-mnist")
    monkeypatch.setitem(SETS, "fashion-mnist", get_set("fashion-mnist").replace(repo=repo_id))
    build = make_build(tmp_path / "fm" / layout.build_dir_name(1), ipc=1, num_classes=10, size=28, channels=1,
                       classes=None, teacher=False)
    manifest_path = build / layout.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["dataset"] = "fashion-mnist"  # classes come from the registry
    manifest_path.write_text(json.dumps(manifest))
    push(build, repo_id, "v0.1.0")
    ds = FADRMFashionMNIST(tmp_path / "root", ipc=1, download=True)
    assert ds.repo_id == repo_id and ds.version == "v0.1.0" and len(ds) == 10
    assert ds.classes == get_set("fashion-mnist").classes and ds.class_to_idx["Trouser"] == 1
    image, label = ds[3]
    assert image.mode == "L" and image.size == (28, 28) and label == 3
    assert same_pixels(pixels(ds), expected_pixels(build, channels=1))


def test_a_set_with_no_release_says_so_in_one_line(tmp_path):
    """The README's first example, before any release exists: the error says the set is not published
    and what to do instead, not "repo not found, check the name"."""
    from fadrm_datasets import FADRMImageNet

    with pytest.raises(RepoNotFoundError) as info:
        FADRMImageNet(tmp_path / "root", ipc=10, download=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("ImageNet-1K has no published release yet (fadrm/fadrm-imagenet is not on")
    assert "fadrm-build imagenet --ipc 10" in message and "FADRM_HUB_ORG" in message


def test_a_gated_repo_says_so_not_that_it_is_missing(tmp_path, monkeypatch):
    """huggingface_hub's GatedRepoError is a kind of RepositoryNotFoundError: it must not read as "not found"."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        raise GatedRepoError("Access to this dataset is restricted", response=SimpleNamespace(
            status_code=403, headers={}, request=None, url="", text="", json=lambda: {}))

    monkeypatch.setattr(HfApi, "list_repo_refs", gated)
    with pytest.raises(fhub.HubError) as info:
        FADRMDataset(tmp_path, repo_id="acme/fadrm-imagenet", ipc=10, download=True)
    assert not isinstance(info.value, RepoNotFoundError)
    assert str(info.value).startswith("acme/fadrm-imagenet is gated: ask for access at ")


def test_a_file_broken_on_the_hub_is_reported_not_looped(hub, tmp_path):
    """When the Hub itself serves a file that differs from the manifest, one refetch, then a clear error."""
    from builders.publish import push

    repo_id = hub.repo_id("fadrm-broken")
    build = make_build(tmp_path / "x" / layout.build_dir_name(10), seed=11, teacher=False)
    push(build, repo_id, "v1.0.0")
    from huggingface_hub import hf_hub_download

    manifest = json.loads(open(hf_hub_download(repo_id, layout.MANIFEST, repo_type="dataset",
                                               revision="v1.0.0")).read())
    blob = hub.data_dir / "blobs" / manifest["files"][layout.parquet_shard(10, 0, 1)]  # the loopback Hub's stored copy
    data = blob.read_bytes()
    blob.write_bytes(data[:-3] + b"bad")
    try:
        corrupted = rf"1 corrupted \({layout.parquet_shard(10, 0, 1)}\).*on the Hub.*broken"
        with pytest.raises(IntegrityError, match=corrupted):
            FADRMDataset(tmp_path / "root", repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    finally:
        blob.write_bytes(data)


def test_unreachable_hub_falls_back_on_downloaded_versions(published, tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants

    from fadrm_datasets.hub import HubError

    repo_id = published["repo_id"]
    FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, version="v1.0.0", download=True)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", dead)
    assert FADRMDataset(tmp_path, repo_id=repo_id, ipc=10, download=True).version == "v1.0.0"
    with pytest.raises(HubError, match="cannot reach"):
        FADRMDataset(tmp_path / "empty", repo_id=repo_id, ipc=10, download=True)
    with pytest.raises(HubError, match="cannot download .* v1.1.0 ipc10: cannot reach .*check the connection"):
        FADRMDataset(tmp_path / "empty", repo_id=repo_id, ipc=10, version="v1.1.0", download=True)
