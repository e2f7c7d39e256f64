"""The student run's checkpoint: a killed evaluation resumes to the same numbers, only from a file it
verifies, and its record is kept once. A kill is made by raising right after a checkpoint is written (the
files are then as a SIGKILL leaves them: writes are atomic)."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

import builders.evaluate as evaluate
from builders.checkpoints import StudentCheckpoint
from builders.evaluate import evaluate_build
from fadrm_datasets._io import read_safetensors_metadata, safetensors_bytes
from fadrm_datasets.layout import BuildDirectory
from tests.reliability.conftest import dropout_student
from tests.test_softlabels import PRESET, tiny_set, write_store

EPOCHS = 6  # checks after epochs 1..6: the kill lands after the third


class Killed(Exception):
    pass


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "build_model", dropout_student)
    images, labels = tiny_set()
    store = write_store(tmp_path / "store", images=images, epochs=EPOCHS)
    preset = PRESET.replace(eval_batch_size=store.batch_size)

    def train(directory, identity=None) -> dict:
        checkpoint = StudentCheckpoint.in_directory(tmp_path / directory, identity or {"run": "the same"})
        return evaluate.train_student(preset, images, labels, store, TensorDataset(images, labels),
                                      epochs=EPOCHS, seed=3, check_every=1, progress=False, checkpoint=checkpoint)
    return train


def final_state(directory) -> dict[str, torch.Tensor]:
    (path,) = directory.glob("*.safetensors")
    return load_file(str(path))


def kill_after_saves(monkeypatch, count: int) -> None:
    original, saves = StudentCheckpoint.save, []

    def save(self, *args):
        original(self, *args)
        saves.append(1)
        if len(saves) == count:
            raise Killed
    monkeypatch.setattr(StudentCheckpoint, "save", save)


def test_a_killed_run_resumes_to_the_same_weights_and_numbers(run, tmp_path, monkeypatch):
    whole = run("whole")
    assert whole["resumed_at_epoch"] is None and len(whole["checks"]) == EPOCHS
    with monkeypatch.context() as patch:
        kill_after_saves(patch, 3)
        with pytest.raises(Killed):
            run("killed")
    resumed = run("killed")
    assert resumed["resumed_at_epoch"] == 3
    assert resumed["checks"] == whole["checks"] and resumed["top1_best"] == whole["top1_best"]
    expected, got = final_state(tmp_path / "whole"), final_state(tmp_path / "killed")
    assert expected.keys() == got.keys() and any(k.startswith("optimizer.") for k in got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    # Without the restored generator the dropout masks, hence the weights, would differ.
    with monkeypatch.context() as patch:
        kill_after_saves(patch, 3)
        with pytest.raises(Killed):
            run("no-rng")
    monkeypatch.setattr("builders.checkpoints.Progress.restore_rng", lambda self, device: None)
    run("no-rng")
    unrestored = final_state(tmp_path / "no-rng")
    assert any(not torch.equal(expected[name], unrestored[name]) for name in expected if name.startswith("model."))


@pytest.mark.parametrize("damage,reason", [("flip a byte", "changed since"), ("truncate", "does not read"),
                                           ("edit the header", "changed since"),
                                           ("another run", "run: 'the same' here, 'another' in the file")])
def test_a_checkpoint_that_does_not_verify_is_not_resumed(damage, reason, run, tmp_path, monkeypatch, caplog):
    whole = run("whole")
    writer = {"run": "another"} if damage == "another run" else None
    with monkeypatch.context() as patch:
        kill_after_saves(patch, 2)
        with pytest.raises(Killed):
            run("damaged", identity=writer)
    (path,) = (tmp_path / "damaged").glob("*.safetensors")
    ours = StudentCheckpoint.in_directory(tmp_path / "damaged", {"run": "the same"}).path
    path.rename(ours)  # "another run": as if two runs' settings shared one file name
    data = bytearray(ours.read_bytes())
    if damage == "flip a byte":
        data[-5] ^= 0xFF  # in the last tensor's bytes: the file still reads
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "edit the header":  # a better accuracy, the tensors and the recorded hash untouched
        metadata = read_safetensors_metadata(ours)
        metadata["best"] += 50
        data = safetensors_bytes(load_file(str(ours)), metadata)
    ours.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="builders.checkpoints")
    result = run("damaged")
    assert result["resumed_at_epoch"] is None and result["checks"] == whole["checks"]
    assert reason in caplog.text


def test_a_run_killed_at_its_last_check_resumes_at_the_end(run, tmp_path, monkeypatch):
    whole = run("whole")
    with monkeypatch.context() as patch:
        kill_after_saves(patch, EPOCHS)
        with pytest.raises(Killed):
            run("end")
    resumed = run("end")
    assert resumed["resumed_at_epoch"] == EPOCHS and resumed["checks"] == whole["checks"]


def _evaluate(build_dir, **kwargs) -> dict:
    return evaluate_build(build_dir, device="cpu", progress=False, **kwargs)


def test_an_evaluation_resumes_only_its_own_settings_and_keeps_its_record_once(clean_build, monkeypatch):
    checkpoints = BuildDirectory(clean_build).checkpoints
    with monkeypatch.context() as patch:
        kill_after_saves(patch, 1)
        with pytest.raises(Killed):
            _evaluate(clean_build, seed=1)
    (left,) = checkpoints.iterdir()
    # Another lr is another run: it starts over, and leaves the killed run's file for its own rerun.
    assert _evaluate(clean_build, seed=1, lr=0.01)["resumed_at_epoch"] is None
    assert [p.name for p in checkpoints.iterdir()] == [left.name]
    # Killed after the record was kept and before its checkpoint went: the rerun resumes at the end and
    # does not keep the record twice.
    with monkeypatch.context() as patch:
        patch.setattr(StudentCheckpoint, "remove", lambda self: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            _evaluate(clean_build, seed=1)
    evaluations = BuildDirectory(clean_build).read_manifest()["evaluations"]
    assert [e["lr"] for e in evaluations] == [0.01, PRESET.eval_lr]
    assert evaluations[-1]["resumed_at_epoch"] == 1
    again = _evaluate(clean_build, seed=1)
    assert again["resumed_at_epoch"] == again["epochs"] and again["checks"] == evaluations[-1]["checks"]
    assert BuildDirectory(clean_build).read_manifest()["evaluations"] == evaluations
    assert not list(checkpoints.iterdir())


def test_a_finished_evaluation_prunes_what_no_run_can_resume(clean_build, monkeypatch):
    checkpoints = BuildDirectory(clean_build).checkpoints
    with monkeypatch.context() as patch:
        kill_after_saves(patch, 1)
        with pytest.raises(Killed):
            _evaluate(clean_build, seed=2)  # same inputs, other settings: kept
    (same_inputs,) = checkpoints.iterdir()
    stale = checkpoints / "convnet-bn-0123456789abcdef.safetensors"
    metadata = read_safetensors_metadata(same_inputs)
    metadata["identity"]["inputs"] = "the set before it was built again"
    stale.write_bytes(safetensors_bytes(load_file(str(same_inputs)), metadata))
    torn = checkpoints / f".{stale.name}.x1y2.tmp"
    torn.write_bytes(b"half a file")
    _evaluate(clean_build, seed=0)
    assert [p.name for p in checkpoints.iterdir()] == [same_inputs.name]
