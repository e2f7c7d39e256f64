"""Shared set-up for the fault suite: fake Fashion-MNIST files and a tiny, untrained teacher, so a whole
build takes a second or two and every fault can be made on a real build directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fadrm_datasets import layout
from tests.fakedata import make_fashion_mnist
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
TEACHER = "convnet-bn-w8-d2"
FAST = ["--iterations", "2,2,2,2", "--device", "cpu", "--epochs", "2", "--no-evaluate"]


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> Path:
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist"), per_class=10, test_per_class=2)


def with_tiny_teacher(root: Path) -> Path:
    """``root`` as a build root whose cache holds the tiny, untrained teacher (so nothing is trained)."""
    from builders.models import build_model
    from builders.teachers import save_teacher

    save_teacher(layout.teachers_dir(root, "fashion-mnist") / layout.teacher_file(TEACHER),
                 build_model(TEACHER, 10, 1, 28), {"arch": TEACHER, "test_top1": "10.00"})
    return root


@pytest.fixture
def build_root(tmp_path) -> Path:
    return with_tiny_teacher(tmp_path / "build")


@pytest.fixture
def clean_build(build_root, fake_data, tmp_path) -> Path:
    """A finished build: what every faulted build must end up as, byte for byte."""
    build_dir = tmp_path / "clean"
    code, _ = run_cli(build_args(build_root, fake_data, build_dir))
    assert code == 0
    return build_dir


def dropout_student(name: str, *args, **kwargs):
    """A small ConvNet with dropout, for ``builders.evaluate.build_model``: a resumed run must also draw
    the same masks."""
    from torch import nn

    from builders.models import build_model

    return nn.Sequential(build_model(TEACHER, *args, **kwargs), nn.Dropout(0.5))


def build_args(root: Path, data: Path, build_dir: Path, *extra: str, ipc: int = 2) -> list[str]:
    return ["fashion-mnist", "--ipc", str(ipc), "--data-root", str(data), "--build-root", str(root),
            "--build-dir", str(build_dir), "--teacher", TEACHER, *FAST, *extra]


def _process_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def cli_process(args: list[str]) -> subprocess.Popen:
    """``fadrm-build ARGS`` started in a process of its own (for kills and concurrency)."""
    return subprocess.Popen([sys.executable, "-m", "builders.cli", *args], env=_process_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def cli_run(args: list[str]) -> subprocess.CompletedProcess:
    """``fadrm-build ARGS`` run to the end in a process of its own."""
    return subprocess.run([sys.executable, "-m", "builders.cli", *args], env=_process_env(), capture_output=True,
                          text=True)


def files_of(directory: Path, pattern: str = "*") -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob(pattern)) if p.is_file() and not p.name.startswith(".")}
