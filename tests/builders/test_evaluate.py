"""The student run's checkpoint: a killed evaluation resumes to the same numbers, and only from a file
it verifies."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

import builders.evaluate as evaluate
from builders.checkpoints import StudentCheckpoint
from builders.models import build_model
from tests.test_softlabels import PRESET, tiny_set, write_store

EPOCHS = 6  # checks after epochs 1..6: the kill lands after the third


class Killed(Exception):
    pass


def dropout_student(name: str, *args, **kwargs) -> nn.Module:
    """A small ConvNet with dropout: the resumed run must also draw the same masks."""
    return nn.Sequential(build_model("convnet-bn-w8-d2", *args, **kwargs), nn.Dropout(0.5))


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
    monkeypatch.setattr("builders.checkpoints.Progress.restore_rng", lambda self: None)
    run("no-rng")
    unrestored = final_state(tmp_path / "no-rng")
    assert any(not torch.equal(expected[name], unrestored[name]) for name in expected if name.startswith("model."))


@pytest.mark.parametrize("damage,reason", [("flip a byte", "changed since"), ("truncate", "does not read"),
                                           ("another run", "another run's settings")])
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
    ours.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="builders.checkpoints")
    result = run("damaged")
    assert result["resumed_at_epoch"] is None and result["checks"] == whole["checks"]
    assert reason in caplog.text
