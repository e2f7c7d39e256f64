"""Where sets are kept and how releases change: a bad repo id touches no disk, a read-only root serves its
verified copy, a full disk says what to free, a tag being re-created does not stop a user with a copy,
and of two pushes of one version the loser says so and leaves no release of its own."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from fadrm_datasets import hub as fhub
from fadrm_datasets import layout
from fadrm_datasets.sets import FADRMDataset
from tests.fakebuild import expected_pixels, make_build
from tests.reliability.hostile import VERSION, publish_tiny


def _open(root, repo, **kwargs):
    return FADRMDataset(root, repo_id=repo, ipc=10, version=VERSION, **kwargs)


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("repo_id", ["..", "../x", "a/..", "a/b/c", "a--b/c", "a/b--c", "", "/etc/x", "a/.x", "a/"])
def test_an_invalid_repo_id_is_refused_before_anything_touches_the_disk(tmp_path, repo_id):
    root = tmp_path / "nest" / "root"
    before = _listing(tmp_path)
    with pytest.raises(ValueError) as info:
        FADRMDataset(root, repo_id=repo_id, ipc=10, version=VERSION, download=True)
    assert _listing(tmp_path) == before and not root.exists()
    assert "is not a Hub repo id" in str(info.value)


def test_a_root_that_is_a_file_gets_one_line(tmp_path):
    root = tmp_path / "root"
    root.write_text("not a folder")
    with pytest.raises(Exception) as info:
        FADRMDataset(root, repo_id="fadrm/fadrm-tiny", ipc=10, version=VERSION, download=True)
    assert isinstance(info.value, fhub.HubError) and "is a file, not a folder" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


@contextlib.contextmanager
def _read_only(folder, how: str):
    """``folder`` made read-only: by a read-only bind mount where this process may mount (root), or by
    an audit hook refusing every write under it."""
    if how == "mount":
        done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount here ({done.stderr.decode().strip()}); the audit-hook case runs")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            yield
        finally:
            subprocess.run(["umount", "--lazy", str(folder)], check=False)
        return
    _WRITES_REFUSED.append(str(folder.resolve()))
    try:
        yield
    finally:
        _WRITES_REFUSED.remove(str(folder.resolve()))


_WRITES_REFUSED: list[str] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _refuse_writes(event: str, args) -> None:
    if not _WRITES_REFUSED or event not in ("open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink"):
        return
    path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
    if event == "open":
        mode, flags = args[1], args[2]
        if not ((isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS)):
            return
    if any(os.path.abspath(path).startswith(folder) for folder in _WRITES_REFUSED):
        raise OSError(errno.EROFS, "Read-only file system (injected)", path)


sys.addaudithook(_refuse_writes)  # audit hooks cannot be removed; it acts only while a folder is listed


@pytest.mark.parametrize("how", ["mount", "audit"])
def test_a_read_only_root_serves_its_verified_copy_and_says_when_it_cannot(hub, tmp_path, how, caplog):
    repo = publish_tiny(hub, tmp_path, "readonly")
    root = tmp_path / "root"
    _open(root, repo, download=True, soft_labels=True)
    with _read_only(root, how):
        data = _open(root, repo, download=True, soft_labels=True)  # the tag is checked, nothing written
        assert len(data) == 40 and data.soft_label_epochs == 2
    shard = fhub.version_dir(root, repo, VERSION) / layout.parquet_shard(10, 0, 1)
    shard.unlink()
    with _read_only(root, how):
        with pytest.raises(fhub.RootError, match="cannot be written.*pass a writable root=") as info:
            _open(root, repo, download=True)
    assert len(str(info.value).splitlines()) == 1


def test_a_full_disk_says_what_to_free_and_keeps_what_was_downloaded(hub, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from huggingface_hub import file_download

    repo = publish_tiny(hub, tmp_path, "fulldisk")
    root = tmp_path / "root"
    usage = namedtuple("usage", "total used free")
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - 1000, 1000))
        with pytest.raises(Exception) as info:
            _open(root, repo, download=True, soft_labels=True)
    assert isinstance(info.value, fhub.HubError), info.value
    assert "needs" in str(info.value) and "has 1,000 free: free some space" in str(info.value)
    assert not list(root.rglob("*.parquet"))  # refused before the first byte

    # The disk fills up during a transfer (another program wrote to it): the file and what to free are named.
    real_get = file_download.http_get

    def disk_full_on_shards(url, temp_file, *args, **kwargs):
        if url.endswith(".safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_get(url, temp_file, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(file_download, "http_get", disk_full_on_shards)
        with pytest.raises(Exception) as info:
            _open(root, repo, download=True, soft_labels=True)
    message = str(info.value)
    assert isinstance(info.value, fhub.HubError) and len(message.splitlines()) == 1, message
    assert "no space left to download" in message and layout.shard_name(0, 1) in message
    assert "free some space" in message
    kept = {p.name for p in root.rglob("*") if p.is_file()}
    assert layout.MANIFEST in kept and not any(name.endswith(layout.PARTIAL_SUFFIX) for name in kept)
    assert _open(root, repo, download=True, soft_labels=True).soft_label_epochs == 2


def test_a_force_push_killed_between_its_tag_delete_and_create(hub, tmp_path, caplog):
    from huggingface_hub import HfApi

    from builders.publish import push

    repo = publish_tiny(hub, tmp_path, "retag")
    cached = tmp_path / "cached"
    _open(cached, repo, download=True)
    again = make_build(tmp_path / "again" / layout.build_dir_name(10), seed=8, teacher=False)
    real = HfApi.create_tag

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill lands: after the old tag is gone, before the new one exists

    HfApi.create_tag = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            push(again, repo, VERSION, force=True)
    finally:
        HfApi.create_tag = real
    assert VERSION not in {t.name for t in HfApi().list_repo_refs(repo, repo_type="dataset").tags}
    with caplog.at_level("WARNING", logger="fadrm_datasets.hub"):
        assert len(_open(cached, repo, download=True)) == 40  # a verified copy carries on
    assert "has no tag v1.0.0 now (it is being republished" in caplog.text
    with pytest.raises(fhub.VersionNotFoundError, match="is being republished: try again"):
        _open(tmp_path / "fresh", repo, download=True)
    push(again, repo, VERSION, force=True)  # the rerun restores the version
    data = _open(tmp_path / "fresh", repo, download=True)
    assert all(np.array_equal(np.asarray(data[i][0]), pixels) for i, pixels in enumerate(expected_pixels(again)))


def _staging_hook(monkeypatch, action):
    """Run ``action`` once while a push stages its files (after it read the repo, before it commits)."""
    import builders.publish as publish

    real, done = publish.validate_card, []

    def validate(card):
        if not done:
            done.append(True)
            action()
        return real(card)

    monkeypatch.setattr(publish, "validate_card", validate)


@pytest.mark.parametrize("other_version", ["v1.0.0", "v2.0.0"], ids=["same-version", "another-version"])
def test_of_two_pushes_at_once_the_loser_says_so_and_commits_nothing(hub, tmp_path, monkeypatch, other_version):
    from huggingface_hub import HfApi

    from builders.publish import PublishError, push

    repo = hub.repo_id("race")
    winner_build = make_build(tmp_path / "winner" / layout.build_dir_name(10), seed=1, teacher=False)
    loser_build = make_build(tmp_path / "loser" / layout.build_dir_name(10), seed=2, teacher=False)
    won = []
    _staging_hook(monkeypatch, lambda: won.append(push(winner_build, repo, other_version)))
    with pytest.raises(PublishError, match=f"another push to {repo} won.*nothing of this push is published"):
        push(loser_build, repo, VERSION)
    refs = HfApi().list_repo_refs(repo, repo_type="dataset")
    assert [b.target_commit for b in refs.branches if b.name == "main"] == [won[0].commit]
    assert {t.name for t in refs.tags} == {other_version}


def test_a_push_that_loses_the_race_for_its_tag_restores_main(hub, tmp_path, monkeypatch):
    """The narrow case: the winner committed before the loser read the repo, and tagged only after the
    loser committed on top of it. The loser says so and puts main back to the winner's release."""
    from huggingface_hub import HfApi

    from builders import publish
    from builders.publish import PublishError, push

    repo = hub.repo_id("tagrace")
    real_tag = publish._tag
    monkeypatch.setattr(publish, "_tag", lambda *args, **kwargs: None)  # the winner is slow to tag
    winner = push(make_build(tmp_path / "winner" / layout.build_dir_name(10), seed=1, teacher=False), repo, VERSION)
    monkeypatch.setattr(publish, "_tag", real_tag)

    def tag_first(api, repo_id, version, commit, moved, message):
        HfApi().create_tag(repo_id, tag=version, revision=winner.commit, repo_type="dataset")  # it lands now
        return real_tag(api, repo_id, version, commit, moved, message)

    monkeypatch.setattr(publish, "_tag", tag_first)
    with pytest.raises(PublishError, match=f"another push to {repo} won: it tagged v1.0.0 at commit {winner.commit[:10]}"):
        push(make_build(tmp_path / "loser" / layout.build_dir_name(10), seed=2, teacher=False), repo, VERSION)
    api = HfApi()
    tree = {f.path: f.blob_id for f in api.list_repo_tree(repo, recursive=True, repo_type="dataset")
            if hasattr(f, "blob_id")}
    released = {f.path: f.blob_id for f in api.list_repo_tree(repo, revision=VERSION, recursive=True,
                                                              repo_type="dataset") if hasattr(f, "blob_id")}
    assert tree == released and api.list_repo_refs(repo, repo_type="dataset").tags[0].target_commit == winner.commit
