"""Staging a build for the Hub: parquet with `datasets` features, grid, card, manifests (no upload here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from builders.publish import (GRID_MAX_COLS, PublishError, merge_configs, read_build, render_card,
                              split_front_matter, stage)
from fadrm_datasets._io import sha256_file
from tests.fakebuild import CLASSES, expected_pixels, make_build


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("publish") / "ipc10", seed=2, soft_labels=True)


@pytest.fixture(scope="module")
def staged(build, tmp_path_factory):
    folder = tmp_path_factory.mktemp("staging")
    manifest = stage(build, "org/fadrm-tiny", "v1.0.0", folder)
    return folder, manifest


def test_staged_layout_and_manifest(staged, build):
    folder, manifest = staged
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "ipc10/grid.png", "ipc10/manifest.json", "ipc10/soft_labels/epochs-00000-00001.safetensors",
                     "ipc10/soft_labels/index.json", "ipc10/train-00000-of-00001.parquet", "manifest.json",
                     "teachers/tiny-convnet.safetensors"]
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    assert all(sha256_file(folder / rel) == sha for rel, sha in manifest["files"].items())
    assert manifest["classes"] == CLASSES and manifest["version"] == "v1.0.0"
    record = manifest["ipcs"]["10"]
    assert record["num_images"] == 40 and record["soft_label_epochs"] == 2
    assert record["shards"] == ["ipc10/train-00000-of-00001.parquet"] and record["preset"]["image_size"] == 8
    # The build manifest travels verbatim.
    assert (folder / "ipc10" / "manifest.json").read_bytes() == (build / "manifest.json").read_bytes()


def test_parquet_carries_the_datasets_features(staged, build):
    import pyarrow.parquet as pq

    folder, _ = staged
    table = pq.read_table(folder / "ipc10" / "train-00000-of-00001.parquet")
    meta = json.loads(table.schema.metadata[b"huggingface"])
    assert meta == {"info": {"features": {"image": {"_type": "Image"},
                                          "label": {"names": CLASSES, "_type": "ClassLabel"},
                                          "ipc_id": {"dtype": "int32", "_type": "Value"}}}}
    assert str(table.schema.field("ipc_id").type) == "int32"
    assert table.column("label").to_pylist() == [c for c in range(4) for _ in range(10)]
    assert table.column("ipc_id").to_pylist() == list(range(10)) * 4
    images = table.column("image").to_pylist()
    assert images[11]["path"] == "00001/00001.png"
    assert images[11]["bytes"] == (build / "images" / "00001" / "00001.png").read_bytes()

    import datasets  # `datasets` restores Image/ClassLabel from the schema metadata alone

    ds = datasets.Dataset.from_parquet(str(folder / "ipc10" / "train-00000-of-00001.parquet"),
                                       cache_dir=str(folder.parent / "ds-cache"))
    assert isinstance(ds.features["image"], datasets.Image) and ds.features["label"].names == CLASSES
    assert np.array_equal(np.asarray(ds[11]["image"]), expected_pixels(build)[11])


def test_shards_split_by_size(build, tmp_path):
    manifest = stage(build, "org/x", "v1.0.0", tmp_path, max_shard_bytes=4000)
    shards = manifest["ipcs"]["10"]["shards"]
    assert len(shards) > 1 and shards[0] == f"ipc10/train-00000-of-{len(shards):05d}.parquet"
    import pyarrow.parquet as pq

    labels = [l for s in shards for l in pq.read_table(tmp_path / s).column("label").to_pylist()]
    assert labels == [c for c in range(4) for _ in range(10)]


def test_grid_is_one_row_per_class(staged):
    from PIL import Image

    folder, _ = staged
    with Image.open(folder / "ipc10" / "grid.png") as grid:
        assert grid.format == "PNG" and grid.mode == "RGB" and grid.size == (GRID_MAX_COLS * 8, 4 * 8)
        tile = np.asarray(grid)[2 * 8:3 * 8, 4 * 8:5 * 8]  # class 2, ipc_id 4
    assert tile[0, 0, 0] == 2 * 20 + 4


def test_card_front_matter_and_body(staged):
    folder, _ = staged
    card = (folder / "README.md").read_text()
    front, body = split_front_matter(card)
    assert front["configs"] == [{"config_name": "ipc10",
                                 "data_files": [{"split": "train", "path": "ipc10/train-*.parquet"}]}]
    assert front["task_categories"] == ["image-classification"] and front["license"] == "unknown"
    assert front["size_categories"] == ["n<1K"] and "tiny-test" in front["tags"]
    assert "${" not in card
    assert "| convnet-bn | test | 3 | 55.5 | 54 | 90.25 |" in body  # the evaluation table
    assert "| tiny-convnet | 91.50 | 99.90 | tiny-convnet.safetensors |" in body  # teachers
    assert "| r_bn | 0.01 |" in body and "![IPC 10 images](ipc10/grid.png)" in body
    assert 'load_dataset("org/fadrm-tiny", "ipc10", revision="v1.0.0"' in body


def test_another_ipc_merges_with_the_repo(build, staged, tmp_path):
    folder, first = staged
    five = make_build(tmp_path / "b" / "ipc5", ipc=5, seed=9, teacher=False)
    existing_card = (folder / "README.md").read_text()
    manifest = stage(five, "org/fadrm-tiny", "v1.1.0", tmp_path / "s", existing_manifest=first,
                     existing_card=existing_card, remote_files=set(first["files"]) | {".gitattributes"},
                     versions=["v1.0.0"])
    assert sorted(manifest["ipcs"]) == ["10", "5"] and manifest["ipcs"]["10"]["version"] == "v1.0.0"
    assert manifest["files"]["ipc10/train-00000-of-00001.parquet"] == first["files"]["ipc10/train-00000-of-00001.parquet"]
    assert "ipc5/train-00000-of-00001.parquet" in manifest["files"]
    front, body = split_front_matter((tmp_path / "s" / "README.md").read_text())
    assert [c["config_name"] for c in front["configs"]] == ["ipc5", "ipc10"]
    assert "## IPC 5" in body and "## IPC 10" in body and "v1.0.0, v1.1.0" in body

    other = make_build(tmp_path / "c" / "ipc10", classes=["w", "x", "y", "z"], teacher=False)
    with pytest.raises(PublishError, match="other classes"):
        stage(other, "org/fadrm-tiny", "v1.2.0", tmp_path / "t", existing_manifest=first)


def test_merge_configs_keeps_foreign_entries():
    existing = [{"config_name": "ipc50", "data_files": "old"}, {"config_name": "extra", "data_files": "x"}]
    merged = merge_configs(existing, [10, 50])
    assert [c["config_name"] for c in merged] == ["ipc10", "ipc50", "extra"]
    assert merged[1]["data_files"] == [{"split": "train", "path": "ipc50/train-*.parquet"}]


def test_unfinished_or_tampered_builds_are_refused(tmp_path):
    build = make_build(tmp_path / "ipc10", teacher=False)
    (build / "images" / "00003" / "00009.png").unlink()
    with pytest.raises(PublishError, match="1 missing.*class 3 image 9"):
        read_build(build)
    build = make_build(tmp_path / "b" / "ipc10", teacher=False)
    png = build / "images" / "00000" / "00000.png"
    png.write_bytes(png.read_bytes() + b"junk")
    with pytest.raises(PublishError, match="changed after the manifest"):
        read_build(build)
    with pytest.raises(PublishError, match="not a build directory"):
        read_build(tmp_path / "nothing")
    with pytest.raises(PublishError, match="vX.Y.Z"):
        stage(make_build(tmp_path / "c" / "ipc10", teacher=False), "org/x", "1.0", tmp_path / "s")


def test_card_yaml_passes_the_hub_validator(staged, hub):
    from huggingface_hub import DatasetCard

    from builders.publish import validate_card

    folder, _ = staged
    validate_card((folder / "README.md").read_text())  # POST /api/validate-yaml
    with pytest.raises(PublishError, match="rejects"):
        validate_card("---\n- just\n- a list\n---\nbody\n")
    assert DatasetCard((folder / "README.md").read_text()).data.to_dict()["configs"][0]["config_name"] == "ipc10"


def test_render_card_without_a_previous_card(staged):
    _, manifest = staged
    card = render_card(manifest, "org/r", "v2.0.0", 10, ["v1.0.0", "v2.0.0"])
    assert card.startswith("---\n") and "this card was written for **v2.0.0**" in card.replace("\n", " ")


def test_wheel_ships_the_card_template(tmp_path):
    """An installed builder (not only a checkout) can render cards: the template is package data."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    from builders.publish import CARD_TEMPLATE

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"  # a copy, so setuptools' own build/ folder stays out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    for package in ("fadrm_datasets", "builders"):
        shutil.copytree(root / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("builders/templates/dataset_card.md") == CARD_TEMPLATE.read_bytes()
