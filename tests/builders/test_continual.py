"""``fadrm-build continual`` on tiny fake Fashion-MNIST builds: records, labels per step, the carried head, errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from builders import continual
from builders.cli import main
from builders.models import build_model
from builders.presets import get_preset
from fadrm_datasets import layout
from fadrm_datasets._io import sha256_file
from fadrm_datasets.continual import ClassIncrementalScenario
from fadrm_datasets.layout import BuildDirectory
from tests.fakebuild import make_build
from tests.fakedata import make_fashion_mnist
from tests.helpers import run_cli_ok

FASHION_MNIST = get_preset("fashion-mnist")
STUDENT = "convnet-bn-w8-d1"  # tiny: the whole run takes seconds
METHODS = ("fadrm", "random-real")


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    """Fake Fashion-MNIST files and two fake IPC 2 builds (fadrm, random-real) sharing a random teacher."""
    root = tmp_path_factory.mktemp("continual")
    data = make_fashion_mnist(root / "data", per_class=6, test_per_class=3)
    teacher = layout.teachers_dir(root, "fashion-mnist") / layout.teacher_file(STUDENT)
    teacher.parent.mkdir(parents=True)
    torch.manual_seed(0)
    save_file(build_model(STUDENT, 10, 1, 28).state_dict(), str(teacher))
    for seed, method in enumerate(METHODS):
        path = layout.build_dir(root, "fashion-mnist", 2, method)
        make_build(path, seed=seed, ipc=2, num_classes=10, size=28, channels=1, teacher=False, classes=None)
        BuildDirectory(path).update_manifest(
            dataset="fashion-mnist", method=method, preset=FASHION_MNIST.replace(student=STUDENT).to_dict(),
            options={"data_root": str(data)}, teachers_dir=str(teacher.parent),
            teachers={STUDENT: {"source": "trained", "file": teacher.name, "sha256": sha256_file(teacher)}})
    return root


def test_runner_writes_records_a_table_and_a_plot(build_root, tmp_path, capsys):
    output = tmp_path / "results" / "continual.json"
    args = ["continual", "--dataset", "fashion-mnist", "--ipc", "2", "--methods", ",".join(METHODS),
            "--build-root", str(build_root), "--steps", "5", "--orders", "0,3", "--epochs", "2", "--device", "cpu",
            "--output", str(output)]
    run_cli_ok([*args, "--modes", "fresh,carried"])
    out = capsys.readouterr().out
    records = json.loads(output.read_text())
    assert [(r["method"], r["mode"]) for r in records] == [(m, mode) for m in METHODS for mode in ("fresh", "carried")]
    for record in records:
        assert record["dataset"] == "fashion-mnist" and record["ipc"] == 2 and record["steps"] == 5
        assert record["orders"] == [0, 3] and record["classes_seen"] == [2, 4, 6, 8, 10]
        assert record["split"] == "test" and record["epochs"] == 2 and record["command"].startswith("fadrm-build")
        assert [o["class_order"] for o in record["per_order"]] == [
            list(ClassIncrementalScenario.from_seed(10, 5, s).order) for s in (0, 3)]
        per_step = [o["per_step"] for o in record["per_order"]]
        assert all(len(p) == 5 and all(0 <= a <= 100 for a in p) for p in per_step)
        assert record["per_step_mean"] == [round(statistics.fmean(s), 2) for s in zip(*per_step)]
        averages = [round(statistics.fmean(p), 2) for p in per_step]
        assert [o["average"] for o in record["per_order"]] == averages
        assert record["average_mean"] == round(statistics.fmean(averages), 2)
        assert record["average_std"] == round(statistics.stdev(averages), 2)
        assert f"{record['average_mean']:.2f} ± {record['average_std']:.2f}" in out
    assert "2 classes" in out and "10 classes" in out and "average" in out
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same run again, one method only: its record is replaced in place of being added twice.
    run_cli_ok([*args[:6], "fadrm", *args[7:], "--plot", str(tmp_path / "fadrm.png")])
    again = json.loads(output.read_text())
    assert len(again) == 4 and (tmp_path / "fadrm.png").is_file()
    fresh = [r for r in again if (r["method"], r["mode"]) == ("fadrm", "fresh")]
    assert len(fresh) == 1 and fresh[0]["per_order"] == records[0]["per_order"]  # seeded: the same numbers


class FixedTeacher(nn.Module):
    """A teacher that gives every image the same logits: large on the classes a step has not seen."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


@pytest.mark.parametrize("mode", ["fresh", "carried"])
def test_the_labels_each_step_trains_on_cover_only_its_seen_classes(build_root, mode, monkeypatch):
    dataset = continual.open_set(layout.build_dir(build_root, "fashion-mnist", 2), torch.device("cpu"))
    dataset.teachers = [FixedTeacher(torch.arange(10, dtype=torch.float32) * 10)]
    scenario = ClassIncrementalScenario.from_seed(10, 5, seed=1)
    calls = []

    def spy(student_logits, target_logits, temperature):
        calls.append((student_logits.shape[1], target_logits.detach().clone(), temperature))
        return student_logits.sum() * 0  # no learning needed: the targets are what is checked

    monkeypatch.setattr(continual, "kd_loss", spy)
    from builders.sources import load_split

    test_set = load_split(dataset.preset, dataset.data_root, "test")
    settings = continual.ContinualSettings(steps=5, orders=(1,), modes=(mode,), epochs=1)
    continual.run_order(dataset, test_set, scenario, 1, mode, settings, torch.device("cpu"))
    batches_per_step = [-(-2 * scenario.seen_count(s) // dataset.preset.eval_batch_size) for s in range(5)]
    teacher_calls = [c for c in calls if c[2] == dataset.preset.temperature]
    assert len(teacher_calls) == sum(batches_per_step)
    first = 0
    for step, batches in enumerate(batches_per_step):
        seen = list(scenario.seen_classes(step))
        for outputs, targets, _ in teacher_calls[first:first + batches]:
            assert outputs == targets.shape[1] == len(seen)  # one output and one target per seen class
            assert torch.equal(targets, torch.arange(10.0)[seen].expand_as(targets) * 10)  # in order, unseen dropped
        first += batches
    previous_calls = [c for c in calls if c[2] == settings.previous_temperature]
    if mode == "fresh":
        assert not previous_calls
    else:  # distillation from the previous model, over the old classes only
        assert [c[1].shape[1] for c in previous_calls] == [
            scenario.seen_count(s - 1) for s in range(1, 5) for _ in range(batches_per_step[s])]


def test_a_grown_head_keeps_the_old_outputs():
    torch.manual_seed(0)
    model = build_model(STUDENT, 4, 1, 28).eval()
    x = torch.randn(3, 1, 28, 28)
    before = model(x)
    grown = continual.grow_head(model, 6).eval()
    after = grown(x)
    assert after.shape == (3, 6) and torch.allclose(after[:, :4], before, atol=1e-6)


BUILD = str(layout.build_dir("{root}", "fashion-mnist", 2))  # formatted with the test's build root


@pytest.mark.parametrize("args,message", [
    ([], "give build directories, or --dataset, --ipc, --methods"),
    ([BUILD, "--dataset", "fashion-mnist"], "not both"),
    (["--dataset", "fashion-mnist", "--ipc", "2", "--methods", "fadrm,nope"],
     "nope given; choose among fadrm, fadrm+, sre2l, random-real"),
    (["--dataset", "cifar1000", "--ipc", "2", "--methods", "fadrm"], "unknown dataset 'cifar1000'"),
    (["--dataset", "fashion-mnist", "--ipc", "2", "--methods", "sre2l"], "is not a build directory"),
    ([BUILD, "--steps", "3"], "10 classes do not split into 3 equal steps"),
    ([BUILD, "--orders", "0,x"], "give integers separated by commas"),
    ([BUILD, "--epochs", "0"], "must be a positive integer"),
    ([BUILD, BUILD], "two builds of method fadrm"),
    ([BUILD, "--output", f"{BUILD}/{layout.MANIFEST}"],
     "holds no list of continual records"),
])
def test_bad_input_gets_one_clear_line(build_root, args, message, capsys):
    args = [a.format(root=build_root) for a in args]
    quick = ["--build-root", str(build_root), "--epochs", "1", "--orders", "0", "--steps", "1"]
    with pytest.raises(SystemExit) as exit_:
        main(["continual", *quick, *args])  # the case's own options come last, and win
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("fadrm-build: error:")
    assert message in err


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["continual", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: fadrm-build continual [OPTIONS] [BUILD_DIR]...")
    for option in ("--steps", "--orders", "--modes", "--methods", "--build-root", "--device", "--epochs", "--split",
                   "--output", "--plot"):
        assert option in out
