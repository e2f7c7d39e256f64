"""Downloads that fail, race or change under us: the library ends with one verified copy or one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fadrm_datasets import hub as fhub
from fadrm_datasets import layout
from fadrm_datasets.sets import FADRMDataset, HubError, IntegrityError
from tests.fakebuild import expected_pixels, make_build
from tests.helpers import pixels
from tests.reliability.conftest import REPO


@pytest.fixture
def published(hub, tmp_path):
    """A repo holding v1.0.0 of a tiny set, pushed for this test alone."""
    from builders.publish import push

    repo = hub.repo_id("downloads")
    build = make_build(tmp_path / "v1" / layout.build_dir_name(10), seed=0, soft_labels=True)
    push(build, repo, "v1.0.0")
    return repo, build


def test_a_download_cut_mid_file_is_resumed_to_a_good_copy(published, hub, tmp_path):
    repo, build = published
    hub.server.cut_downloads(count=2, after_bytes=200)
    data = FADRMDataset(tmp_path / "root", repo_id=repo, ipc=10, version="v1.0.0", download=True, soft_labels=True)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(data), expected_pixels(build)))
    assert data._check_integrity()
    assert not list((tmp_path / "root").rglob("*.incomplete"))


def test_downloads_that_keep_failing_end_in_one_line_and_the_next_try_completes(published, hub, tmp_path):
    repo, _ = published
    hub.server.cut_downloads(count=40, after_bytes=200)
    with pytest.raises(HubError) as info:
        FADRMDataset(tmp_path / "root", repo_id=repo, ipc=10, version="v1.0.0", download=True)
    assert len(str(info.value).splitlines()) == 1
    hub.server._server.cuts.clear()
    assert len(FADRMDataset(tmp_path / "root", repo_id=repo, ipc=10, version="v1.0.0", download=True)) == 40


def _open_in_a_process(root, repo: str, download: bool = True) -> subprocess.Popen:
    code = ("import sys; from fadrm_datasets.sets import FADRMDataset\n"
            f"d = FADRMDataset({str(root)!r}, repo_id={repo!r}, ipc=10, version='v1.0.0', download={download})\n"
            "print(len(d))\n")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_downloading_one_set_make_one_good_copy(published, tmp_path):
    repo, build = published
    root = tmp_path / "root"
    first, second = _open_in_a_process(root, repo), _open_in_a_process(root, repo)
    for process in (first, second):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out.strip() == "40", err
    data = FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0")
    assert all(np.array_equal(a, b) for a, b in zip(pixels(data), expected_pixels(build)))
    assert not list(root.rglob("*.incomplete"))


def test_a_cached_file_altered_without_a_change_of_size_or_mtime_is_caught_by_the_next_process(published, tmp_path):
    repo, _ = published
    root = tmp_path / "root"
    FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0", download=True)
    shard = fhub.version_dir(root, repo, "v1.0.0") / layout.parquet_shard(10, 0, 1)
    stat = shard.stat()
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert shard.stat().st_size == stat.st_size and shard.stat().st_mtime_ns == stat.st_mtime_ns
    out, err = _open_in_a_process(root, repo, download=False).communicate(timeout=60)
    assert "IntegrityError" in err and f"1 corrupted ({layout.parquet_shard(10, 0, 1)})" in err


def test_a_moved_tag_is_noticed_and_its_files_fetched_again(published, hub, tmp_path, caplog):
    from builders.publish import push

    repo, _ = published
    root = tmp_path / "root"
    FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0", download=True)
    moved = make_build(tmp_path / "v1b" / layout.build_dir_name(10), seed=5)
    push(moved, repo, "v1.0.0", force=True)
    assert len(FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0")) == 40  # no download: the local copy
    with caplog.at_level("WARNING", logger="fadrm_datasets.hub"):
        data = FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0", download=True)
    assert "the tag v1.0.0 now points at commit" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(pixels(data), expected_pixels(moved)))


def test_a_corrupt_cached_manifest_is_fetched_again_not_blamed_on_the_hub(published, tmp_path, caplog):
    repo, build = published
    root = tmp_path / "root"
    FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0", download=True)
    manifest = fhub.version_dir(root, repo, "v1.0.0") / layout.MANIFEST
    manifest.write_text('["not", "a manifest"]')
    with pytest.raises(IntegrityError, match="manifest.json holds a JSON list.*pass download=True"):
        FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0")
    with caplog.at_level("WARNING", logger="fadrm_datasets.hub"):
        data = FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0", download=True)
    assert "fetching it again" in caplog.text and json.loads(manifest.read_text())["files"]
    assert all(np.array_equal(a, b) for a, b in zip(pixels(data), expected_pixels(build)))


def test_a_refused_token_is_not_reported_as_a_connection_problem(published, tmp_path):
    repo, _ = published
    with pytest.raises(HubError, match="refused the token \\(401\\)") as info:
        fhub.fetch(repo, 10, "v1.0.0", tmp_path / "root", token="hf_not_a_token")
    assert "connection" not in str(info.value)


def test_a_parquet_shard_of_another_schema_is_refused_in_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fadrm_datasets.sets import _read_parquet

    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), path)
    with pytest.raises(IntegrityError, match="is not a shard of a FADRM set") as info:
        _read_parquet([path])
    assert len(str(info.value).splitlines()) == 1
    pq.write_table(pa.table({"image": [{"bytes": b"x", "path": "p"}], "label": ["zero"], "ipc_id": [0]}), path)
    with pytest.raises(IntegrityError, match="of the wrong type"):
        _read_parquet([path])
