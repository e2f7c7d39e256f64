"""``torchrun``: a build split over two CPU processes (gloo) writes the same files as one process, a killed
two-process evaluation resumes to the same numbers, and one process under torchrun joins a group of one (so a
single GPU reaches NCCL and DDP) without changing a number."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.run  # noqa: F401  torchrun itself: the test command installs torch, so a missing one fails

from builders import distributed
from fadrm_datasets import layout
from fadrm_datasets._io import read_safetensors_metadata
from tests.devices import DEVICES
from tests.fakedata import make_fashion_mnist
from tests.reliability.conftest import REPO, TEACHER, build_args, files_of, with_tiny_teacher


DROPOUT_CLI = ("-m", "tests.builders.dropout_cli")
CHECKS, KILL_AFTER = 6, 3  # six epochs, a check (and a checkpoint) after each


def _run(args: list[str], processes: int, entry: tuple[str, ...] = ("-m", "builders.cli"),
         torchrun: bool | None = None) -> subprocess.CompletedProcess:
    """``entry ARGS`` in ``processes`` processes, under torchrun when more than one (or when asked)."""
    torchrun = processes > 1 if torchrun is None else torchrun
    launcher = [sys.executable, *entry] if not torchrun else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *entry]
    # Same threads in every process: the files are byte-identical at the same torch, device and threads.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with subprocess.Popen([*launcher, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too: they would outlive it
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_two_processes_write_the_same_files_as_one(tmp_path):
    data = make_fashion_mnist(tmp_path / "data", per_class=10, test_per_class=2)
    root = with_tiny_teacher(tmp_path / "build")
    for processes in (1, 2):
        build_dir = tmp_path / f"p{processes}"
        built = _run(build_args(root, data, build_dir, ipc=3), processes)
        assert built.returncode == 0, built.stderr[-3000:]
        relabel = ["relabel", "fashion-mnist", "--ipc", "3", "--epochs", "6", "--epochs-per-shard", "2",
                   "--label-cycle", "6", "--data-root", str(data), "--build-root", str(root), "--build-dir", str(build_dir),
                   "--teacher", TEACHER, "--device", "cpu"]
        relabelled = _run(relabel, processes)  # 3 shards: ranks 0, 1, 0
        assert relabelled.returncode == 0, relabelled.stderr[-3000:]
        evaluated = _run(["evaluate", str(build_dir), "--epochs", "3", "--device", "cpu", "--data-root", str(data)],
                         processes)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert evaluated.stdout.count("top-1") == 1  # one result line, from rank 0
    # A rerun that changes the soft labels: rank 0 rewrites the manifest while the others wait for it.
    rebuilt = _run(build_args(root, data, tmp_path / "p2", "--epochs", "4", "--evaluate", ipc=3), 2)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert json.loads((tmp_path / "p2" / layout.SOFT_LABELS / layout.SOFT_LABEL_INDEX).read_text())["train_epochs"] == 4
    rebuilt = _run(build_args(root, data, tmp_path / "p1", "--epochs", "4", "--evaluate", ipc=3), 1)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    one, two = tmp_path / "p1", tmp_path / "p2"
    for part in ("images", "soft_labels"):
        assert files_of(one / part) == files_of(two / part), part
    assert (one / layout.PATCHES).read_bytes() == (two / layout.PATCHES).read_bytes()
    manifest = json.loads((two / layout.MANIFEST).read_text())
    assert manifest["stages"]["recover"]["complete"] and len(manifest["stages"]["recover"]["units"]) == 3
    assert json.loads((two / layout.SOFT_LABELS / layout.SOFT_LABEL_INDEX).read_text())["complete"]
    first, second = manifest["evaluations"]  # the evaluate command's, then the rebuild's
    assert first["processes"] == second["processes"] == 2 and 0 <= second["top1_final"] <= 100
    assert json.loads((one / layout.MANIFEST).read_text())["evaluations"][0]["processes"] == 1


def test_a_killed_two_process_evaluation_resumes_to_the_same_numbers(tmp_path):
    """Both ranks keep their state: rank 1 trains on its own batches with its own optimizer moments, schedule
    and dropout masks (the student drops out), so any of them left unrestored changes the numbers."""
    data = make_fashion_mnist(tmp_path / "data", per_class=10, test_per_class=2)
    root = with_tiny_teacher(tmp_path / "build")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    built = _run(build_args(root, data, whole, "--epochs", str(CHECKS), ipc=3), 1)
    assert built.returncode == 0, built.stderr[-3000:]
    shutil.copytree(whole, killed)

    def evaluate(build_dir: Path, die_after: int) -> subprocess.CompletedProcess:
        args = ["evaluate", str(build_dir), "--epochs", str(CHECKS), "--device", "cpu", "--data-root", str(data)]
        return _run([str(die_after), *args], 2, entry=DROPOUT_CLI)

    uninterrupted = evaluate(whole, die_after=0)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    # Rank 0 dies after its third checkpoint; rank 1 then fails on its next all-reduce or is stopped by torchrun.
    died = evaluate(killed, die_after=KILL_AFTER)
    assert died.returncode != 0
    (left,) = (killed / layout.CHECKPOINTS).iterdir()
    assert read_safetensors_metadata(left)["epoch"] == KILL_AFTER, died.stderr[-3000:]
    resumed = evaluate(killed, die_after=0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (expected,) = json.loads((whole / layout.MANIFEST).read_text())["evaluations"]
    (got,) = json.loads((killed / layout.MANIFEST).read_text())["evaluations"]
    assert got["resumed_at_epoch"] == KILL_AFTER and got["processes"] == 2
    differ = {"resumed_at_epoch", "seconds", "time", "command"}  # when and how it ran, not what it measured
    assert {k: v for k, v in got.items() if k not in differ} == {k: v for k, v in expected.items() if k not in differ}
    assert not list((killed / layout.CHECKPOINTS).iterdir())


def test_the_backend_and_the_gpu_follow_the_device(monkeypatch):
    assert [distributed.backend(torch.device(d)) for d in ("cpu", "cuda", "cuda:1")] == ["gloo", "nccl", "nccl"]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda")  # not under torchrun
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "one-process")
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 1)  # the rank's GPU
    assert distributed.local_device(torch.device("cuda:0")) == torch.device("cuda", 0)  # asked for: kept
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_one_process_under_torchrun_joins_a_group_of_one(device, monkeypatch):
    """What torchrun --nproc-per-node 1 sets: the process joins a group of one with the device's backend."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"TORCHELASTIC_RUN_ID": "one-process", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    device = distributed.local_device(torch.device(device))
    with distributed.process_group(device):
        assert distributed.joined() and dist.get_backend() == distributed.backend(device)
        distributed.barrier()
        assert distributed.gather({"rank": 0}) == [{"rank": 0}]
    assert not distributed.joined()


def test_one_process_under_torchrun_measures_what_one_process_alone_does(tmp_path):
    """Under torchrun a single process trains its student through DDP over a group of one: the same numbers."""
    data = make_fashion_mnist(tmp_path / "data", per_class=10, test_per_class=2)
    root = with_tiny_teacher(tmp_path / "build")
    build_dir = tmp_path / "b"
    built = _run(build_args(root, data, build_dir, ipc=1), 1)
    assert built.returncode == 0, built.stderr[-3000:]
    evaluate = ["evaluate", str(build_dir), "--epochs", "2", "--device", "cpu", "--data-root", str(data)]
    for torchrun in (False, True):
        evaluated = _run(evaluate, 1, torchrun=torchrun)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert ("rank 0 of 1 joined the process group (gloo)" in evaluated.stderr) is torchrun
    alone, under = json.loads((build_dir / layout.MANIFEST).read_text())["evaluations"]
    differ = {"seconds", "time", "command"}
    assert {k: v for k, v in under.items() if k not in differ} == {k: v for k, v in alone.items() if k not in differ}
