"""AMP against fp32: the same unit recovered both ways, from the same seed and teacher.

Prints and records how far the images end up apart (uint8 pixels), whether every loss stayed finite, and
AMP's final loss scale and the steps its scaler skipped. Meant for CUDA (the default), where AMP pays; on
the CPU fp16 autocast is many times slower than fp32, so ``--device cpu`` suits tiny units, to test the path.

    python benchmarks/amp_check.py --preset imagenet --teacher resnet18 --batch 100 --iterations 200
    python benchmarks/amp_check.py --preset fashion-mnist --teacher convnet-bn-w8-d2 --batch 5 --iterations 8 \\
        --device cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.accuracy import append_record  # noqa: E402
from builders.context import device_name  # noqa: E402
from builders.models import build_model  # noqa: E402
from builders.options import BuildError, resolve_device  # noqa: E402
from builders.presets import get_preset  # noqa: E402
from builders.recover import RecoverConfig, recover_unit  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="imagenet")
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (tiny units only)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "amp_check.json"))
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except BuildError as error:
        sys.exit(str(error))
    preset = get_preset(args.preset)
    per_stage = max(1, args.iterations // len(preset.stage_iterations))
    preset = preset.replace(stage_iterations=(per_stage,) * len(preset.stage_iterations))
    batch = args.batch or preset.class_block
    torch.manual_seed(0)
    teacher = build_model(args.teacher or preset.teacher, preset.num_classes, preset.channels, preset.image_size)
    teacher = teacher.to(device).eval().requires_grad_(False)
    labels = torch.arange(batch) % preset.num_classes
    patches = torch.randint(0, 256, (batch, preset.channels, preset.image_size, preset.image_size), dtype=torch.uint8)
    fp32 = RecoverConfig.from_preset(preset)
    runs = {name: recover_unit([teacher], labels, patches, preset, config, seed=7, device=device)
            for name, config in (("fp32", fp32), ("amp", dataclasses.replace(fp32, amp=True)))}
    diff = (runs["amp"].images.int() - runs["fp32"].images.int()).abs().float()
    record = {
        "device": device_name(device), "preset": args.preset, "model": args.teacher or preset.teacher,
        "batch": batch, "iterations": fp32.total_iterations,
        "losses_finite": {name: all(math.isfinite(v) for v in run.losses) for name, run in runs.items()},
        "final_loss": {name: run.losses[-1] for name, run in runs.items()},
        "pixel_mean_abs_diff": round(diff.mean().item(), 3), "pixel_p99_abs_diff": round(diff.quantile(0.99).item(), 1),
        "amp_loss_scale": runs["amp"].loss_scale, "amp_skipped_steps": runs["amp"].skipped_steps,
        "seconds": {name: round(run.seconds, 2) for name, run in runs.items()},
        "command": "python benchmarks/amp_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    append_record(Path(args.output), record)
    print(record)
    if not all(record["losses_finite"].values()):
        sys.exit("a loss was not finite")


if __name__ == "__main__":
    main()
