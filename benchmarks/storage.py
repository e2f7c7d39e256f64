"""Soft-label storage: our sharded safetensors store against the reference layout.

The reference FKD code saves one pickled file per batch per epoch holding the crop coordinates,
flip bits, CutMix partner / lam / box and the dense fp16 soft labels of that batch. This script
writes both layouts for the same images, plan and teacher, in the same run, and reports files,
bytes, bytes per image-epoch and the on-disk footprint (whole filesystem blocks).

    python benchmarks/storage.py                     # Fashion-MNIST IPC 10, 300 epochs
    python benchmarks/storage.py --ipc 50 --epochs 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from builders.models import build_model  # noqa: E402
from builders.presets import get_preset  # noqa: E402
from builders.relabel import RelabelConfig, epoch_plan, relabel_epoch, store_bytes, write_soft_labels  # noqa: E402


def footprint(directory: Path) -> tuple[int, int, int]:
    """(files, apparent bytes, bytes on disk) under ``directory``."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    apparent = sum(p.stat().st_size for p in files)
    on_disk = sum(os.stat(p).st_blocks * 512 for p in files)
    return len(files), apparent, on_disk


def write_reference_layout(teacher, images, preset, config: RelabelConfig, out: Path) -> None:
    """One ``torch.save`` file per (epoch, batch), as the reference relabel code writes them."""
    for epoch in range(config.epochs):
        plan = epoch_plan(images.shape[0], preset.image_size, config, epoch)
        logits = relabel_epoch([teacher], images, plan, preset, config.teacher_mode, "cpu")
        folder = out / f"epoch_{epoch}"
        folder.mkdir(parents=True)
        for b in range(plan.num_batches):
            sl = plan.batch_slice(b)  # plan and logits are stored by position in the epoch's order
            record = [
                plan.crop_boxes[sl].float() / preset.image_size,  # normalised coords
                plan.flips[sl].bool(),
                plan.order[sl].long(),  # sample index
                plan.partners[sl].long(),  # mix index
                plan.lams[b].reshape(1),
                plan.cutmix_boxes[b].long(),
                logits[sl].half(),  # dense fp16 soft labels
            ]
            torch.save(record, folder / f"batch_{b}.tar")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "storage.json"))
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    preset = get_preset(args.dataset)
    n = args.ipc * preset.num_classes
    images = torch.randint(0, 256, (n, preset.channels, preset.image_size, preset.image_size), dtype=torch.uint8)
    teacher = build_model("convnet-bn-w8-d2", preset.num_classes, preset.channels, preset.image_size).eval()
    config = RelabelConfig.from_preset(preset, epochs=args.epochs).every_epoch()  # against the reference's every epoch
    results = {"dataset": args.dataset, "ipc": args.ipc, "images": n, "epochs": args.epochs,
               "batch_size": config.batch_size, "num_classes": preset.num_classes, "layouts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in (
            ("fadrm-datasets (safetensors shards)",
             lambda out: write_soft_labels([teacher], ["bench"], images, preset, out, config, progress=False)),
            ("reference (one pickle per batch per epoch)",
             lambda out: write_reference_layout(teacher, images, preset, config, out)),
        ):
            out = Path(tmp) / name.split()[0]
            start = time.perf_counter()
            write(out)
            seconds = time.perf_counter() - start
            files, apparent, on_disk = footprint(out)
            results["layouts"][name] = {
                "files": files, "bytes": apparent, "bytes_on_disk": on_disk,
                "bytes_per_image_epoch": round(apparent / (n * args.epochs), 2),
                "disk_bytes_per_image_epoch": round(on_disk / (n * args.epochs), 2),
                "write_seconds": round(seconds, 2),
            }
    # The same arithmetic at ImageNet-1K scale (computed from the layout, not written).
    imagenet = RelabelConfig(epochs=300, batch_size=16, crop_scale=(0.08, 1.0))
    results["imagenet_ipc50_300_epochs_computed_bytes"] = {
        "dense_fp16": store_bytes(50_000, 1000, imagenet),
        "top100": store_bytes(50_000, 1000, dataclasses.replace(imagenet, topk=100)),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
