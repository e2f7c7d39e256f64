"""Staging a build for the Hub: parquet with `datasets` features, grid, card, manifests (no upload here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from builders.card import (CARD_TEMPLATE, cards_dir, grid_layout, merge_configs, render_card, size_category,
                           split_front_matter)
from builders.presets import PRESETS
from builders.publish import PublishError, public_manifest, read_build, write_release_folder
from fadrm_datasets import layout
from fadrm_datasets._io import sha256_file
from fadrm_datasets.install import install_hint
from tests.fakebuild import CLASSES, expected_pixels, make_build


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("publish") / layout.build_dir_name(10), seed=2, soft_labels=True)


@pytest.fixture(scope="module")
def staged(build, tmp_path_factory):
    folder = tmp_path_factory.mktemp("staging")
    manifest = write_release_folder(build, "org/fadrm-tiny", "v1.0.0", folder)
    return folder, manifest


def test_staged_layout_and_manifest(staged, build):
    folder, manifest = staged
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    ipc, soft = layout.ipc_prefix(10), layout.repo_soft_labels(10)
    assert files == [layout.README, ipc + layout.GRID, ipc + layout.MANIFEST, f"{soft}/{layout.shard_name(0, 1)}",
                     f"{soft}/{layout.SOFT_LABEL_INDEX}", layout.parquet_shard(10, 0, 1), layout.MANIFEST,
                     layout.repo_teacher("tiny-convnet")]
    assert json.loads((folder / layout.MANIFEST).read_text()) == manifest
    assert set(manifest["files"]) == set(files) - {layout.MANIFEST}
    assert all(sha256_file(folder / rel) == sha for rel, sha in manifest["files"].items())
    assert manifest["classes"] == CLASSES and manifest["version"] == "v1.0.0"
    record = manifest["ipcs"]["10"]
    assert record["num_images"] == 40 and record["soft_label_epochs"] == 2
    label_files = [folder / soft / name for name in (layout.SOFT_LABEL_INDEX, layout.shard_name(0, 1))]
    assert record["soft_labels"] == {"stored_epochs": 2, "topk": None, "logit_dtype": "float16",
                                     "bytes": sum(f.stat().st_size for f in label_files)}
    assert record["shards"] == [layout.parquet_shard(10, 0, 1)] and record["preset"]["image_size"] == 8
    # The build manifest travels without its local paths.
    published = json.loads((folder / layout.ipc_dir(10) / layout.MANIFEST).read_text())
    assert published == public_manifest(json.loads((build / layout.MANIFEST).read_text()))
    assert published["evaluations"][0]["command"] == "fadrm-build evaluate BUILD_DIR --data-root DATA_ROOT"
    assert "build_root" not in published["options"] and "teachers_dir" not in published


def test_parquet_carries_the_datasets_features(staged, build):
    import pyarrow.parquet as pq

    folder, _ = staged
    table = pq.read_table(folder / layout.parquet_shard(10, 0, 1))
    meta = json.loads(table.schema.metadata[b"huggingface"])
    assert meta == {"info": {"features": {"image": {"_type": "Image"},
                                          "label": {"names": CLASSES, "_type": "ClassLabel"},
                                          "ipc_id": {"dtype": "int32", "_type": "Value"}}}}
    assert str(table.schema.field("ipc_id").type) == "int32"
    assert table.column("label").to_pylist() == [c for c in range(4) for _ in range(10)]
    assert table.column("ipc_id").to_pylist() == list(range(10)) * 4
    images = table.column("image").to_pylist()
    assert images[11]["path"] == layout.image_name(1, 1)
    assert images[11]["bytes"] == (build / layout.image_relpath(1, 1)).read_bytes()

    import datasets  # `datasets` restores Image/ClassLabel from the schema metadata alone

    ds = datasets.Dataset.from_parquet(str(folder / layout.parquet_shard(10, 0, 1)),
                                       cache_dir=str(folder.parent / "ds-cache"))
    assert isinstance(ds.features["image"], datasets.Image) and ds.features["label"].names == CLASSES
    assert np.array_equal(np.asarray(ds[11]["image"]), expected_pixels(build)[11])


def test_shards_split_by_size(build, tmp_path):
    manifest = write_release_folder(build, "org/x", "v1.0.0", tmp_path, max_shard_bytes=4000)
    shards = manifest["ipcs"]["10"]["shards"]
    assert len(shards) > 1 and shards[0] == layout.parquet_shard(10, 0, len(shards))
    import pyarrow.parquet as pq

    labels = [l for s in shards for l in pq.read_table(tmp_path / s).column("label").to_pylist()]
    assert labels == [c for c in range(4) for _ in range(10)]


def test_grid_names_each_class_and_scales_small_images_up(staged):
    from PIL import Image

    folder, _ = staged
    spec = grid_layout(4, 10, 8)
    assert spec.classes == (0, 1, 2, 3) and spec.per_class == 10 and spec.tile == 56 and spec.columns == 1
    with Image.open(folder / layout.ipc_dir(10) / layout.GRID) as grid:
        assert grid.format == "PNG" and grid.mode == "RGB" and grid.size == spec.size == (560, 298)
        pixels = np.asarray(grid)
    top, left = 2 * (14 + 56 + 6) + 14, 4 * 56  # class 2's block, below its name; its 5th image
    tile = pixels[top:top + 56, left:left + 56]
    assert (tile[:7, :7, 0] == 2 * 20 + 4).all()  # the marked pixel, scaled up 7x (nearest)
    label = pixels[2 * 76:2 * 76 + 14, :56]
    assert (label < 128).any() and (pixels[2 * 76:2 * 76 + 14, 400:] == 255).all()  # "2: cat", then blank


@pytest.mark.parametrize("classes, ipc, size", [(10, 1, 28), (10, 50, 28), (100, 10, 32), (200, 50, 64),
                                                (1000, 10, 224), (1000, 50, 224)])
def test_grid_stays_readable_at_any_class_count_and_ipc(classes, ipc, size):
    spec = grid_layout(classes, ipc, size)
    assert 56 <= spec.tile <= 112 and spec.per_class == min(ipc, 10)
    assert spec.classes[0] == 0 and spec.classes[-1] == classes - 1 and len(set(spec.classes)) == len(spec.classes)
    width, height = spec.size
    assert width * height <= 6_000_000 and 0.3 <= width / height <= 4  # rows wrap: never one endless strip


def test_card_front_matter_and_body(staged):
    folder, manifest = staged
    card = (folder / layout.README).read_text()
    front, body = split_front_matter(card)
    assert front["configs"] == [{"config_name": layout.ipc_dir(10),
                                 "data_files": [{"split": "train", "path": layout.parquet_pattern(10)}]}]
    assert front["task_categories"] == ["image-classification"] and front["license"] == "unknown"
    assert front["size_categories"] == ["n<1K"] and "tiny-test" in front["tags"]
    assert "${" not in card
    # The evaluation table: the last epoch first, the best checkpoint labelled, the command.
    assert ("| student | labels | split | epochs | soft-label bytes | top-1 % (last epoch) | top-5 % | best checkpoint "
            "% (chosen on") in body
    assert "| convnet-bn | soft | test | 3 |  | 54 | 90.25 | 55.5 |  |  | fadrm-build evaluate BUILD_DIR --data-root" in body
    labels = manifest["ipcs"]["10"]["soft_labels"]["bytes"]
    assert f"soft labels: 2 epochs (every epoch stored, float16, {labels:,} bytes)." in body
    assert "| tiny-convnet | 91.50 | 99.90 | tiny-convnet.safetensors |" in body  # teachers
    assert "| r_bn | 0.01 |" in body and "![IPC 10 images](ipc10/grid.png)" in body
    assert f'load_dataset("org/fadrm-tiny", "{layout.ipc_dir(10)}", revision="v1.0.0"' in body
    assert 'FADRMDataset(repo_id="org/fadrm-tiny", ipc=10, version="v1.0.0", download=True)' in body
    assert f"Install it with {install_hint()}:" in body and "pypi.org" not in body  # not on PyPI
    assert "Every class, every image of each, labelled `index: name`" in body
    assert "add `cards/tiny-test.md`" in body  # a dataset without a card source says so


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_every_dataset_has_a_card_source_with_license_citation_and_limits(dataset, staged):
    text = (cards_dir() / f"{dataset}.md").read_text()
    assert "## The source data" in text and "@" in text and "## Uses and limits" in text
    _, manifest = staged
    card = render_card({**manifest, "dataset": dataset}, "org/r", "v1.0.0", 10, ["v1.0.0"])
    assert text.strip() in card and "${" not in card


# What each source's own page (and the Hub's card of it) says: (license, license_name, source dataset, gated).
SOURCE_FACTS = {
    "cifar100": ("unknown", None, "uoft-cs/cifar100", False),  # no license stated by its authors
    "fashion-mnist": ("mit", None, "zalando-datasets/fashion_mnist", False),
    "imagenet": ("other", "imagenet", "ILSVRC/imagenet-1k", True),  # ImageNet's terms of access
    "imagenette": ("other", "imagenet", "frgfm/imagenette", True),  # fastai's repo is Apache-2.0, its images ImageNet's
    "imagewoof": ("other", "imagenet", "frgfm/imagewoof", True),  # as ImageNette, whose repo publishes it
    "tiny-imagenet": ("other", "imagenet", "zh-plus/tiny-imagenet", True),  # ImageNet's images, ImageNet's terms
}


def hub_list(name: str):
    """One of the fixed lists of allowed card values that `datasets` ships."""
    from importlib import resources

    return json.loads(resources.files("datasets.utils.resources").joinpath(name).read_text())


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_every_card_describes_its_source_in_the_hubs_metadata(dataset, staged):
    from huggingface_hub import DatasetCard

    license, license_name, source, gated = SOURCE_FACTS[dataset]
    _, manifest = staged
    card = DatasetCard(render_card({**manifest, "dataset": dataset}, "org/r", "v1.0.0", 10, ["v1.0.0"]))
    meta = card.data.to_dict()
    assert meta["license"] == license and meta.get("license_name") == license_name
    assert ("license_link" in meta) == (license == "other")  # the terms' link goes with license "other"
    if license == "other":
        assert meta["license_link"].startswith("https://image-net.org/")
    assert meta["source_datasets"] == [source]
    assert meta["annotations_creators"] == ["machine-generated"]
    assert meta["annotations_creators"][0] in hub_list("creators.json")["annotations"]
    assert meta["size_categories"] == ["n<1K"] and meta["size_categories"][0] in hub_list("size_categories.json")
    assert meta["task_categories"] == ["image-classification"]
    # A gated set's card carries the prompt users accept, and its text says how access works.
    assert ("extra_gated_prompt" in meta) == gated == ("## Access" in card.text)
    if gated:
        assert meta["license_link"] in meta["extra_gated_prompt"]


def test_size_categories_are_the_hubs_fixed_list():
    produced = [size_category(n) for n in (0, *(10 ** power for power in range(3, 13)))]
    assert produced == [name for name in hub_list("size_categories.json") if name != "unknown"]
    assert size_category(999) == "n<1K" and size_category(1_000) == "1K<n<10K"
    assert size_category(50_000) == "10K<n<100K"  # ImageNet-1K at IPC 50


def test_another_ipc_merges_with_the_repo(build, staged, tmp_path):
    folder, first = staged
    five = make_build(tmp_path / "b" / layout.build_dir_name(5), ipc=5, seed=9, teacher=False)
    existing_card = (folder / layout.README).read_text()
    manifest = write_release_folder(five, "org/fadrm-tiny", "v1.1.0", tmp_path / "s", existing_manifest=first,
                                    existing_card=existing_card, remote_files=set(first["files"]) | {".gitattributes"},
                                    versions=["v1.0.0"])
    assert sorted(manifest["ipcs"]) == ["10", "5"] and manifest["ipcs"]["10"]["version"] == "v1.0.0"
    assert manifest["files"][layout.parquet_shard(10, 0, 1)] == first["files"][layout.parquet_shard(10, 0, 1)]
    assert layout.parquet_shard(5, 0, 1) in manifest["files"]
    front, body = split_front_matter((tmp_path / "s" / layout.README).read_text())
    assert [c["config_name"] for c in front["configs"]] == [layout.ipc_dir(5), layout.ipc_dir(10)]
    assert "## IPC 5" in body and "## IPC 10" in body and "v1.0.0, v1.1.0" in body

    other = make_build(tmp_path / "c" / layout.build_dir_name(10), classes=["w", "x", "y", "z"], teacher=False)
    with pytest.raises(PublishError, match="other classes"):
        write_release_folder(other, "org/fadrm-tiny", "v1.2.0", tmp_path / "t", existing_manifest=first)


def test_merge_configs_keeps_foreign_entries():
    existing = [{"config_name": layout.ipc_dir(50), "data_files": "old"}, {"config_name": "extra", "data_files": "x"}]
    merged = merge_configs(existing, [10, 50])
    assert [c["config_name"] for c in merged] == [layout.ipc_dir(10), layout.ipc_dir(50), "extra"]
    assert merged[1]["data_files"] == [{"split": "train", "path": layout.parquet_pattern(50)}]


def test_unfinished_or_tampered_builds_are_refused(tmp_path):
    build = make_build(tmp_path / layout.build_dir_name(10), teacher=False)
    (build / layout.image_relpath(3, 9)).unlink()
    with pytest.raises(PublishError, match="1 missing.*class 3 image 9"):
        read_build(build)
    build = make_build(tmp_path / "b" / layout.build_dir_name(10), teacher=False)
    png = build / layout.image_relpath(0, 0)
    png.write_bytes(png.read_bytes() + b"junk")
    with pytest.raises(PublishError, match="changed after the manifest"):
        read_build(build)
    with pytest.raises(PublishError, match="not a build directory"):
        read_build(tmp_path / "nothing")
    build = make_build(tmp_path / "c" / layout.build_dir_name(10), teacher=False)
    with pytest.raises(PublishError, match="is not a release tag; give one like 'v1.0.0'"):
        write_release_folder(build, "org/x", "1.0", tmp_path / "s")


def test_card_yaml_passes_the_hub_validator(staged, hub):
    from huggingface_hub import DatasetCard

    from builders.publish import validate_card

    folder, _ = staged
    validate_card((folder / layout.README).read_text())  # POST /api/validate-yaml
    with pytest.raises(PublishError, match="rejects"):
        validate_card("---\n- just\n- a list\n---\nbody\n")
    card = DatasetCard((folder / layout.README).read_text())
    assert card.data.to_dict()["configs"][0]["config_name"] == layout.ipc_dir(10)


def test_render_card_without_a_previous_card(staged):
    _, manifest = staged
    card = render_card(manifest, "org/r", "v2.0.0", 10, ["v1.0.0", "v2.0.0"])
    assert card.startswith("---\n") and "this card was written for **v2.0.0**" in card.replace("\n", " ")


def test_installed_builder_finds_the_cards(tmp_path):
    """The top-level cards/ ships in the wheel as builders/cards, and an installed builder renders from it."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"  # a copy, so setuptools' own build/ folder stays out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):  # not a set's name: the project's own
        shutil.copy(root / name, source / name)
    for folder in ("fadrm_datasets", "builders", "cards"):
        shutil.copytree(root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for card in sorted((root / "cards").glob("*.md")):
            assert archive.read(f"builders/cards/{card.name}") == card.read_bytes()
        archive.extractall(tmp_path / "site")
    code = "import builders.card as c; print(c.cards_dir())"
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": ""}
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.stdout.strip() == str(tmp_path / "site" / "builders" / "cards"), found.stderr
    assert (Path(found.stdout.strip()) / CARD_TEMPLATE).is_file()


def test_card_shows_final_accuracy_over_seeds_scores_and_commands(build, tmp_path):
    """From benchmark records: the last epoch's top-1 (mean ± std) as the headline, the best checkpoint
    labelled, the baselines and other students under the same protocol, the scores, the commands."""
    teachers = {"convnet-bn": {"epochs": "4", "test_top1": "91.57"}}

    def record(method, final, std, best, labels="soft", student="convnet-bn", label=None):
        return {"dataset": "tiny-test", "ipc": 10, "method": method, "student": student, "labels": labels,
                "seeds": [0, 1, 2], "top1_final_mean": final, "top1_final_std": std, "top1_best_mean": best,
                "split": "test", "label": label, "teachers": teachers,
                "command": f"python benchmarks/accuracy.py --ipc 10 --methods {method} --labels {labels}"}

    records = [record("fadrm", 88.84, 0.34, 89.12), record("random-real", 87.58, 0.09, 88.01),
               record("sre2l", 85.74, 0.11, 86.0), record("fadrm", 70.0, 1.0, 71.0, labels="hard"),
               record("fadrm", 79.0, 0.5, 79.5, student="mobilenet_v2"),  # superseded by the next
               record("fadrm", 80.5, 0.5, 81.0, student="mobilenet_v2"),
               {**record("fadrm", 1.0, 0.0, 1.0), "split": "val"}, {**record("fadrm", 2.0, 0.0, 2.0), "ipc": 50}]
    manifest = write_release_folder(build, "org/fadrm-tiny", "v1.0.0", tmp_path / "s", records=records)
    _, body = split_front_matter((tmp_path / "s" / layout.README).read_text())
    assert "top-1 % (last epoch, mean ± std) | best checkpoint % (chosen on the test split)" in body
    assert "| fadrm | convnet-bn | soft | 3 | 88.84 ± 0.34 | 89.12 | convnet-bn (91.57 %) |" in body
    assert "| random-real | convnet-bn | soft | 3 | 87.58 ± 0.09 |" in body and "| sre2l | convnet-bn |" in body
    assert "| fadrm | mobilenet_v2 | soft | 3 | 80.50 ± 0.50 |" in body and "79.00 ± 0.50" not in body
    assert "`python benchmarks/accuracy.py --ipc 10 --methods fadrm --labels soft`" in body
    assert "1.00 ± 0.00" not in body and "2.00 ± 0.00" not in body  # the val record and the IPC 50 one
    # IOR = 88.84 - 87.58, HLR = 91.57 - 70.00: the scores row of the set whose hard labels were measured
    assert "| fadrm | convnet-bn | 88.84 | 87.58 | 70.00 | 91.57 | 1.26 | 21.57 |" in body
    assert manifest["ipcs"]["10"]["evaluations"][0]["top1_final"] == 54.0
    assert "### This build's evaluations" in body


def test_published_manifest_keeps_relative_paths_and_words_whole():
    """Only absolute local paths are replaced, and only whole: the default relative roots name nothing of
    the machine, and words that contain them stay as they are."""
    build_dir, relative = f"/srv/x/{layout.build_dir_name(10)}", layout.build_dir("build", "fashion-mnist", 10)
    manifest = {"options": {"build_root": "build", "data_root": "data", "build_dir": build_dir},
                "evaluations": [{"command": f"fadrm-build evaluate {relative} --data-root data"},
                                {"command": f"fadrm-build evaluate {build_dir} --data-root {build_dir}b"}],
                "note": "metadata of the build"}
    public = public_manifest(manifest)
    assert public["evaluations"][0]["command"] == f"fadrm-build evaluate {relative} --data-root data"
    assert public["evaluations"][1]["command"] == f"fadrm-build evaluate BUILD_DIR --data-root {build_dir}b"
    assert public["note"] == "metadata of the build" and "build_root" not in public["options"]
