"""The manifests are one typed schema (fadrm_datasets/schema.py): their writers fill it, refusing a field
it does not declare, every reader parses it, and a manifest of a newer format is refused by each reader
in the same line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fadrm_datasets import hub as fhub
from fadrm_datasets import layout
from fadrm_datasets.layout import BuildDirectory
from fadrm_datasets.schema import (BUILD_FORMAT_VERSION, BUILD_MANIFEST_FILE, REPO_FORMAT_VERSION, REPO_MANIFEST_FILE,
                                   NewerFormatError, check_written, read, release_manifest)
from fadrm_datasets.sets import FADRMDataset
from builders.presets import get_preset
from builders.publish import PublishError
from tests.fakebuild import make_build, tiny_preset
from tests.reliability.hostile import VERSION, publish_tiny, republish


FIXTURES = Path(__file__).parent / "fixtures" / "df17861"  # made as its README says
FASHION_MNIST = get_preset("fashion-mnist")


def _newer_line(path, version: int) -> str:
    return f"{path} is of format {version}; upgrade fadrm-datasets to read this set"


# --- writers fill the schema ---------------------------------------------------------------------

def _started(root: Path) -> BuildDirectory:
    build = BuildDirectory(root)
    build.start_manifest(dataset="fashion-mnist", ipc=1, method="fadrm", seed=0, preset=FASHION_MNIST.to_dict(),
                         options={"device": "cpu"}, code_version={"package": "0", "git": None},
                         environment={"torch": torch.__version__})
    return build


def test_a_build_manifest_written_stage_by_stage_reads_back_in_the_format_written(tmp_path):
    build = _started(tmp_path / layout.build_dir_name(1))
    build.record_stage("patches", {"difficulty": "medium", "seconds": 1.5, "mean_teacher_ce": 0.25})
    build.record_stage("recover", {"settings": {"lr": 0.25}, "complete": True, "seconds": 2.0, "units": {}})
    build.update_manifest(classes=list(FASHION_MNIST.class_names), timings={"teacher": 0.5},
                          evaluations=[{"top1_final": 80.0, "loss": float("nan")}])
    manifest = read(build.manifest_path, BUILD_MANIFEST_FILE)
    assert manifest["format_version"] == BUILD_FORMAT_VERSION
    assert manifest["preset"]["mean"] == list(FASHION_MNIST.mean) and manifest["ipc"] == 1
    assert manifest["stages"]["patches"]["mean_teacher_ce"] == 0.25 and manifest["stages"]["recover"]["complete"]
    assert manifest["timings"] == {"teacher": 0.5} and manifest["evaluations"] == [{"top1_final": 80.0, "loss": None}]


def test_a_release_manifest_written_by_push_reads_back_in_the_format_written(tmp_path):
    from builders.publish import write_release_folder

    staging = tmp_path / "staging"
    build = make_build(tmp_path / layout.build_dir_name(10), soft_labels=True)
    written = write_release_folder(build, "acme/fadrm-tiny", "v1.0.0", staging)
    manifest = fhub.read_manifest(staging)
    assert manifest == json.loads(json.dumps(written)) and manifest["format_version"] == REPO_FORMAT_VERSION
    assert manifest["ipcs"]["10"]["num_images"] == 40 and set(manifest["sizes"]) == set(manifest["files"])


@pytest.mark.parametrize("write, refusal", [
    (lambda build: build.update_manifest(preset_name="tiny"),
     "preset_name is no field of a build manifest; declare it in fadrm_datasets/schema.py"),
    (lambda build: build.record_stage("evaluate", {"seconds": 1.0}), "stages.evaluate is no field of a build manifest"),
    (lambda build: build.record_stage("recover", {"complete": "yes"}),
     'stages.recover.complete should be true or false, got "yes"'),
    (lambda build: build.update_manifest(ipc=0), "ipc should be an integer from 1 to 10,000, got 0"),
    (lambda build: build.update_manifest(format_version=BUILD_FORMAT_VERSION + 1),
     f"format_version should be {BUILD_FORMAT_VERSION}, the format this fadrm-datasets writes"),
])
def test_a_build_manifest_writer_refuses_a_field_the_schema_does_not_declare_before_writing(tmp_path, write,
                                                                                           refusal):
    build = _started(tmp_path / layout.build_dir_name(1))
    before = build.manifest_path.read_bytes()
    with pytest.raises(ValueError, match=f"^refusing to write {re.escape(str(build.manifest_path))}: "
                                         f"{re.escape(refusal)}"):
        write(build)
    assert build.manifest_path.read_bytes() == before


def test_a_release_manifest_holding_an_undeclared_field_is_refused_before_it_is_written(tmp_path):
    record = {"version": "v1.0.0", "num_images": 40, "preset": {"name": "tiny"}, "notes": "hand-made"}
    manifest = release_manifest(repo="acme/fadrm-tiny", dataset="tiny", display_name="Tiny", version="v1.0.0",
                                classes=["a"], ipcs={"10": record}, files={}, sizes={})
    with pytest.raises(ValueError, match=r'ipcs\["10"\]\.notes is no field of a release manifest'):
        check_written(manifest, tmp_path / layout.MANIFEST, REPO_MANIFEST_FILE)
    with pytest.raises(TypeError, match="sizes"):
        release_manifest(repo="acme/fadrm-tiny", dataset="tiny", display_name="Tiny", version="v1.0.0",
                         classes=["a"], ipcs={}, files={})


# --- every reader refuses a newer format in the same line -----------------------------------------

def _newer_build(tmp_path) -> Path:
    path = make_build(tmp_path / layout.build_dir_name(10), soft_labels=True)
    manifest = json.loads((path / layout.MANIFEST).read_text())
    (path / layout.MANIFEST).write_text(json.dumps({**manifest, "format_version": BUILD_FORMAT_VERSION + 1}))
    return path


def _newer_release(hub, tmp_path) -> str:
    repo = publish_tiny(hub, tmp_path, "newer")
    republish(repo, {}, tmp_path, manifest=lambda m: {**m, "format_version": REPO_FORMAT_VERSION + 1})
    return repo


def _from_build(hub, tmp_path):
    path = _newer_build(tmp_path)
    return lambda: FADRMDataset.from_build(path), path / layout.MANIFEST, BUILD_FORMAT_VERSION + 1


def _hub_fetch(hub, tmp_path):
    repo = _newer_release(hub, tmp_path)
    dest = fhub.version_dir(tmp_path / "root", repo, VERSION)

    def fetch_nothing_but_the_manifest():
        try:
            fhub.fetch(repo, 10, VERSION, tmp_path / "root")
        finally:
            assert sorted(p.name for p in dest.rglob("*")) == [layout.MANIFEST]

    return fetch_nothing_but_the_manifest, dest / layout.MANIFEST, REPO_FORMAT_VERSION + 1


def _push_of_a_build(hub, tmp_path):
    from builders.publish import push

    path = _newer_build(tmp_path)
    return lambda: push(path, hub.repo_id("newer-build"), VERSION), path / layout.MANIFEST, BUILD_FORMAT_VERSION + 1


def _push_onto_a_release(hub, tmp_path):
    from builders.publish import push

    repo = _newer_release(hub, tmp_path)
    build = make_build(tmp_path / "more" / layout.build_dir_name(10))
    return lambda: push(build, repo, "v1.1.0"), None, REPO_FORMAT_VERSION + 1


def _relabel(hub, tmp_path):
    from builders.relabel import stage_relabel

    path = _newer_build(tmp_path)
    ctx = SimpleNamespace(directory=BuildDirectory(path), options=SimpleNamespace(ipc=10), preset=tiny_preset())
    return lambda: stage_relabel(ctx), path / layout.MANIFEST, BUILD_FORMAT_VERSION + 1


def _evaluate(hub, tmp_path):
    from builders.evaluate import evaluate_build

    path = _newer_build(tmp_path)
    return lambda: evaluate_build(path), path / layout.MANIFEST, BUILD_FORMAT_VERSION + 1


def _continual(hub, tmp_path):
    from builders.continual import open_set

    path = _newer_build(tmp_path)
    return lambda: open_set(path, torch.device("cpu")), path / layout.MANIFEST, BUILD_FORMAT_VERSION + 1


@pytest.mark.parametrize("reader", [_from_build, _hub_fetch, _push_of_a_build, _push_onto_a_release, _relabel,
                                    _evaluate, _continual], ids=lambda reader: reader.__name__.strip("_"))
def test_every_reader_refuses_a_manifest_of_a_newer_format_in_one_line(hub, tmp_path, reader):
    read_it, path, version = reader(hub, tmp_path)
    with pytest.raises((NewerFormatError, PublishError)) as refused:  # push's errors are its own kind
        read_it()
    # Push reads the Hub's manifest where huggingface_hub keeps it: only the file's name is known here.
    where = re.escape(str(path)) if path is not None else r"/\S+/manifest\.json"
    assert re.fullmatch(_newer_line(where, version), str(refused.value)), str(refused.value)


# --- older formats: what commit df17861 wrote ------------------------------------------------------

def test_a_build_made_at_df17861_is_read_and_extended_by_todays_readers_and_writers(tmp_path):
    from builders.evaluate import manifest_preset

    build = BuildDirectory(shutil.copytree(FIXTURES / "build", tmp_path / layout.build_dir_name(1)))
    manifest = build.read_manifest()
    assert manifest["format_version"] == 1 and manifest["code_version"]["git"].startswith("df17861")
    assert manifest_preset(manifest).name == "fashion-mnist"
    dataset = FADRMDataset.from_build(build.root, soft_labels=True)
    assert len(dataset) == 10 and dataset.ipc == 1 and dataset.classes[0] == "T-shirt/top"
    # Its soft-label store is of format 1: every epoch stored, float16; it replays as before.
    store = dataset.soft_label_store
    assert store.index["format_version"] == 1 and (store.epochs, store.train_epochs, store.logit_dtype) == (1, 1, "float16")
    images, soft, labels = next(iter(dataset.soft_label_loader(epochs=0)))
    assert soft.dtype == torch.float32 and soft.shape == (len(labels), 10) and images.shape[0] == len(labels)
    build.update_manifest(evaluations=[*manifest["evaluations"], {"top1_final": 10.0}])
    assert build.read_manifest()["evaluations"] == [*manifest["evaluations"], {"top1_final": 10.0}]


def _publish_df17861_release(repo: str) -> dict[str, bytes]:
    """The fixture's release on the loopback Hub as ``v1.0.0``; placeholders for the files it leaves out."""
    from huggingface_hub import CommitOperationAdd, HfApi

    release = FIXTURES / "release"
    kept = {p.relative_to(release).as_posix(): p.read_bytes() for p in release.rglob("*") if p.is_file()}
    listed = json.loads(kept[layout.MANIFEST])["files"]
    placeholders = {layout.README: b"---\npretty_name: left out of the fixture\n---\n"}
    files = {**{rel: kept.get(rel, placeholders.get(rel, b"left out of the fixture")) for rel in listed},
             layout.MANIFEST: kept[layout.MANIFEST]}
    api = HfApi()
    api.create_repo(repo, repo_type="dataset")
    commit = api.create_commit(repo, [CommitOperationAdd(rel, data) for rel, data in files.items()],
                               commit_message="df17861's release", repo_type="dataset").oid
    api.create_tag(repo, tag="v1.0.0", revision=commit, repo_type="dataset")
    return files


def test_a_release_published_at_df17861_is_migrated_by_the_fetch_and_by_push(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    from builders.publish import push

    repo = hub.repo_id("df17861")
    files = _publish_df17861_release(repo)
    assert json.loads(files[layout.MANIFEST])["format_version"] == 1
    shard = layout.parquet_shard(1, 0, 1)
    fetched = FADRMDataset(tmp_path / "root", repo_id=repo, ipc=1, version="v1.0.0", download=True, soft_labels=True)
    assert len(fetched) == 10 and fetched.classes[0] == "T-shirt/top"
    assert fetched.manifest["format_version"] == REPO_FORMAT_VERSION
    assert fetched.manifest["sizes"][shard] == len(files[shard])
    assert len(FADRMDataset(tmp_path / "root", repo_id=repo, ipc=1, version="v1.0.0", download=False)) == 10

    build = make_build(tmp_path / "more" / layout.build_dir_name(2), ipc=2, num_classes=10, size=28, channels=1,
                       teacher=False, classes=fetched.classes)
    push(build, repo, "v1.1.0")
    pushed = hf_hub_download(repo, layout.MANIFEST, repo_type="dataset", revision="v1.1.0")
    pushed = json.loads(Path(pushed).read_text())
    assert pushed["format_version"] == REPO_FORMAT_VERSION and sorted(pushed["ipcs"]) == ["1", "2"]
    assert pushed["sizes"][shard] == len(files[shard])
    assert pushed["files"][shard] == json.loads(files[layout.MANIFEST])["files"][shard]


def test_a_soft_label_index_of_a_newer_format_is_refused_in_the_same_line(tmp_path):
    from fadrm_datasets.schema import SOFT_LABEL_FORMAT_VERSION
    from fadrm_datasets.softlabels import SoftLabelStore, SoftLabelStoreError

    build = make_build(tmp_path / layout.ipc_dir(10), soft_labels=True)
    index = build / layout.SOFT_LABELS / layout.SOFT_LABEL_INDEX
    record = json.loads(index.read_text())
    index.write_text(json.dumps({**record, "format_version": SOFT_LABEL_FORMAT_VERSION + 1}))
    with pytest.raises((NewerFormatError, SoftLabelStoreError)) as refused:  # the store's errors are its own kind
        SoftLabelStore.open(build / layout.SOFT_LABELS)
    assert str(refused.value) == _newer_line(index, SOFT_LABEL_FORMAT_VERSION + 1)
