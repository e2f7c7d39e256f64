"""Choosing the student protocol (epochs, lr, temperature, teacher mode) on the validation split.

Takes the images of an existing build directory, relabels them with the cached teachers under the
given settings into a temporary store, trains the student and measures it on the held-out
validation split (``--split val``, never the test split). The build directory is not modified.
One record per run is appended to ``--output``.

    python benchmarks/protocol_search.py build/benchmarks/fashion-mnist/ipc10-fadrm-seed0 --epochs 300 --lr 1e-3 --T 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import append_record  # noqa: E402
from fadrm_datasets.layout import BuildDirectory, teachers_dir  # noqa: E402
from builders.evaluate import train_student  # noqa: E402
from builders.presets import get_preset  # noqa: E402
from builders.relabel import RelabelConfig, write_soft_labels  # noqa: E402
from builders.sources import load_split  # noqa: E402
from builders.teachers import load_teacher, teacher_path  # noqa: E402
from fadrm_datasets.softlabels import SoftLabelStore  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", help="a build directory whose images/ are relabelled")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--teachers", default="convnet-bn", help="comma-separated cached teacher names")
    parser.add_argument("--teachers-dir", default=str(teachers_dir("build/benchmarks", "fashion-mnist")))
    parser.add_argument("--mode", choices=("train", "eval"), default="train", help="teacher mode when relabelling")
    parser.add_argument("--T", type=float, default=None, help="KD temperature [preset's]")
    parser.add_argument("--epochs", type=int, default=None, help="soft-label and student epochs [preset's]")
    parser.add_argument("--lr", type=float, default=None, help="student AdamW learning rate [preset's]")
    parser.add_argument("--crop", default=None, help="relabel RandomResizedCrop scale MIN,MAX [preset's]")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student", default="convnet-bn")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--label", default="")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "protocol_search.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # two searches side by side on a 2-core machine

    preset = get_preset(args.dataset)
    preset = preset.replace(
        temperature=args.T or preset.temperature, eval_lr=args.lr or preset.eval_lr,
        relabel_epochs=args.epochs or preset.relabel_epochs, eval_epochs=args.epochs or preset.eval_epochs,
        relabel_crop_scale=tuple(float(v) for v in args.crop.split(",")) if args.crop else preset.relabel_crop_scale)
    names = args.teachers.split(",")
    ipc = BuildDirectory(Path(args.build)).read_manifest()["ipc"]  # picks the preset's teacher for the set
    teachers = [load_teacher(preset, name, teacher_path(Path(args.teachers_dir), name, preset, ipc)) for name in names]
    images, labels, _ = BuildDirectory(args.build).load_images(preset.channels)
    config = RelabelConfig.from_preset(preset, teacher_mode=args.mode, seed=args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as store_dir:
        write_soft_labels(teachers, names, images, preset, Path(store_dir), config, progress=False)
        store = SoftLabelStore.open(Path(store_dir))
        split = load_split(preset, args.data_root, args.split)
        result = train_student(preset, images, labels, store, split, args.student, seed=args.seed,
                               progress=False, split=args.split)
    record = {"label": args.label, "build": args.build, "teachers": names, "mode": args.mode,
              "T": preset.temperature, "epochs": preset.eval_epochs, "lr": preset.eval_lr,
              "crop": ",".join(f"{v:g}" for v in preset.relabel_crop_scale), "split": args.split, "seed": args.seed,
              "student": args.student, "top1_best": result["top1_best"], "top1_final": result["top1_final"],
              "seconds": round(time.perf_counter() - start),
              "command": shlex.join(["python", "benchmarks/protocol_search.py",
                                     *(sys.argv[1:] if argv is None else argv)])}
    append_record(Path(args.output), record)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
