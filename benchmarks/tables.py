"""BENCHMARKS.md's accuracy tables, printed from the records (``benchmarks/results/accuracy.json``).

Every cell is the last epoch's top-1 on the real test split, mean ± sample std over seeds (n); the
scores follow DD-Ranking (``builders.scores``).

    python benchmarks/tables.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from builders.card import SCORE_HEADER, markdown_table, score_rows  # noqa: E402

METHODS = ("random-real", "sre2l", "fadrm", "fadrm+")


def cell(record: dict | None) -> str:
    if record is None:
        return "not run"
    spread = f" ± {record['top1_final_std']:.2f}" if len(record["seeds"]) > 1 else ""
    return f"{record['top1_final_mean']:.2f}{spread} (n={len(record['seeds'])})"


def newest(records: list[dict], **match) -> dict | None:
    """The last record with these fields (later runs supersede earlier ones)."""
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "accuracy.json"))
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--plot", default=None, help="also draw top-1 against IPC, one line per method (PNG)")
    args = parser.parse_args(argv)
    records = [{"labels": "soft", "label": None, **r} for r in json.loads(Path(args.records).read_text())
               if r.get("dataset") == args.dataset and "top1_final_mean" in r]  # older records were all soft
    test = [r for r in records if r.get("split") == "test"]
    base = dict(split="test", student="convnet-bn", labels="soft", label=None)

    print("Soft labels, ConvNet-BN student:\n")
    ipcs = sorted({r["ipc"] for r in test})
    rows = [[ipc, *(cell(newest(test, ipc=ipc, method=m, **base)) for m in METHODS)] for ipc in ipcs]
    print(markdown_table(["IPC", *METHODS], rows))

    print("\nWhere the gain comes from (IPC 10):\n")
    gain = [("the selected patches, no optimisation", dict(method="random-real", label="selected-patches")),
            ("random real images through FADRM's optimisation", dict(method="fadrm", label="random-patches")),
            ("random real images, no optimisation (random-real)", dict(method="random-real", label=None)),
            ("FADRM (selected patches, optimised)", dict(method="fadrm", label=None))]
    found = [(name, newest(test, ipc=10, student="convnet-bn", labels="soft", **match)) for name, match in gain]
    print(markdown_table(["set", "top-1 %", "per seed"],
                         [[name, cell(r), ", ".join(f"{v:.2f}" for v in r["top1_final_per_seed"]) if r else ""]
                          for name, r in found]))

    print("\nStudents (IPC 10, soft labels, each student's lr chosen on the validation split):\n")
    students = sorted({r["student"] for r in test if r["ipc"] == 10 and r["labels"] == "soft"})
    rows = []
    for student in students:
        found = [newest(test, ipc=10, method=m, student=student, labels="soft", label=None) for m in METHODS[:3]]
        lrs = {r["lr"] for r in found if r}
        if len(lrs) > 1:
            raise SystemExit(f"{student}: the methods were evaluated at different lrs {sorted(lrs)}")
        rows.append([student, lrs.pop() if lrs else "", *(cell(r) for r in found)])
    print(markdown_table(["student", "lr", *METHODS[:3]], rows) if rows else "none measured")

    print("\nEach student's lr, chosen on the validation split (FADRM, IPC 10, seed 0, last epoch):\n")
    val = sorted((r["student"], r["lr"], f"{r['top1_final_mean']:.2f}") for r in records
                 if r.get("split") == "val" and r["method"] == "fadrm" and r["ipc"] == 10
                 and r["labels"] == "soft" and r["label"] is None and r["seeds"] == [0])
    print(markdown_table(["student", "lr", "val top-1 %"], [list(v) for v in val]) if val else "none measured")

    print("\nDD-Ranking's scores:\n")
    rows = [[ipc, *row] for ipc in ipcs for row in score_rows(test, args.dataset, ipc)]
    print(markdown_table(["IPC", *SCORE_HEADER], rows) if rows else "none measured")
    if args.plot:
        plot(test, args.plot, args.dataset)


def plot(records: list[dict], path: str, dataset: str) -> None:
    """Top-1 after the last epoch against IPC, one line per method, ± one std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for method in METHODS:
        points = [(ipc, r) for ipc in sorted({r["ipc"] for r in records})
                  if (r := newest(records, ipc=ipc, method=method, split="test", student="convnet-bn",
                                  labels="soft", label=None))]
        if points:
            axes.errorbar([ipc for ipc, _ in points], [r["top1_final_mean"] for _, r in points],
                          yerr=[r["top1_final_std"] for _, r in points], marker="o", capsize=3, label=method)
    axes.set_xscale("log")
    axes.set_xlabel("images per class (IPC)")
    axes.set_ylabel("test top-1 %, last epoch")
    axes.set_title(f"{dataset}: ConvNet-BN student, soft labels")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    main()
