"""The accuracy benchmark's bookkeeping and tables, on a tiny fake Fashion-MNIST and hand-made records; recover's
FLOP counts against counts by hand."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from benchmarks import accuracy, flops, recover_speed, tables
from fadrm_datasets import layout
from builders.models import build_model
from builders.presets import get_preset
from builders.recover import RecoverConfig
from builders.teachers import save_teacher
from tests.fakedata import make_fashion_mnist


def test_accuracy_table_resumes_from_finished_evaluations(tmp_path, capsys, caplog):
    data = make_fashion_mnist(tmp_path / "data", per_class=10, test_per_class=2)
    root = tmp_path / "build"
    torch.manual_seed(0)
    save_teacher(layout.teachers_dir(root, "fashion-mnist") / layout.teacher_file("convnet-bn"),
                 build_model("convnet-bn", 10, 1, 28), {"arch": "convnet-bn", "test_top1": "10.0"})
    output = tmp_path / "accuracy.json"
    argv = ["--ipc", "1", "--methods", "random-real", "--seeds", "0,1", "--epochs", "2", "--build-root", str(root),
            "--data-root", str(data), "--device", "cpu", "--output", str(output)]

    accuracy.main(argv)
    first = capsys.readouterr().out
    assert first.count("$ fadrm-build evaluate") == 2 and "reusing" not in first
    accuracy.main(argv)  # same protocol: both students are reused, not trained again
    second = capsys.readouterr().out
    assert "$ fadrm-build evaluate" not in second and second.count("reusing the evaluation") == 2
    with caplog.at_level(logging.INFO, logger="builders.evaluate"):
        accuracy.main([*argv, "--seeds", "1", "--split", "val"])  # another split is another protocol
    assert capsys.readouterr().out.count("$ fadrm-build evaluate") == 1
    assert "val top-1" in caplog.text and "test top-1" not in caplog.text  # the log names the split measured
    accuracy.main([*argv, "--fresh"])
    assert capsys.readouterr().out.count("$ fadrm-build evaluate") == 2

    records = json.loads(output.read_text())
    assert [r["split"] for r in records] == ["test", "test", "val", "test"]
    assert records[0]["top1_final_per_seed"] == records[1]["top1_final_per_seed"] == records[3]["top1_final_per_seed"]
    assert records[0]["student"] == "convnet-bn" and "top1_best_mean" in records[0]
    assert records[0]["seeds"] == [0, 1] and records[0]["epochs"] == 2 and records[0]["lr"] == 3e-3
    assert records[0]["teachers"] == {"convnet-bn": {"epochs": None, "test_top1": "10.0"}}


def _record(ipc, method, student="convnet-bn", lr=0.003, per_seed=(80.0, 82.0), split="test"):
    mean = sum(per_seed) / len(per_seed)
    std = (sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1)) ** 0.5
    return {"dataset": "fashion-mnist", "ipc": ipc, "method": method, "student": student, "lr": lr, "split": split,
            "labels": "soft", "seeds": list(range(len(per_seed))), "top1_final_per_seed": list(per_seed),
            "top1_final_mean": round(mean, 2), "top1_final_std": round(std, 2)}


def test_tables_print_the_newest_record_per_student_and_plot_both_panels(tmp_path, capsys):
    records = [_record(10, m) for m in ("random-real", "sre2l", "fadrm")]
    records += [_record(10, m, student="tiny", lr=0.001, per_seed=(50.0, 52.0)) for m in ("random-real", "sre2l", "fadrm")]
    # a rerun of every method at a newly chosen lr supersedes the first rows
    records += [_record(10, m, student="tiny", lr=0.006, per_seed=(60.0, 64.0)) for m in ("random-real", "sre2l", "fadrm")]
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(records))
    tables.main(["--records", str(path), "--plot", str(tmp_path / "accuracy.png")])
    out = capsys.readouterr().out
    assert "| tiny | 0.006 | 62.00 ± 2.83 (n=2) | 62.00 ± 2.83 (n=2) | 62.00 ± 2.83 (n=2) |" in out
    assert "50.00" not in out and "51.00" not in out
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_keep_each_protocol_apart_and_rank_the_methods_under_each(tmp_path, capsys):
    records = [_record(10, "fadrm", per_seed=(90.0, 90.0)), _record(10, "random-real", per_seed=(88.0, 88.0))]
    # Under DD-Ranking's protocol the order turns; its records must not replace ours in the main table.
    records += [{**_record(10, "fadrm", per_seed=(70.0, 72.0)), "protocol": "dd-ranking"},
                {**_record(10, "random-real", per_seed=(75.0, 75.0)), "protocol": "dd-ranking"}]
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(records))
    tables.main(["--records", str(path)])
    out = capsys.readouterr().out
    assert "| 10 | 88.00 ± 0.00 (n=2) | not run | 90.00 ± 0.00 (n=2) | not run | not run |" in out
    assert "| fadrm | 90.00 ± 0.00 (n=2), #1 | not run | 71.00 ± 1.41 (n=2), #2 |" in out
    assert "| random-real | 88.00 ± 0.00 (n=2), #2 | not run | 75.00 ± 0.00 (n=2), #1 |" in out


def test_tables_refuse_a_student_row_mixing_lrs(tmp_path):
    records = [_record(10, "fadrm", student="tiny", lr=0.006), _record(10, "random-real", student="tiny", lr=0.003)]
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(records))
    with pytest.raises(SystemExit, match="tiny: the methods were evaluated at different lrs"):
        tables.main(["--records", str(path)])


def test_amp_check_runs_on_the_cpu(tmp_path):
    """AMP's comparison with fp32 on a tiny unit: the CPU runs the CUDA check's code (``--device``)."""
    from benchmarks import amp_check

    output = tmp_path / "amp_check.json"
    amp_check.main(["--preset", "fashion-mnist", "--teacher", "convnet-bn-w8-d2", "--batch", "5", "--iterations", "8",
                    "--device", "cpu", "--output", str(output)])
    (record,) = json.loads(output.read_text())
    assert record["device"].startswith("cpu (") and record["iterations"] == 8
    assert record["losses_finite"] == {"fp32": True, "amp": True}
    assert (record["amp_loss_scale"], record["amp_skipped_steps"]) == (2.0 ** 16, 0)
    assert record["pixel_p99_abs_diff"] <= 1


CPU = torch.device("cpu")


def _probe(width: int) -> nn.Module:
    """One convolution and one linear layer, the two kinds the counter charges, and the BatchNorm
    layer recover needs between them."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(width * 16, 10)).eval()


def _probe_forward(width: int, batch: int, resolution: int) -> int:
    """2 * N * Cout * Cin * k * k * H * W for the convolution, 2 * N * in * out for the linear layer."""
    return 2 * batch * width * 1 * 3 * 3 * resolution**2 + 2 * batch * (width * 16) * 10


@pytest.mark.parametrize("batch", [1, 3])
def test_a_recover_iteration_counts_the_forward_and_the_input_gradient_but_no_weight_gradient(batch):
    preset = get_preset("fashion-mnist")
    labels, patches = flops.unit_inputs(preset, batch)
    teacher = _probe(4).requires_grad_(False)  # as recover's teachers are

    def count() -> int:
        return flops.iteration_flops(teacher, labels, patches, preset, RecoverConfig.from_preset(preset), 24, CPU)

    forward = _probe_forward(4, batch, 24)
    assert count() == 2 * forward  # the input gradient of each layer costs what its forward does
    teacher.requires_grad_(True)  # a trainable teacher: its weight gradients run, and are charged
    assert count() == 3 * forward


def test_a_schedule_takes_the_teachers_round_robin_across_stages():
    preset = get_preset("fashion-mnist")
    labels, patches = flops.unit_inputs(preset, 2)
    config = RecoverConfig.from_preset(preset)
    config = dataclasses.replace(config, stages=((24, 3), (28, 3)))
    teachers = [_probe(4).requires_grad_(False), _probe(8).requires_grad_(False)]

    def step(width, resolution):
        return 2 * _probe_forward(width, 2, resolution)

    # steps 0-2 at 24 px: teachers 0, 1, 0; steps 3-5 at 28 px: 1, 0, 1 (the count goes on across stages)
    expected = 2 * step(4, 24) + step(8, 24) + step(4, 28) + 2 * step(8, 28)
    assert flops.schedule_flops(teachers, labels, patches, preset, config, CPU) == expected


def _convnet_bn_forward(resolution: int) -> int:
    """Per image: three 3x3 convolutions (1 -> 64, 64 -> 64 at half, 64 -> 64 at a quarter of the
    resolution), then the linear layer on a 64 x 3 x 3 map."""
    macs = 64 * 9 * resolution**2 + 64 * 64 * 9 * ((resolution // 2) ** 2 + (resolution // 4) ** 2) + 64 * 9 * 10
    return 2 * macs


def test_recover_speed_counts_each_variants_own_schedule():
    args = argparse.Namespace(preset="fashion-mnist", teacher="convnet-bn", iterations=8, batch=2, device="cpu")
    counted, precision = recover_speed.count_variants(args, ["baseline", "fadrm"])
    # baseline: 8 iterations at 28 px; FADRM: 2 per stage at 24, 28, 24, 28 px
    assert counted["baseline"] == 8 * 2 * _convnet_bn_forward(28)
    assert counted["fadrm"] == 4 * 2 * _convnet_bn_forward(24) + 4 * 2 * _convnet_bn_forward(28)
    assert precision == {"baseline": torch.float32, "fadrm": torch.float32}  # no AMP on the CPU


def test_recover_speed_reports_the_childs_own_memory_not_its_parents():
    held = torch.ones(2**28)  # 1 GiB resident here, far more than the child's unit needs
    child = [sys.executable, recover_speed.__file__, "--preset", "fashion-mnist", "--iterations", "4", "--batch", "2",
             "--child", "baseline"]
    out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
    assert 0 < json.loads(out.strip().splitlines()[-1])["peak_bytes"] < 256 * 2**20
    del held


def test_same_bytes_compare_finds_a_flipped_image_byte_a_changed_record_and_a_missing_build(tmp_path, capsys):
    from benchmarks.same_bytes_compare import METHODS, compare
    from tests.fakebuild import make_build

    for root in ("before", "after"):
        for method in METHODS:
            build = make_build(layout.build_dir(tmp_path / root, "fashion-mnist", 10, method), soft_labels=True)
            layout.BuildDirectory(build).update_manifest(evaluations=[{"top1_final": 50.0, "seconds": float(len(root))}])
        (layout.teachers_dir(tmp_path / root, "fashion-mnist")).mkdir(parents=True)
    before, after = tmp_path / "before", tmp_path / "after"
    assert compare(before, after)  # the times differ, and are left out
    image = layout.build_dir(after, "fashion-mnist", 10, "sre2l") / layout.image_relpath(1, 2)
    data = bytearray(image.read_bytes())
    data[-20] ^= 1
    image.write_bytes(bytes(data))
    assert not compare(before, after) and f"{layout.build_dir_name(10, 'sre2l')}: 1 differing" in capsys.readouterr().out
    image.write_bytes(bytes(data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]))
    assert compare(before, after)
    layout.BuildDirectory(layout.build_dir(after, "fashion-mnist", 10, "fadrm")).update_manifest(
        evaluations=[{"top1_final": 50.5, "seconds": 1.0}])
    assert not compare(before, after)
    shutil.rmtree(layout.build_dir(after, "fashion-mnist", 10, "fadrm"))
    assert not compare(before, after) and f"{layout.build_dir_name(10)}: MISSING from after" in capsys.readouterr().out
