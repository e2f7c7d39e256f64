"""Student training step speed: channels_last against the default contiguous layout, same run.

The evaluation trains small students for many short steps (batch 16); this measures one AdamW
step (forward, KD loss, backward, update) per layout, interleaving the layouts so that both see
the same machine load, and prints milliseconds per step and the ratio.

    OMP_NUM_THREADS=1 python benchmarks/student_step.py --student convnet-bn --image-size 28 --channels 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from builders.evaluate import kd_loss  # noqa: E402
from builders.models import build_model  # noqa: E402

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="convnet-bn")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds; the first is warm-up")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, args.channels, args.image_size, args.image_size)
    soft = torch.randn(args.batch_size, args.classes)
    runs = {}
    for name, layout in LAYOUTS.items():
        model = build_model(args.student, args.classes, args.channels, args.image_size).to(memory_format=layout)
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=3e-3), x.contiguous(memory_format=layout))
    seconds = dict.fromkeys(LAYOUTS, 0.0)
    for round_ in range(args.rounds):
        for name, (model, optimizer, inputs) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = kd_loss(model(inputs), soft, 4.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if round_:  # round 0 warms up allocators and kernels
                seconds[name] += time.perf_counter() - start
    steps = args.steps * (args.rounds - 1)
    ms = {name: round(1000 * s / steps, 2) for name, s in seconds.items()}
    print(json.dumps({"student": args.student, "image_size": args.image_size, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "ms_per_step": ms,
                      "speedup": round(ms["contiguous"] / ms["channels_last"], 2)}))


if __name__ == "__main__":
    main()
