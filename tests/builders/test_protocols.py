"""Named evaluation protocols: each one's settings reach the student and its record; a protocol needing
other labels gets its own store and leaves the build's untouched; an unknown one is refused in one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import builders.evaluate as evaluate
from builders.presets import get_preset
from builders.protocols import PROTOCOLS, UnknownProtocolError, protocol_preset
from builders.schedules import cosine_factor
from fadrm_datasets.layout import SOFT_LABEL_INDEX, BuildDirectory, build_dir
from fadrm_datasets.softlabels import SoftLabelStore
from tests.fakedata import make_fashion_mnist
from tests.helpers import run_cli, run_cli_ok
from tests.test_softlabels import tiny_set, write_store

FASHION_MNIST = get_preset("fashion-mnist")
EPOCHS = 2


def small_student(name, num_classes, channels, image_size):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_each_protocols_settings_reach_the_student_and_its_record(name, tmp_path, monkeypatch):
    run = protocol_preset(name, FASHION_MNIST, ipc=10)
    preset = run.preset
    images, labels = tiny_set()  # 20 images
    store = write_store(tmp_path / "store", images=images, epochs=EPOCHS, preset=preset)
    monkeypatch.setattr(evaluate, "build_model", small_student)
    forwards, losses = [], []
    kd = evaluate.kd_loss

    def spy(out, soft, temperature, times_t_squared=True):
        forwards.append(len(out))
        losses.append((temperature, times_t_squared))
        return kd(out, soft, temperature, times_t_squared)
    monkeypatch.setattr(evaluate, "kd_loss", spy)
    student = evaluate.set_up_student_run(preset, images, labels, store, "small", EPOCHS, torch.device("cpu"), 0, 0,
                                          "soft", {EPOCHS}, None, run)
    assert type(student.optimizer) is torch.optim.AdamW
    group = student.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (preset.eval_lr, preset.eval_weight_decay)
    student.train_epoch()
    batch, accumulation = preset.relabel_batch_size, preset.eval_grad_accumulation
    recorded = [min(batch, 20 - start) for start in range(0, 20, batch)]
    if run.protocol.accumulate_within_batch:  # FADRM: each recorded batch in halves, one step per batch
        assert recorded == [16, 4] and forwards == [8, 8, 4] and student.schedule.last_epoch == len(recorded)
    else:
        assert forwards == recorded and student.schedule.last_epoch == math.ceil(len(recorded) / accumulation)
    assert set(losses) == {(preset.temperature, run.protocol.loss_times_t_squared)}
    steps = student.schedule.last_epoch
    factor = cosine_factor(1, EPOCHS * run.cosine_stretch) if run.protocol.schedule_per_epoch \
        else cosine_factor(steps, EPOCHS * steps)
    assert student.optimizer.param_groups[0]["lr"] == pytest.approx(preset.eval_lr * factor)

    record = evaluate.train_student(preset, images, labels, store, TensorDataset(images, labels), "small", EPOCHS,
                                    progress=False, protocol=run)
    assert record["protocol"] == name
    assert (record["lr"], record["temperature"], record["epochs"], record["batch_size"],
            record["grad_accumulation"]) == (preset.eval_lr, preset.temperature, EPOCHS, batch, accumulation)
    if name != "ours":
        assert record["optimizer"] == "adamw" and record["cosine_stretch"] == run.cosine_stretch
        assert record["loss_times_t_squared"] is False


def test_the_protocols_take_their_sources_settings():
    fadrm = protocol_preset("fadrm", get_preset("cifar100"), ipc=1)
    assert (fadrm.preset.eval_lr, fadrm.cosine_stretch, fadrm.preset.eval_epochs) == (5e-4, 2, 1000)
    assert protocol_preset("fadrm", get_preset("cifar100"), ipc=50).cosine_stretch == 1
    assert protocol_preset("fadrm", get_preset("tiny-imagenet"), ipc=1).preset.eval_epochs == 1000
    dd = protocol_preset("dd-ranking", get_preset("imagenet"), ipc=10)
    assert (dd.preset.eval_batch_size, dd.preset.relabel_batch_size, dd.teacher_mode) == (1024, 1024, "eval")
    assert protocol_preset("ours", FASHION_MNIST, ipc=10).preset is FASHION_MNIST
    with pytest.raises(UnknownProtocolError, match="choose one of ours, fadrm, dd-ranking"):
        protocol_preset("paper", FASHION_MNIST, ipc=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished Fashion-MNIST IPC 1 build on fake data (its soft labels: 2 epochs, by default 1 stored)."""
    data = make_fashion_mnist(tmp_path_factory.mktemp("data"), per_class=30, test_per_class=5)
    root = tmp_path_factory.mktemp("build")
    run_cli_ok(["fashion-mnist", "--ipc", "1", "--data-root", str(data), "--build-root", str(root),
                "--iterations", "2,2,2,2", "--device", "cpu", "--epochs", "2", "--no-evaluate"])
    return BuildDirectory(build_dir(root, "fashion-mnist", 1)), data


def store_bytes(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_protocol_needing_other_labels_relabels_into_its_own_store(built):
    build, data = built
    before = store_bytes(build.soft_labels)
    common = ["--epochs", "2", "--device", "cpu", "--data-root", str(data)]
    run_cli_ok(["evaluate", str(build.root), "--protocol", "dd-ranking", *common])
    assert store_bytes(build.soft_labels) == before
    own = json.loads((build.protocol_soft_labels("dd-ranking") / SOFT_LABEL_INDEX).read_text())
    assert (own["batch_size"], own["crop_scale"], own["teacher_mode"], own["epochs"]) == (100, [0.08, 1.0], "eval", 2)
    assert (own["train_epochs"], own["logit_dtype"]) == (2, "float16")  # a paper's protocol: every epoch stored
    assert SoftLabelStore.open(build.soft_labels).epochs == 1  # the build's own: the preset reuses them
    record = build.read_manifest()["evaluations"][-1]
    assert (record["protocol"], record["batch_size"], record["grad_accumulation"], record["temperature"],
            record["lr"], record["teacher_mode"]) == ("dd-ranking", 100, 1, 20.0, 1e-3, "eval")
    assert not any(rel.startswith(build.protocol_soft_labels("dd-ranking").name) for rel in build.read_manifest()["files"])

    run_cli_ok(["evaluate", str(build.root), *common])
    assert build.read_manifest()["evaluations"][-1]["protocol"] == "ours"
    assert not build.protocol_soft_labels("ours").exists() and store_bytes(build.soft_labels) == before


def test_an_unknown_protocol_gets_one_line_naming_the_known_ones(built, capsys):
    build, data = built
    code, err = run_cli(["evaluate", str(build.root), "--protocol", "paper", "--epochs", "1"], capsys)
    assert code != 0 and "Traceback" not in err
    assert "'paper' is not one of 'ours', 'fadrm', 'dd-ranking'" in err
