"""What several test modules use: fadrm-build run in this process, a tiny teacher, a set's pixels, a
store's shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fadrm_datasets import layout


def run_cli(args: list[str], capsys=None) -> tuple[int, str]:
    """``fadrm-build ARGS`` in this process: (exit status, stderr, read from ``capsys`` when given)."""
    from builders.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = done.code or 0
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


def run_cli_ok(args: list[str]) -> None:
    """``fadrm-build ARGS`` in this process, which must succeed."""
    code, _ = run_cli(args)
    assert code == 0, f"fadrm-build {' '.join(args)} exited with {code}"


def tiny_teacher(seed: int = 0, scale: float = 1.0, shift: float = 0.0) -> nn.Module:
    """An untrained Fashion-MNIST ConvNet, frozen in eval mode, with non-trivial BatchNorm running
    statistics as a trained teacher has: those of three batches of noise, ``randn * scale + shift``."""
    from builders.models import build_model

    torch.manual_seed(seed)
    model = build_model("convnet-bn-w8-d2", 10, in_channels=1, image_size=28)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28) * scale + shift)
    return model.eval().requires_grad_(False)


def pixels(dataset) -> list[np.ndarray]:
    """A set's images as arrays, in its order."""
    return [np.asarray(dataset[i][0]) for i in range(len(dataset))]


def shard_files(store: Path) -> list[Path]:
    """The soft-label shards in a store's folder, by name."""
    return sorted(path for path in Path(store).iterdir() if layout.is_shard_name(path.name))
