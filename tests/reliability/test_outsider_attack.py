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
import os
import pathlib
import struct
import zlib

import pytest

from fadrm_datasets import hub as fhub
from fadrm_datasets import layout
from fadrm_datasets.sets import FADRMDataset, IntegrityError
from tests.fakebuild import make_build
from tests.helpers import run_cli
from tests.reliability.hostile import (PARQUET, SOFT_INDEX, VERSION, open_bounded, open_here, parquet_with, png,
                                       publish_tiny, released, republish, run_bounded, within)

IPC10 = layout.ipc_prefix(10)
ALIASED_PATCHES = f"{layout.SOFT_LABELS}/../{layout.PATCHES}"  # recorded under soft_labels/, it is the patches


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
    assert PARQUET in outcome and took < 30


def test_a_shard_padded_with_empty_row_groups_is_read_in_bounded_memory(hub, tmp_path):
    """30,000 empty row groups after the real ones: read as one table, each costs far more than its bytes."""
    repo = publish_tiny(hub, tmp_path, "rowgroups", soft_labels=False)
    table = _release_table(repo)
    republish(repo, {PARQUET: _parquet([table] + [table.slice(0, 0)] * 30_000, table.schema)}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo, soft_labels=False, memory_mb=512)
    assert outcome == "OK" and took < 30


def test_a_shard_whose_footer_is_larger_than_a_shard_needs_is_refused_before_it_is_parsed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fadrm_datasets.sets import _read_parquet

    path = tmp_path / "shard.parquet"
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

    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"image": image(pa), "label": [0], "ipc_id": [0]}), path)
    with pytest.raises(IntegrityError, match="is not a shard of a FADRM set") as info:
        _read_parquet([path])
    assert len(str(info.value).splitlines()) == 1


# --- the PNGs ----------------------------------------------------------------------------------------

def test_a_truncated_png_is_reported_naming_the_image_not_as_a_raw_decoder_error(hub, tmp_path):
    repo = publish_tiny(hub, tmp_path, "truncated", soft_labels=False)

    def truncate(rows):
        data = rows[0]["image"]["bytes"]
        rows[0]["image"] = {"bytes": data[:len(data) // 2], "path": rows[0]["image"]["path"]}

    republish(repo, {PARQUET: parquet_with(repo, truncate)}, tmp_path)
    for use in (lambda data: data[0], lambda data: data.images_uint8()):
        outcome = open_here(tmp_path / "root", repo, soft_labels=False, then=use)
        assert outcome.startswith("IntegrityError"), outcome
        assert (f"{layout.ipc_dir(10)}: the image of label 0, ipc id 0 cannot be decoded (image file is truncated"
                in outcome)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _idat_bomb(side: int, expands_to: int) -> bytes:
    """A PNG declaring ``side`` x ``side`` RGB whose pixel data inflates to ``expands_to`` bytes."""
    compress = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)  # zeros: as small as level 9, faster
    block = bytes(16 << 20)
    data = b"".join(compress.compress(block) for _ in range(expands_to // len(block))) + compress.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def test_a_png_holding_more_data_than_its_size_can_is_refused_at_open(hub, tmp_path):
    """A PNG whose pixel data would inflate to 512 MiB behind an 8x8 header: PIL would inflate only the
    declared rows, but the image carries far more bytes than any 8x8 PNG can, so it is refused as the
    shard is read."""
    repo = publish_tiny(hub, tmp_path, "inflate", soft_labels=False)
    bomb = _idat_bomb(8, 512 << 20)
    republish(repo, {PARQUET: parquet_with(repo, lambda rows: rows[0].update(image={"bytes": bomb,
                                                                                   "path": "x"}))}, tmp_path)
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and f"a 8x8 PNG of {len(bomb):,} bytes" in outcome, outcome


def test_held_a_grayscale_png_in_a_colour_set_is_served_as_colour(hub, tmp_path):
    repo = publish_tiny(hub, tmp_path, "grey", soft_labels=False)
    republish(repo, {PARQUET: parquet_with(repo, lambda rows: rows[1].update(image={"bytes": png(8, 8, "L"),
                                                                                   "path": "x"}))}, tmp_path)
    data = _open(tmp_path / "root", repo)
    assert data[1][0].mode == "RGB" and data.images_uint8().shape == (40, 3, 8, 8)


def test_held_jpeg_bytes_in_a_shard_are_refused_as_not_a_png(hub, tmp_path):
    from PIL import Image

    repo = publish_tiny(hub, tmp_path, "jpeg", soft_labels=False)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")

    def change(rows):
        rows[3]["image"] = {"bytes": jpeg.getvalue(), "path": rows[3]["image"]["path"]}

    republish(repo, {PARQUET: parquet_with(repo, change)}, tmp_path)
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and "holds an image that is not a PNG, where the set's are 8x8 PNGs" in outcome


# --- the release manifest ----------------------------------------------------------------------------

def test_classes_named_twice_or_not_as_many_as_the_preset_says_are_refused(hub, tmp_path):
    repo = publish_tiny(hub, tmp_path, "classes", soft_labels=False)
    cases = {'names the class "ant" twice': ["ant", "ant", "cat", "dog"],
             "names 100,000 classes, its preset 4": [""] * 100_000}
    for i, (message, classes) in enumerate(cases.items()):
        _manifest_edit(repo, tmp_path, lambda m: {**m, "classes": classes})
        outcome = open_here(tmp_path / f"root{i}", repo, soft_labels=False)
        assert outcome.startswith("IntegrityError") and message in outcome, outcome


@pytest.mark.parametrize("value", [2.0, True], ids=["float", "bool"])
def test_held_a_format_version_of_another_type_is_refused(hub, tmp_path, value):
    repo = publish_tiny(hub, tmp_path, "format", soft_labels=False)
    _manifest_edit(repo, tmp_path, lambda m: {**m, "format_version": value})
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and "format_version should be an integer" in outcome


def test_a_manifest_of_thousands_of_deep_paths_is_refused_at_once(hub, tmp_path, monkeypatch):
    """Nearly 4 MB of paths 500 folders deep, which were each resolved folder by folder: refused from
    their spelling, with fewer resolutions in all than the manifest has deep paths (a count, not a
    time: a clock bound failed on a loaded machine)."""
    repo = publish_tiny(hub, tmp_path, "deep", soft_labels=False)
    deep = {layout.ipc_prefix(20) + "a/" * 495 + f"f{i}": f"{i:064x}" for i in range(1900)}

    def edit(m):
        return {**m, "files": {**m["files"], **deep}, "sizes": {**m["sizes"], **{p: 1 for p in deep}}}

    _manifest_edit(repo, tmp_path, edit)
    resolved, resolve = [], pathlib.Path.resolve
    monkeypatch.setattr(pathlib.Path, "resolve", lambda self, *a, **k: resolved.append(self) or resolve(self, *a, **k))
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and "a path of a set has at most 8 names" in outcome, outcome
    assert len(resolved) < 100, f"{len(resolved)} paths resolved"


@pytest.mark.parametrize("path", [f"{IPC10}./train.parquet", f"{IPC10}/train.parquet", f"{IPC10}train.parquet/",
                                  ALIASED_PATCHES, "a/" * 8 + "b"])
def test_a_path_of_a_set_has_one_spelling(tmp_path, path):
    from fadrm_datasets.layout import LayoutError, inside, own_file

    for resolve in (inside, own_file):
        with pytest.raises(LayoutError, match="a path of a set has at most 8 names, none of them empty"):
            resolve(tmp_path, path)


# --- the soft labels ---------------------------------------------------------------------------------

def test_an_index_declaring_larger_images_than_the_set_is_refused_at_open(hub, tmp_path):
    """An 8x8 set whose index says 4096: every replayed batch would be 8 x 3 x 4096 x 4096 floats."""
    repo = publish_tiny(hub, tmp_path, "imagesize")
    index = json.loads(released(repo, SOFT_INDEX))
    republish(repo, {SOFT_INDEX: json.dumps({**index, "image_size": 4096}).encode()}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo, memory_mb=512, then="next(iter(data.soft_label_loader(0)))")
    assert outcome.startswith("IntegrityError") and "made for 4096x4096 images, the set's are 8x8" in outcome, outcome


def test_a_shard_header_nested_deeply_gets_one_line(tmp_path):
    from fadrm_datasets.softlabels import SoftLabelStore, SoftLabelStoreError

    build = make_build(tmp_path / layout.build_dir_name(10), soft_labels=True, teacher=False)
    header = b"[" * 100_000 + b"]" * 100_000
    (build / layout.SOFT_LABELS / layout.shard_name(0, 1)).write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(SoftLabelStoreError, match=f"{layout.shard_name(0, 1)} nests deeper than 32") as info:
        SoftLabelStore.open(build / layout.SOFT_LABELS)
    assert len(str(info.value).splitlines()) == 1


# --- the cache, shared with another user -------------------------------------------------------------

def test_a_fifo_in_place_of_the_download_record_does_not_block_the_open(hub, tmp_path):
    repo = publish_tiny(hub, tmp_path, "fifo", soft_labels=False)
    root = tmp_path / "root"
    _open(root, repo)
    record = fhub.version_dir(root, repo, VERSION) / layout.DOWNLOAD_SOURCE
    record.unlink()
    os.mkfifo(record)
    with within(10):
        assert len(_open(root, repo)) == 40


@pytest.mark.parametrize("folder", ["version", "repo"])
def test_a_cache_folder_linked_elsewhere_is_refused_and_its_target_left_alone(hub, tmp_path, folder):
    repo = publish_tiny(hub, tmp_path, "linked", soft_labels=False)
    root, victim = tmp_path / "root", tmp_path / "victim"
    (victim / VERSION).mkdir(parents=True)
    for where in (victim, victim / VERSION):
        (where / layout.MANIFEST).write_text("precious")
    link = fhub.version_dir(root, repo, VERSION) if folder == "version" else fhub.repo_dir(root, repo)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    outcome = open_here(root, repo, soft_labels=False)
    assert sorted(p.name for p in victim.rglob("*")) == [layout.MANIFEST, layout.MANIFEST, VERSION]
    assert all((where / layout.MANIFEST).read_text() == "precious" for where in (victim, victim / VERSION))
    assert outcome.startswith("RootError") and "is a symbolic link" in outcome, outcome


def test_a_partial_download_planted_as_a_link_is_not_written_through(hub, tmp_path):
    repo = publish_tiny(hub, tmp_path, "partlink", soft_labels=False)
    root, victim = tmp_path / "root", tmp_path / "victim.txt"
    victim.write_text("precious")
    dest = fhub.version_dir(root, repo, VERSION)
    for part in (layout.partial_download(dest / layout.MANIFEST), layout.partial_download(dest / PARQUET)):
        part.parent.mkdir(parents=True, exist_ok=True)
        part.symlink_to(victim)
    outcome = open_here(root, repo, soft_labels=False)
    assert victim.read_text() == "precious"
    assert outcome == "OK"


def test_held_a_lock_file_planted_as_a_link_is_not_followed(hub, tmp_path):
    repo = publish_tiny(hub, tmp_path, "locklink", soft_labels=False)
    root, victim = tmp_path / "root", tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = layout.sibling_lock(fhub.version_dir(root, repo, VERSION))
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    with pytest.raises(fhub.RootError, match="cannot be written") as info:
        _open(root, repo)
    assert len(str(info.value).splitlines()) == 1 and victim.read_text() == "precious"


def test_a_cache_variable_naming_a_file_is_named_in_the_refusal(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv(fhub.CACHE_ENV, str(cache))
    with pytest.raises(fhub.RootError, match=f"{fhub.CACHE_ENV}={cache} is a file, not a folder") as info:
        FADRMDataset(repo_id="fadrm/fadrm-tiny", ipc=10, version=VERSION, download=True)
    assert len(str(info.value).splitlines()) == 1 and "leave root out" not in str(info.value)


# --- local builds, and the CLI reading them ----------------------------------------------------------

def test_a_build_image_linked_to_a_fifo_outside_is_refused_without_opening_it(tmp_path):
    build = make_build(tmp_path / layout.build_dir_name(10), teacher=False)
    image, fifo = build / layout.image_relpath(0, 1), tmp_path / "fifo"
    os.mkfifo(fifo)
    image.unlink()
    image.symlink_to(fifo)
    with within(10), pytest.raises(IntegrityError, match="do not match the sha256"):
        FADRMDataset.from_build(build)


def test_a_build_manifest_cannot_make_push_publish_a_file_beside_the_soft_labels(tmp_path, hub, capsys):
    """``soft_labels/../patches.safetensors``: recorded under soft_labels/, it is the real patches."""
    from huggingface_hub import HfApi

    build = make_build(tmp_path / layout.build_dir_name(10), soft_labels=True, teacher=False)
    patches = build / layout.PATCHES
    patches.write_bytes(b"canary: the real patches, never published")
    manifest = json.loads((build / layout.MANIFEST).read_text())
    manifest["files"][ALIASED_PATCHES] = hashlib.sha256(patches.read_bytes()).hexdigest()
    (build / layout.MANIFEST).write_text(json.dumps(manifest))
    repo = hub.repo_id("alias")
    code, err = run_cli(["push", str(build), "--repo", repo, "--version", VERSION], capsys)
    assert code == 2 and f"refusing the path '{ALIASED_PATCHES}'" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not HfApi().repo_exists(repo, repo_type="dataset")


def test_a_build_manifest_claiming_a_billion_images_is_refused_by_push_in_bounded_memory(tmp_path):
    build = make_build(tmp_path / layout.build_dir_name(10), teacher=False)
    manifest = json.loads((build / layout.MANIFEST).read_text())
    manifest["ipc"], manifest["preset"]["num_classes"] = 10_000, 100_000
    (build / layout.MANIFEST).write_text(json.dumps(manifest))
    took, outcome = run_bounded(f"from builders.publish import read_build\nread_build({str(build)!r})", memory_mb=256)
    assert outcome.startswith("PublishError") and "not a complete set of 100000 x 10000 images" in outcome, outcome
    assert took < 30


def test_evaluate_refuses_a_recorded_temperature_that_is_not_a_positive_number(clean_build, fake_data, capsys):
    """A temperature of "hot" was a raw TypeError; 0 trained on NaN and recorded it in a manifest then unreadable."""
    path = clean_build / layout.MANIFEST
    for temperature in ("hot", 0):
        manifest = json.loads(path.read_text())
        manifest["preset"]["temperature"] = temperature
        path.write_text(json.dumps(manifest))
        code, err = run_cli(["evaluate", str(clean_build), "--epochs", "1", "--device", "cpu", "--data-root",
                             str(fake_data)], capsys)
        assert code == 2 and "preset.temperature should be a positive number" in err, err
        assert len(err.strip().splitlines()) == 1 and json.loads(path.read_text()) == manifest


def test_a_diverged_loss_is_recorded_as_null_and_the_manifest_stays_readable(tmp_path):
    """A NaN in a record (a student whose loss diverged) made the build manifest one the strict reader
    refuses for good; JSON has no NaN, so it is written as null."""
    from fadrm_datasets.layout import BuildDirectory

    build = BuildDirectory(tmp_path / layout.ipc_dir(10))
    build.update_manifest(evaluations=[{"checks": [{"epoch": 1, "loss": float("nan"), "top1": 10.0},
                                                   {"epoch": 2, "loss": float("inf"), "top1": 10.0}]}])
    checks = build.read_manifest()["evaluations"][0]["checks"]
    assert [c["loss"] for c in checks] == [None, None] and [c["top1"] for c in checks] == [10.0, 10.0]


def test_a_release_of_a_known_set_cannot_declare_the_geometry_it_is_read_within(hub, tmp_path, monkeypatch):
    """The bounds a shard is read within follow the set's image size: for a set the registry knows, a
    release saying 4096 px for 8 px images (room for a decompression bomb) is refused before its
    parquet is read."""
    from fadrm_datasets.registry import SETS, SetInfo

    repo = publish_tiny(hub, tmp_path, "geometry", soft_labels=False)
    monkeypatch.setitem(SETS, "tiny-known", SetInfo(name="tiny-known", display_name="Tiny known", repo_name="x",
                                                    repo=repo, num_classes=4, channels=3, image_size=8,
                                                    mean=(0.5,) * 3, std=(0.25,) * 3))

    def lie(manifest):
        manifest["ipcs"]["10"]["preset"]["image_size"] = 4096
        return manifest

    republish(repo, {}, tmp_path, manifest=lie)
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome == "IntegrityError: " + f"{repo}: its preset says image_size 4096, not Tiny known's; open it with " \
                                           "FADRMDataset instead"
