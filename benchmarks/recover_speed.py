"""Recover's time per image and peak memory: FADRM against the plain baseline, and each piece alone.

Variants, all on the same teacher, unit size (``--batch`` classes) and total iteration count:

- ``baseline``: fp32, every iteration at the full resolution, no ARC (plain BN-statistics matching);
- ``fadrm``: the preset's schedule (MRO where the preset changes resolution), ARC, AMP on CUDA;
- ``mro``: the preset's resolutions only (fp32, no ARC);  ``amp``: fp16 autocast only (CUDA);
- ``stage@R``: one stage at resolution R (for the per-resolution cost behind MRO).

Each variant runs in a process of its own, so peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the growth of the process's resident high-water mark
(``VmHWM``, reset after the warm-up) over what it held before the measured call. Each times a second call
after a short warm-up; the
variants run ``--repeats`` times, interleaved, and the median time is kept (the CPU is shared).

How far from the limit: each variant's schedule is counted in FLOPs (:mod:`benchmarks.flops`: the
teacher's convolutions and matrix products, forward and input gradient; BatchNorm and elementwise
work are not counted), and its FLOP/s is set against this device's square ``torch.mm`` rate at the
same thread count, measured once per round of the repeats, fastest kept: fp32, and on CUDA fp16 for
the variants under AMP. Records go to ``benchmarks/results/speed.json``.

    python benchmarks/recover_speed.py --preset fashion-mnist --teacher convnet-bn --iterations 40
    python benchmarks/recover_speed.py --preset cifar100 --teacher resnet18-cifar --iterations 8
    python benchmarks/recover_speed.py --preset imagenet --teacher resnet18 --batch 100 --iterations 100 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.accuracy import append_record  # noqa: E402
from benchmarks.flops import (MATMUL_REPEATS, MATMUL_SIZE, frozen_teacher, matmul_rate,  # noqa: E402
                              schedule_flops, unit_inputs)
from builders.context import device_name  # noqa: E402
from builders.presets import get_preset  # noqa: E402
from builders.recover import RecoverConfig, recover_unit  # noqa: E402


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    """Start this process's resident high-water mark again from its resident size now (Linux), so the
    imports' and the warm-up's peaks are not counted as the measured unit's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    """This process's own resident high-water mark. Not ``ru_maxrss``: after exec it keeps the launching
    process's, so a child would report the parent's size whenever the parent held more."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def variant_config(preset, name: str, device: torch.device) -> RecoverConfig:
    cuda = device.type == "cuda"
    if name == "baseline":
        return RecoverConfig.from_preset(preset, arc=False, mro=False, amp=False)
    if name == "fadrm":
        return RecoverConfig.from_preset(preset, arc=True, mro=True, amp=cuda)
    if name == "mro":
        return RecoverConfig.from_preset(preset, arc=False, mro=True, amp=False)
    if name == "amp":
        return RecoverConfig.from_preset(preset, arc=False, mro=False, amp=True)
    if name.startswith("stage@"):
        size = int(name[6:])
        config = RecoverConfig.from_preset(preset, arc=False, mro=False, amp=False)
        return dataclasses.replace(config, stages=((size, preset.total_iterations),))
    raise ValueError(f"unknown variant {name!r}")


def benchmark_unit(args):
    """The preset cut to ``--iterations``, the teacher (random weights: the cost is the same), the unit's
    labels and patches: the same in the parent, which counts FLOPs, and in each child, which times."""
    torch.manual_seed(0)
    preset = get_preset(args.preset)
    preset = preset.replace(stage_iterations=tuple(max(1, args.iterations // len(preset.stage_iterations))
                                                   for _ in preset.stage_iterations))
    teacher = frozen_teacher(args.teacher, preset).to(args.device)
    return preset, teacher, *unit_inputs(preset, args.batch)


def run_variant(args) -> dict:
    """In the child process: time one unit of this variant and measure its peak memory."""
    device = torch.device(args.device)
    preset, teacher, labels, patches = benchmark_unit(args)
    config = variant_config(preset, args.child, device)
    warm = dataclasses.replace(config, stages=tuple((r, 2) for r, _ in config.stages))
    recover_unit([teacher], labels, patches, preset, warm, seed=0, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    before = _rss_bytes()
    if device.type == "cpu":
        _reset_peak_rss()
    start = time.perf_counter()
    result = recover_unit([teacher], labels, patches, preset, config, seed=1, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = int(result.peak_memory_mb * 2**20)
    else:
        peak = _peak_rss_bytes() - before
    return {"variant": args.child, "seconds": seconds, "per_image_s": seconds / args.batch, "peak_bytes": peak,
            "iterations": config.total_iterations, "stages": [list(s) for s in config.stages]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--teacher", default=None, help="architecture [the preset's FADRM teacher]")
    parser.add_argument("--batch", type=int, default=None, help="images per unit [the preset's class block]")
    parser.add_argument("--iterations", type=int, default=40, help="total iterations per unit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=None, help="comma-separated [baseline,fadrm,mro(,amp on CUDA),stage@R]")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant; the median time is kept")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    args.teacher = args.teacher or preset.teacher
    args.batch = args.batch or preset.class_block
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_variant(args)))
        return

    cuda = args.device.startswith("cuda")
    resolutions = sorted(set(preset.stage_resolutions))
    default = ["baseline", "fadrm", "mro", *(["amp"] if cuda else []), *(f"stage@{r}" for r in resolutions)]
    variants = args.variants.split(",") if args.variants else default
    passed = sys.argv[1:] if argv is None else argv
    flops, precision = count_variants(args, variants)
    runs, peaks = time_variants(args, passed, variants, set(precision.values()))
    results = {}
    for variant, measured in runs.items():
        r = sorted(measured, key=lambda m: m["per_image_s"])[len(measured) // 2]
        fraction = flops[variant] / r["per_image_s"] / peaks[precision[variant]]
        results[variant] = {**r, "peak_bytes": max(m["peak_bytes"] for m in measured),
                            "per_image_s_runs": [round(m["per_image_s"], 5) for m in measured],
                            "flops_per_image": flops[variant], "fraction_of_peak": fraction}
        print(f"{variant:>12}: {r['per_image_s'] * 1e3:8.2f} ms/image (median of {len(measured)})  "
              f"peak {results[variant]['peak_bytes'] / 2**20:8.1f} MiB  stages {r['stages']}  "
              f"{flops[variant] / 1e9:.4g} GFLOP/image, {fraction:.1%} of the matmul peak", flush=True)
    write_records(args, preset, results, peaks, shlex.join(["python", "benchmarks/recover_speed.py", *passed]))


def time_variants(args, passed: list[str], variants: list[str], dtypes: set[torch.dtype]):
    """Each variant's runs, each in a child process, and the matmul peak of each precision in ``dtypes``:
    ``--repeats`` rounds, interleaved, so that a busy moment of the machine hits every variant and the
    peak alike (the fastest round of the peak is kept)."""
    peaks = {dtype: 0.0 for dtype in dtypes}
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for _ in range(args.repeats):
        for dtype in peaks:
            peaks[dtype] = max(peaks[dtype], matmul_rate(torch.device(args.device), dtype))
        for variant in variants:
            child = [sys.executable, str(Path(__file__).resolve()), *passed,
                     "--teacher", args.teacher, "--batch", str(args.batch), "--child", variant]
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    for dtype, peak in peaks.items():
        print(f"matmul peak ({_name(dtype)}): {peak / 1e9:.1f} GFLOP/s", flush=True)
    return runs, peaks


def write_records(args, preset, results: dict, peaks: dict, command: str) -> None:
    """Time and memory records of each variant against the baseline, and of each lower-resolution stage
    against the full one; the time records carry their distance from the limit."""
    device = device_name(torch.device(args.device))  # after set_num_threads: the CPU's name holds its threads
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"device": device, "preset": args.preset, "model": args.teacher, "batch": args.batch,
              "iterations": args.iterations}
    limit = {"matmul_peak_flops_per_s": {_name(dtype): peak for dtype, peak in peaks.items()},
             "matmul_peak_measured_by": f"square torch.mm, n={MATMUL_SIZE[torch.device(args.device).type]}, "
                                        f"fastest of {MATMUL_REPEATS} in each of {args.repeats} rounds"}
    base = results.get("baseline")
    for variant, r in results.items():
        if base is None or variant == "baseline" or variant.startswith("stage@"):
            continue
        for what, key in (("time", "per_image_s"), ("memory", "peak_bytes")):
            append_record(Path(args.output), {
                **common, "what": what, "variant": variant, "baseline": base[key], "ours": r[key],
                "ratio": round(base[key] / r[key], 3) if r[key] else None,
                **(limit_fields(base, r, limit) if what == "time" else {}), "command": command, "time": stamp})
    full = f"stage@{preset.image_size}"
    for variant in results:
        if variant.startswith("stage@") and variant != full and full in results:
            size = int(variant[6:])
            append_record(Path(args.output), {
                **common, "what": "time", "variant": variant, "baseline": results[full]["per_image_s"],
                "ours": results[variant]["per_image_s"],
                "ratio": round(results[full]["per_image_s"] / results[variant]["per_image_s"], 3),
                "pixel_ratio": round((preset.image_size / size) ** 2, 3),
                **limit_fields(results[full], results[variant], limit), "command": command, "time": stamp})


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")

def count_variants(args, variants: list[str]) -> tuple[dict[str, float], dict[str, torch.dtype]]:
    """Each variant's counted FLOPs per image for its whole schedule, and the precision of the matmul
    peak it is set against: fp16 where it runs under AMP, fp32 otherwise."""
    device = torch.device(args.device)
    preset, teacher, labels, patches = benchmark_unit(args)
    configs = {variant: variant_config(preset, variant, device) for variant in variants}
    flops = {variant: schedule_flops([teacher], labels, patches, preset, config, device) / args.batch
             for variant, config in configs.items()}
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the children are timed next, on the same GPU
    return flops, {variant: torch.float16 if config.amp else torch.float32 for variant, config in configs.items()}


def limit_fields(base: dict, ours: dict, limit: dict) -> dict:
    """A time record's distance from the limit: both sides' counted FLOPs per image and their FLOP/s as a
    fraction of the matmul peak of their precision."""
    return {"flops_per_image": {"baseline": base["flops_per_image"], "ours": ours["flops_per_image"]},
            "fraction_of_peak": {"baseline": round(base["fraction_of_peak"], 4),
                                 "ours": round(ours["fraction_of_peak"], 4)}, **limit}

if __name__ == "__main__":
    main()
