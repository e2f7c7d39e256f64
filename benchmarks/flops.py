"""Recover's FLOPs, counted, and the matmul rate they are set against.

A recover iteration is one forward of a teacher on the augmented batch and the gradient back to the
pixels. :func:`iteration_flops` runs a one-iteration :func:`builders.recover.recover_unit` under
``torch.utils.flop_counter.FlopCounterMode``, so it counts what recover dispatches: the convolutions
and matrix products of the forward and of the input gradient. The teachers' weights do not require
grad, so autograd asks ``convolution_backward`` (and the linear layers' backward) for no weight
gradient, and the counter charges none. BatchNorm, activations, pooling, the augmentation's
resampling, the loss and Adam are not counted: a fraction of peak built on these counts understates
the work done. Convolution and matmul FLOPs are linear in the batch, so per image they do not depend
on the batch they were counted at.

The table of every preset's full schedule (BENCHMARKS.md, "How far from the limit"):

    python benchmarks/flops.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.accuracy import append_record  # noqa: E402
from builders.models import build_model  # noqa: E402
from builders.presets import PRESETS, Preset  # noqa: E402
from builders.recover import RecoverConfig, recover_unit  # noqa: E402

# Dense fp16 tensor-core rates from the vendors' datasheets (fp32 accumulation, no sparsity): the
# floors they give are derived, not measured.
GPU_PEAKS = {"H100 SXM": 989e12, "RTX 4090": 165e12}

# Square products this large sit on the plateau of the matmul rate: the CPU's sweep is in BENCHMARKS.md;
# the GPU's size is unchecked (no GPU was lent when it was chosen).
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
MATMUL_REPEATS = 5


def iteration_flops(teacher: nn.Module, labels: torch.Tensor, patches: torch.Tensor, preset: Preset,
                    config: RecoverConfig, resolution: int, device: torch.device) -> int:
    """FLOPs of one recover iteration of ``teacher`` at ``resolution`` on this unit (all its images)."""
    one_step = dataclasses.replace(config, stages=((resolution, 1),))
    with FlopCounterMode(display=False) as counter:
        recover_unit([teacher], labels, patches, preset, one_step, seed=0, device=device)
    return counter.get_total_flops()


def schedule_flops(teachers: list[nn.Module], labels: torch.Tensor, patches: torch.Tensor, preset: Preset,
                   config: RecoverConfig, device: torch.device) -> int:
    """FLOPs of a unit's whole schedule: each step's teacher, taken round-robin as recover takes them,
    at its stage's resolution."""
    per_iteration: dict[tuple[int, int], int] = {}
    total, step = 0, 0
    for resolution, iterations in config.stages:
        for _ in range(iterations):
            key = (step % len(teachers), resolution)
            if key not in per_iteration:
                per_iteration[key] = iteration_flops(teachers[key[0]], labels, patches, preset, config,
                                                     resolution, device)
            total += per_iteration[key]
            step += 1
    return total


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the fastest of ``MATMUL_REPEATS`` square ``torch.mm`` products on ``device`` at the current
    thread count: the peak the recover rows are set against.

    On CUDA the fp32 product runs at the precision cuDNN gives recover's fp32 convolutions (TF32 by
    default), not cuBLAS's own default (IEEE fp32), so that fp32 rows are not set against a slower
    arithmetic than the one they use; AMP rows are set against the fp16 product."""
    if device.type == "cuda" and dtype == torch.float32:
        with _cublas_fp32_precision(torch.backends.cudnn.conv.fp32_precision):
            return _fastest_matmul(device, dtype)
    return _fastest_matmul(device, dtype)


@contextlib.contextmanager
def _cublas_fp32_precision(precision: str):
    before = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = precision
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def _fastest_matmul(device: torch.device, dtype: torch.dtype) -> float:
    size = MATMUL_SIZE[device.type]
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.mm(a, b)  # warm-up: the library's first call picks its kernel
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unit_inputs(preset: Preset, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and uint8 starting patches for a unit of ``batch`` images (the content does not change
    the count)."""
    labels = torch.arange(batch) % preset.num_classes
    patches = torch.randint(0, 256, (batch, preset.channels, preset.image_size, preset.image_size),
                            dtype=torch.uint8)
    return labels, patches


def frozen_teacher(name: str, preset: Preset) -> nn.Module:
    """A random-weight teacher set up as recover's are: eval mode, no weight requires grad."""
    return build_model(name, preset.num_classes, preset.channels, preset.image_size).eval().requires_grad_(False)


def method_record(preset: Preset, method: str, names: tuple[str, ...], batch: int) -> dict:
    """Per-image FLOPs of every teacher at every resolution and of the full schedule, with the GPU floors."""
    labels, patches = unit_inputs(preset, batch)
    config = RecoverConfig.from_preset(preset)
    teachers = [frozen_teacher(name, preset) for name in names]
    cpu = torch.device("cpu")
    per_iteration = {name: {str(r): iteration_flops(t, labels, patches, preset, config, r, cpu) / batch
                            for r in sorted(set(preset.stage_resolutions))} for name, t in zip(names, teachers)}
    per_image = schedule_flops(teachers, labels, patches, preset, config, cpu) / batch
    return {"preset": preset.name, "method": method, "teachers": list(names),
            "stages": [list(stage) for stage in config.stages],
            "iteration_flops_per_image": per_iteration, "schedule_flops_per_image": per_image,
            "gpu_peak_flops_per_s": GPU_PEAKS,
            "derived_floor_s_per_image": {gpu: per_image / peak for gpu, peak in GPU_PEAKS.items()}}


def print_tables(records: list[dict]) -> None:
    print("| preset | teacher | resolution | GFLOP per iteration per image |\n|---|---|---|---|")
    seen = set()
    for record in records:
        for name, by_resolution in record["iteration_flops_per_image"].items():
            for resolution, flops in by_resolution.items():
                if (record["preset"], name, resolution) not in seen:
                    seen.add((record["preset"], name, resolution))
                    print(f"| {record['preset']} | {name} | {resolution} | {flops / 1e9:.4g} |")
    gpus = " | ".join(f"floor on {gpu} (DERIVED)" for gpu in GPU_PEAKS)
    print(f"\n| preset | method | iterations | GFLOP per distilled image | {gpus} |\n|---|---|---|---|"
          + "---|" * len(GPU_PEAKS))
    for record in records:
        floors = " | ".join(f"{s * 1e3:.3g} ms" for s in record["derived_floor_s_per_image"].values())
        iterations = sum(n for _, n in record["stages"])
        print(f"| {record['preset']} | {record['method']} | {iterations} | "
              f"{record['schedule_flops_per_image'] / 1e9:,.1f} | {floors} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    parser.add_argument("--batch", type=int, default=2, help="images counted at (per-image FLOPs do not depend on it)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the count does not depend on them)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "flops.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    command = shlex.join(["python", "benchmarks/flops.py", *(sys.argv[1:] if argv is None else argv)])
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    records = []
    for name in args.presets.split(","):
        preset = PRESETS[name]
        for method, teachers in (("fadrm", (preset.teacher,)), ("fadrm+", preset.teachers_plus)):
            record = {**method_record(preset, method, teachers, args.batch), "batch": args.batch,
                      "torch": torch.__version__, "command": command, "time": stamp}
            append_record(Path(args.output), record)
            records.append(record)
    print_tables(records)


if __name__ == "__main__":
    main()
