"""FKD relabel: shards, resumption, plan determinism, teacher modes, and the evaluate stage end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import builders.relabel as relabel
from fadrm_datasets import layout
from fadrm_datasets.layout import BuildDirectory
from builders.cli import cli
from builders.relabel import RelabelConfig, choose_epochs_per_shard, shard_ranges, store_bytes, teachers_in_mode
from builders.teachers import save_teacher
from fadrm_datasets.softlabels import SoftLabelStore
from tests.fakedata import make_fashion_mnist
from tests.helpers import tiny_teacher
from tests.test_softlabels import PRESET, tiny_set, write_store


def test_shards_are_few_and_a_deleted_one_is_rewritten_alone_with_the_same_bytes(tmp_path, monkeypatch):
    directory = tmp_path / "sl"
    store = write_store(directory, epochs=7, epochs_per_shard=3)
    files = sorted(p.name for p in directory.glob("*.safetensors"))
    assert files == [layout.shard_name(0, 2), layout.shard_name(3, 5),
                     layout.shard_name(6, 6)]
    assert store.epochs == 7 and len(store.shards) == 3
    before = {name: (directory / name).read_bytes() for name in files}
    mtimes = {name: (directory / name).stat().st_mtime_ns for name in files}
    built = []
    original = relabel.build_shard
    monkeypatch.setattr(relabel, "build_shard", lambda *a, **k: built.append(a[4:6]) or original(*a, **k))
    (directory / files[1]).unlink()
    write_store(directory, epochs=7, epochs_per_shard=3)
    assert built == [(3, 5)]
    for name in files:
        assert (directory / name).read_bytes() == before[name]
    assert all((directory / n).stat().st_mtime_ns == mtimes[n] for n in (files[0], files[2]))
    # A finished store is left alone entirely; other settings rewrite every shard.
    built.clear()
    write_store(directory, epochs=7, epochs_per_shard=3)
    assert built == []
    write_store(directory, epochs=7, epochs_per_shard=3, seed=1)
    assert len(built) == 3


def test_default_shard_size_keeps_the_file_count_small():
    fashion = RelabelConfig(epochs=300, batch_size=16, crop_scale=(0.5, 1.0))
    assert choose_epochs_per_shard(100, 10, fashion) == 100
    assert len(shard_ranges(300, choose_epochs_per_shard(100, 10, fashion))) == 3
    # ImageNet-1K at IPC 50 with top-100 labels: a few hundred MB to 1 GiB per shard.
    imagenet = RelabelConfig(epochs=300, batch_size=16, crop_scale=(0.08, 1.0), topk=100)
    per_shard = choose_epochs_per_shard(50_000, 1000, imagenet)
    assert 1 <= per_shard <= 100 and per_shard * store_bytes(50_000, 1000, imagenet) / 300 <= 1 << 30
    assert len(shard_ranges(300, per_shard)) <= 20
    assert shard_ranges(5, 2) == [(0, 1), (2, 3), (4, 4)]


def test_plan_depends_on_the_seed_not_on_the_shard_size(tmp_path):
    teacher = tiny_teacher(scale=2, shift=0.5)
    images, _ = tiny_set()
    a = write_store(tmp_path / "a", [teacher], images, epochs=5, epochs_per_shard=2)
    b = write_store(tmp_path / "b", [teacher], images, epochs=5, epochs_per_shard=5)
    c = write_store(tmp_path / "c", [teacher], images, epochs=5, epochs_per_shard=5, seed=3)
    assert len(a.shards) == 3 and len(b.shards) == 1
    for epoch in range(5):
        ea, eb = a.epoch(epoch), b.epoch(epoch)
        for name in ("order", "crop_boxes", "flips", "partners", "lams", "cutmix_boxes"):
            assert torch.equal(getattr(ea.plan, name), getattr(eb.plan, name)), name
        assert torch.equal(ea.logits, eb.logits)
        assert not torch.equal(ea.order, c.epoch(epoch).order)
    assert not torch.equal(a.epoch(0).order, a.epoch(1).order)  # epochs differ from each other


def test_store_layout_and_size(tmp_path):
    images = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    store = write_store(tmp_path / "sl", images=images, epochs=4, preset=PRESET.replace(relabel_batch_size=16))
    index = json.loads((tmp_path / "sl" / layout.SOFT_LABEL_INDEX).read_text())
    assert index["complete"] and index["layout"] == "dense" and index["num_samples"] == 100
    assert index["batch_size"] == 16 and index["num_batches"] == 7 and index["teacher_mode"] == "train"
    assert index["crop_scale"] == list(PRESET.relabel_crop_scale) and index["teachers"] == ["t0"]
    assert all(len(s["sha256"]) == 64 for s in index["shards"])
    total = sum((tmp_path / "sl" / s["file"]).stat().st_size for s in index["shards"])
    per_image_epoch = total / (100 * 4)
    config = RelabelConfig(epochs=4, batch_size=16, crop_scale=(0.5, 1.0))
    assert store_bytes(100, 10, config) / 400 <= per_image_epoch < 45  # 37.84 B of data + the header
    from safetensors import safe_open

    with safe_open(str(tmp_path / "sl" / index["shards"][0]["file"]), framework="pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes == {"order": "I32", "crop_boxes": "I16", "flips": "U8", "partners": "I32", "lams": "F32",
                      "cutmix_boxes": "I16", "logits": "F16"}
    assert store.epoch(3).logits.shape == (100, 10)


def test_teacher_mode_keeps_running_statistics_and_restores_flags():
    teacher = tiny_teacher(scale=2, shift=0.5)
    teacher.classifier.train()  # an odd flag, to see it restored
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(8, 1, 28, 28)
    with teachers_in_mode([teacher], "train"):
        bn = teacher.features[1]
        assert bn.training and not teacher.training and not teacher.classifier.training
        first = teacher(x)
        second = teacher(x)
        assert torch.equal(first, second)  # no drift from updated running stats
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert teacher.classifier.training and not teacher.features[1].training
    assert teacher.features[1].momentum == 0.1
    with pytest.raises(ValueError, match="teacher mode"):
        RelabelConfig(epochs=1, batch_size=4, crop_scale=(0.5, 1.0), teacher_mode="bogus")


def test_several_teachers_average_their_logits(tmp_path):
    teachers = [tiny_teacher(0, scale=2, shift=0.5), tiny_teacher(1, scale=2, shift=0.5)]
    images, _ = tiny_set()
    both = write_store(tmp_path / "both", teachers, images, epochs=1, teacher_mode="eval").epoch(0).logits
    one = write_store(tmp_path / "one", teachers[:1], images, epochs=1, teacher_mode="eval").epoch(0).logits
    two = write_store(tmp_path / "two", teachers[1:], images, epochs=1, teacher_mode="eval").epoch(0).logits
    assert torch.allclose(both, (one + two) / 2, atol=2e-2)


def test_build_relabel_evaluate_through_the_cli(tmp_path):
    data = make_fashion_mnist(tmp_path / "data", per_class=10, test_per_class=5)
    root = tmp_path / "build"
    teacher = tiny_teacher(scale=2, shift=0.5)
    save_teacher(layout.teachers_dir(root, "fashion-mnist") / layout.teacher_file("convnet-bn-w8-d2"), teacher,
                 {"arch": "convnet-bn-w8-d2", "test_top1": "12.34"})
    common = ["--build-root", str(root), "--data-root", str(data), "--device", "cpu",
              "--teacher", "convnet-bn-w8-d2"]
    runner = CliRunner()
    result = runner.invoke(cli, ["fashion-mnist", "--ipc", "2", "--method", "random-real", "--epochs", "2",
                                 "--evaluate", *common], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "test top-1 of the set:" in result.output and "at the last epoch" in result.output
    assert "teacher 12.34 %" in result.output
    build_dir = layout.build_dir(root, "fashion-mnist", 2, "random-real")
    manifest = BuildDirectory(build_dir).read_manifest()
    assert manifest["stages"]["relabel"]["epochs"] == 2 and manifest["stages"]["relabel"]["complete"]
    (record,) = manifest["evaluations"]
    assert 0 <= record["top1_best"] <= 100 and 0 <= record["top1_final"] <= record["top1_best"]
    assert record["epochs"] == 2 and record["student"] == "convnet-bn" and record["seed"] == 0
    assert {"top5", "seconds", "command"} <= set(record)
    assert any(name.startswith(layout.SOFT_LABELS + "/") for name in manifest["files"])
    store = SoftLabelStore.open(build_dir)
    assert (store.epochs, store.train_epochs) == (1, 2)  # the preset reuses each stored epoch: ceil(2 / 20)

    # The standalone commands: relabel again (nothing to redo), evaluate another student.
    result = runner.invoke(cli, ["relabel", "fashion-mnist", "--ipc", "2", "--method", "random-real",
                                 "--epochs", "2", *common], catch_exceptions=False)
    assert result.exit_code == 0 and "relabel complete: 2 epochs (1 stored, float16) in 1 shards" in result.output
    result = runner.invoke(cli, ["evaluate", str(build_dir), "--student", "convnet-bn-w8-d2", "--epochs", "1",
                                 "--device", "cpu", "--seed", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    evaluations = BuildDirectory(build_dir).read_manifest()["evaluations"]
    assert len(evaluations) == 2 and evaluations[1]["student"] == "convnet-bn-w8-d2"
    assert evaluations[1]["seed"] == 3 and evaluations[1]["command"].startswith("fadrm-build")
    # The run's checkpoint was written at its checks and removed once the record was kept.
    assert (build_dir / layout.CHECKPOINTS).is_dir() and not list((build_dir / layout.CHECKPOINTS).iterdir())
    assert not any(name.startswith(".") for name in BuildDirectory(build_dir).read_manifest()["files"])
    # More student epochs than stored soft-label epochs: a clear error, no traceback.
    result = runner.invoke(cli, ["evaluate", str(build_dir), "--epochs", "5", "--device", "cpu"])
    assert result.exit_code == 2 and "made for only 2" in result.output  # bad input: exit status 2
    # Building again without evaluating prints no accuracy: the recorded ones are not this run's.
    result = runner.invoke(cli, ["fashion-mnist", "--ipc", "2", "--method", "random-real", "--epochs", "2",
                                 "--no-evaluate", *common], catch_exceptions=False)
    assert result.exit_code == 0 and "built 20 images" in result.output and "test top-1" not in result.output


def test_hard_labels_replay_the_same_batches_with_mixed_one_hot_targets(tmp_path):
    from fadrm_datasets.softlabels import replay_loader

    images, labels = tiny_set()
    store = write_store(tmp_path, images=images)
    soft = list(replay_loader(images, labels, store, 0))
    hard = list(replay_loader(images, labels, store, 0, targets="hard"))
    record = store.epoch(0)
    for b, ((xs, _, ys), (xh, targets, yh)) in enumerate(zip(soft, hard)):
        assert torch.equal(xs, xh) and torch.equal(ys, yh)  # the same images and labels
        sl = record.plan.batch_slice(b)
        lam = float(record.plan.lams[b])
        partner_labels = ys[record.plan.partners[sl]]
        assert torch.allclose(targets.sum(1), torch.ones(len(ys)))
        rows = torch.arange(len(ys))
        expected = torch.zeros_like(targets)
        expected[rows, ys] += lam
        expected[rows, partner_labels] += 1 - lam
        assert torch.allclose(targets, expected)


def test_label_robust_score_follows_ddranking_formula():
    import math

    from builders.scores import label_robust_score

    # a = 0.5 * (90 - 88) / 100 - 0.5 * (92 - 70) / 100 = -0.1
    scores = label_robust_score(syn_soft=90.0, random_soft=88.0, syn_hard=70.0, full_hard=92.0)
    assert scores["ior"] == 2.0 and scores["hlr"] == 22.0
    assert scores["lrs"] == round((math.exp(-0.1) - math.exp(-1)) / (math.e - math.exp(-1)), 4)
    assert label_robust_score(100.0, 0.0, 100.0, 0.0)["lrs"] == 1.0  # a = 1: the best possible
    assert label_robust_score(0.0, 100.0, 0.0, 100.0)["lrs"] == 0.0  # a = -1: the worst
