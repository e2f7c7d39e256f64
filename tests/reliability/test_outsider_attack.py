"""The third attack, as an outsider: other files, other fields and other ways in than the cases before.

A hostile publisher changes a release (parquet shards, PNGs, the class list, the soft-label index and
shard headers, the manifest's paths); another user of a shared cache plants FIFOs and links in it; a
careless user points the cache at a file, or hands ``push`` and ``evaluate`` a build whose manifest
says what its files do not. Each test makes the fault for real and checks the outcome: one line naming
the file and what to do, quickly, in bounded memory (``hostile.run_bounded`` where an allocation is at
stake, ``hostile.within`` where a call could block), nothing read, written or deleted outside the
folder the library owns. The tests of cases that held already say so.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest

from fadrm_datasets.sets import FADRMDataset, IntegrityError
from tests.fakebuild import make_build
from tests.reliability.conftest import run_cli
from tests.reliability.hostile import (PARQUET, VERSION, open_bounded, open_here, png, publish_tiny, released,
                                       republish)


def _open(root, repo, **kwargs) -> FADRMDataset:
    return FADRMDataset(root, repo_id=repo, ipc=10, version=VERSION, download=True, **kwargs)


def _manifest_edit(repo: str, tmp_path, edit) -> None:
    republish(repo, {}, tmp_path, manifest=edit)


# --- parquet shards ----------------------------------------------------------------------------------

def _parquet(tables, schema, **options) -> bytes:
    """Parquet bytes holding ``tables``, each written as row groups of its own."""
    import pyarrow.parquet as pq

    out = io.BytesIO()
    with pq.ParquetWriter(out, schema, **options) as writer:
        for table in tables:
            writer.write_table(table)
    return out.getvalue()


def _release_table(repo: str):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(released(repo, PARQUET)))


def test_a_shard_that_decompresses_far_past_its_images_is_refused_before_it_is_read(hub, tmp_path):
    """Zeros behind valid 8x8 PNG headers: 288 MiB of images from a shard of a few KB."""
    import pyarrow as pa

    repo = publish_tiny(hub, tmp_path, "bomb", soft_labels=False)
    table = _release_table(repo)
    column = table.column("image").combine_chunks()
    images = column.field("bytes").to_pylist()
    padding = bytes(96 << 20)
    images[:3] = [image[:33] + padding for image in images[:3]]
    bombs = pa.StructArray.from_arrays([pa.array(images, pa.binary()), column.field("path")], fields=list(column.type))
    table = table.set_column(table.schema.get_field_index("image"), table.schema.field("image"), bombs)
    shard = _parquet([table], table.schema, compression="zstd")
    del images, padding, bombs, table
    assert len(shard) < 1 << 20
    republish(repo, {PARQUET: shard}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo, soft_labels=False, memory_mb=256)
    assert outcome.startswith("IntegrityError") and "more than PNGs of 8x8 can take" in outcome, outcome
    assert "train-00000-of-00001.parquet" in outcome and took < 10


def test_a_shard_padded_with_empty_row_groups_is_read_in_bounded_memory(hub, tmp_path):
    """30,000 empty row groups after the real ones: read as one table, each costs far more than its bytes."""
    repo = publish_tiny(hub, tmp_path, "rowgroups", soft_labels=False)
    table = _release_table(repo)
    republish(repo, {PARQUET: _parquet([table] + [table.slice(0, 0)] * 30_000, table.schema)}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo, soft_labels=False, memory_mb=512)
    assert outcome == "OK" and took < 10


def test_a_shard_whose_footer_is_larger_than_a_shard_needs_is_refused_before_it_is_parsed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fadrm_datasets.sets import _read_parquet

    path = tmp_path / "train-00000-of-00001.parquet"
    table = pa.table({"image": [{"bytes": png(8, 8), "path": "p"}], "label": [0], "ipc_id": [0]})
    pq.write_table(table.replace_schema_metadata({"padding": "x" * (4 << 20)}), path)
    with pytest.raises(IntegrityError, match="has a footer of [0-9,]+ bytes, more than a shard's") as info:
        _read_parquet([path])
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("image", [
    lambda pa: pa.array([b"png"], pa.binary()),
    lambda pa: pa.array([[b"png"]], pa.list_(pa.binary())),
], ids=["bytes", "a-list"])
def test_an_image_column_that_is_not_a_struct_gets_one_line(tmp_path, image):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fadrm_datasets.sets import _read_parquet

    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"image": image(pa), "label": [0], "ipc_id": [0]}), path)
    with pytest.raises(IntegrityError, match="is not a shard of a FADRM set") as info:
        _read_parquet([path])
    assert len(str(info.value).splitlines()) == 1


# --- the release manifest ----------------------------------------------------------------------------

def test_a_manifest_of_thousands_of_deep_paths_is_refused_at_once(hub, tmp_path):
    """Nearly 4 MB of paths 500 folders deep, each resolved folder by folder."""
    repo = publish_tiny(hub, tmp_path, "deep", soft_labels=False)
    deep = {"ipc20/" + "a/" * 495 + f"f{i}": f"{i:064x}" for i in range(1900)}

    def edit(m):
        return {**m, "files": {**m["files"], **deep}, "sizes": {**m["sizes"], **{p: 1 for p in deep}}}

    _manifest_edit(repo, tmp_path, edit)
    start = time.perf_counter()
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and "a path of a set has at most 8 names" in outcome, outcome
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("path", ["ipc10/./train.parquet", "ipc10//train.parquet", "ipc10/train.parquet/",
                                  "soft_labels/../patches.safetensors", "a/" * 8 + "b"])
def test_a_path_of_a_set_has_one_spelling(tmp_path, path):
    from fadrm_datasets.layout import LayoutError, inside, own_file

    for resolve in (inside, own_file):
        with pytest.raises(LayoutError, match="a path of a set has at most 8 names, none of them empty"):
            resolve(tmp_path, path)


# --- local builds, and the CLI reading them ----------------------------------------------------------

def test_a_build_manifest_cannot_make_push_publish_a_file_beside_the_soft_labels(tmp_path, hub, capsys):
    """``soft_labels/../patches.safetensors``: recorded under soft_labels/, it is the real patches."""
    from huggingface_hub import HfApi

    build = make_build(tmp_path / "ipc10", soft_labels=True, teacher=False)
    patches = build / "patches.safetensors"
    patches.write_bytes(b"canary: the real patches, never published")
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["files"]["soft_labels/../patches.safetensors"] = hashlib.sha256(patches.read_bytes()).hexdigest()
    (build / "manifest.json").write_text(json.dumps(manifest))
    repo = hub.repo_id("alias")
    code, err = run_cli(["push", str(build), "--repo", repo, "--version", VERSION], capsys)
    assert code == 2 and "refusing the path 'soft_labels/../patches.safetensors'" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not HfApi().repo_exists(repo, repo_type="dataset")
