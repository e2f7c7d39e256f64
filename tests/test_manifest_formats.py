"""The manifests are one typed schema (fadrm_datasets/schema.py): their writers fill it, refusing a field
it does not declare, every reader parses it, and a manifest of a newer format is refused by each reader
in the same line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fadrm_datasets import hub as fhub
from fadrm_datasets.layout import BuildDirectory
from fadrm_datasets.schema import (BUILD_FORMAT_VERSION, BUILD_MANIFEST_FILE, REPO_FORMAT_VERSION, REPO_MANIFEST_FILE,
                                   NewerFormatError, check_written, read, release_manifest)
from fadrm_datasets.sets import FADRMDataset
from builders.presets import FASHION_MNIST
from builders.publish import PublishError
from tests.fakebuild import make_build, tiny_preset
from tests.reliability.hostile import VERSION, publish_tiny, republish


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
    build = _started(tmp_path / "ipc1")
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
    from builders.publish import stage

    staging = tmp_path / "staging"
    written = stage(make_build(tmp_path / "ipc10", soft_labels=True), "acme/fadrm-tiny", "v1.0.0", staging)
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
    build = _started(tmp_path / "ipc1")
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
        check_written(manifest, tmp_path / "manifest.json", REPO_MANIFEST_FILE)
    with pytest.raises(TypeError, match="sizes"):
        release_manifest(repo="acme/fadrm-tiny", dataset="tiny", display_name="Tiny", version="v1.0.0",
                         classes=["a"], ipcs={}, files={})


# --- every reader refuses a newer format in the same line -----------------------------------------

def _newer_build(tmp_path) -> Path:
    path = make_build(tmp_path / "ipc10", soft_labels=True)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": BUILD_FORMAT_VERSION + 1}))
    return path


def _newer_release(hub, tmp_path) -> str:
    repo = publish_tiny(hub, tmp_path, "newer")
    republish(repo, {}, tmp_path, manifest=lambda m: {**m, "format_version": REPO_FORMAT_VERSION + 1})
    return repo


def _from_build(hub, tmp_path):
    path = _newer_build(tmp_path)
    return lambda: FADRMDataset.from_build(path), path / "manifest.json", BUILD_FORMAT_VERSION + 1


def _hub_fetch(hub, tmp_path):
    repo = _newer_release(hub, tmp_path)
    dest = fhub.version_dir(tmp_path / "root", repo, VERSION)

    def fetch_nothing_but_the_manifest():
        try:
            fhub.fetch(repo, 10, VERSION, tmp_path / "root")
        finally:
            assert sorted(p.name for p in dest.rglob("*")) == ["manifest.json"]

    return fetch_nothing_but_the_manifest, dest / "manifest.json", REPO_FORMAT_VERSION + 1


def _push_of_a_build(hub, tmp_path):
    from builders.publish import push

    path = _newer_build(tmp_path)
    return lambda: push(path, hub.repo_id("newer-build"), VERSION), path / "manifest.json", BUILD_FORMAT_VERSION + 1


def _push_onto_a_release(hub, tmp_path):
    from builders.publish import push

    repo = _newer_release(hub, tmp_path)
    build = make_build(tmp_path / "more" / "ipc10")
    return lambda: push(build, repo, "v1.1.0"), None, REPO_FORMAT_VERSION + 1


def _relabel(hub, tmp_path):
    from builders.relabel import stage_relabel

    path = _newer_build(tmp_path)
    ctx = SimpleNamespace(directory=BuildDirectory(path), options=SimpleNamespace(ipc=10), preset=tiny_preset())
    return lambda: stage_relabel(ctx), path / "manifest.json", BUILD_FORMAT_VERSION + 1


def _evaluate(hub, tmp_path):
    from builders.evaluate import evaluate_build

    path = _newer_build(tmp_path)
    return lambda: evaluate_build(path), path / "manifest.json", BUILD_FORMAT_VERSION + 1


def _continual(hub, tmp_path):
    from builders.continual import open_set

    path = _newer_build(tmp_path)
    return lambda: open_set(path, torch.device("cpu")), path / "manifest.json", BUILD_FORMAT_VERSION + 1


@pytest.mark.parametrize("reader", [_from_build, _hub_fetch, _push_of_a_build, _push_onto_a_release, _relabel,
                                    _evaluate, _continual], ids=lambda reader: reader.__name__.strip("_"))
def test_every_reader_refuses_a_manifest_of_a_newer_format_in_one_line(hub, tmp_path, reader):
    read_it, path, version = reader(hub, tmp_path)
    with pytest.raises((NewerFormatError, PublishError)) as refused:  # push's errors are its own kind
        read_it()
    # Push reads the Hub's manifest where huggingface_hub keeps it: only the file's name is known here.
    where = re.escape(str(path)) if path is not None else r"/\S+/manifest\.json"
    assert re.fullmatch(_newer_line(where, version), str(refused.value)), str(refused.value)
