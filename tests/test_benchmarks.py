"""The accuracy benchmark's bookkeeping on a tiny fake Fashion-MNIST (the real runs are long)."""

from __future__ import annotations

import json
import logging

import torch

from benchmarks import accuracy
from builders.models import build_model
from builders.teachers import save_teacher
from tests.fakedata import make_fashion_mnist


def test_accuracy_table_resumes_from_finished_evaluations(tmp_path, capsys, caplog):
    data = make_fashion_mnist(tmp_path / "data", per_class=10, test_per_class=2)
    root = tmp_path / "build"
    torch.manual_seed(0)
    save_teacher(root / "fashion-mnist" / "teachers" / "convnet-bn.safetensors", build_model("convnet-bn", 10, 1, 28),
                 {"arch": "convnet-bn", "test_top1": "10.0"})
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
