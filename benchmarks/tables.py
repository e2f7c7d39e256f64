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
from builders.protocols import DEFAULT_PROTOCOL, PROTOCOLS  # noqa: E402

METHODS = ("random-real", "sre2l", "fadrm", "fadrm+", "rded")
STUDENT_METHODS = METHODS[:3]  # the cross-architecture table's methods


def cell(record: dict | None) -> str:
    if record is None:
        return "not run"
    spread = f" ± {record['top1_final_std']:.2f}" if len(record["seeds"]) > 1 else ""
    return f"{record['top1_final_mean']:.2f}{spread} (n={len(record['seeds'])})"


def newest(records: list[dict], **match) -> dict | None:
    """The last record with these fields (later runs supersede earlier ones)."""
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    return found[-1] if found else None


def protocol_table(test: list[dict], ipc: int = 10) -> str:
    """Each method's soft-label top-1 under each protocol, and its rank among the methods measured under it."""
    base = dict(ipc=ipc, student="convnet-bn", labels="soft", label=None)
    found = {(m, p): newest(test, method=m, protocol=p, **base) for m in METHODS for p in PROTOCOLS}
    ranks = {}
    for protocol in PROTOCOLS:
        measured = sorted((r["top1_final_mean"], m) for (m, p), r in found.items() if p == protocol and r)
        ranks.update({(m, protocol): len(measured) - i for i, (_, m) in enumerate(measured)})
    rows = [[m, *(f"{cell(found[m, p])}, #{ranks[m, p]}" if found[m, p] else "not run" for p in PROTOCOLS)]
            for m in METHODS if any(found[m, p] for p in PROTOCOLS)]
    return markdown_table(["method", *PROTOCOLS], rows) if rows else "none measured"


def student_records(test: list[dict]) -> dict[str, tuple[float | str, list[dict | None]]]:
    """Per student at IPC 10 with soft labels: its lr and the newest record of each method, refusing a
    row whose methods were evaluated at different lrs (a half-finished rerun at a newly chosen lr)."""
    students = sorted({r["student"] for r in test
                       if r["ipc"] == 10 and r["labels"] == "soft" and r["protocol"] == DEFAULT_PROTOCOL})
    rows = {}
    for student in students:
        found = [newest(test, ipc=10, method=m, student=student, labels="soft", label=None, protocol=DEFAULT_PROTOCOL)
                 for m in STUDENT_METHODS]
        lrs = {r["lr"] for r in found if r}
        if len(lrs) > 1:
            raise SystemExit(f"{student}: the methods were evaluated at different lrs {sorted(lrs)}")
        rows[student] = (lrs.pop() if lrs else "", found)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "accuracy.json"))
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--plot", default=None,
                        help="also draw top-1 against IPC (one line per method) beside top-1 per student (PNG)")
    args = parser.parse_args(argv)
    # Older records were all soft labels under our protocol.
    records = [{"labels": "soft", "label": None, "protocol": DEFAULT_PROTOCOL, **r}
               for r in json.loads(Path(args.records).read_text())
               if r.get("dataset") == args.dataset and "top1_final_mean" in r]
    test = [r for r in records if r.get("split") == "test"]
    base = dict(split="test", student="convnet-bn", labels="soft", label=None, protocol=DEFAULT_PROTOCOL)

    print("Soft labels, ConvNet-BN student:\n")
    ipcs = sorted({r["ipc"] for r in test})
    rows = [[ipc, *(cell(newest(test, ipc=ipc, method=m, **base)) for m in METHODS)] for ipc in ipcs]
    print(markdown_table(["IPC", *METHODS], rows))

    print("\nUnder each protocol (IPC 10; the rank among the methods measured under it):\n")
    print(protocol_table(test))

    print("\nWhere the gain comes from (IPC 10):\n")
    gain = [("the selected patches, no optimisation", dict(method="random-real", label="selected-patches")),
            ("random real images through FADRM's optimisation", dict(method="fadrm", label="random-patches")),
            ("random real images, no optimisation (random-real)", dict(method="random-real", label=None)),
            ("FADRM (selected patches, optimised)", dict(method="fadrm", label=None))]
    found = [(name, newest(test, ipc=10, student="convnet-bn", labels="soft", protocol=DEFAULT_PROTOCOL, **match))
             for name, match in gain]
    print(markdown_table(["set", "top-1 %", "per seed"],
                         [[name, cell(r), ", ".join(f"{v:.2f}" for v in r["top1_final_per_seed"]) if r else ""]
                          for name, r in found]))

    print("\nStudents (IPC 10, soft labels, each student's lr chosen on the validation split):\n")
    by_student = student_records(test)
    rows = [[student, lr, *(cell(r) for r in found)] for student, (lr, found) in by_student.items()]
    print(markdown_table(["student", "lr", *STUDENT_METHODS], rows) if rows else "none measured")

    print("\nEach student's lr, chosen on the validation split (FADRM, IPC 10, seed 0, last epoch):\n")
    val = sorted((r["student"], r["lr"], f"{r['top1_final_mean']:.2f}") for r in records
                 if r.get("split") == "val" and r["method"] == "fadrm" and r["ipc"] == 10 and r["labels"] == "soft"
                 and r["label"] is None and r["seeds"] == [0] and r["protocol"] == DEFAULT_PROTOCOL)
    print(markdown_table(["student", "lr", "val top-1 %"], [list(v) for v in val]) if val else "none measured")

    print("\nDD-Ranking's scores:\n")
    rows = [[ipc, *row] for ipc in ipcs for row in score_rows(test, args.dataset, ipc)]
    print(markdown_table(["IPC", *SCORE_HEADER], rows) if rows else "none measured")
    if args.plot:
        plot(test, by_student, args.plot, args.dataset)


def plot(records: list[dict], by_student: dict, path: str, dataset: str) -> None:
    """Left: top-1 after the last epoch against IPC, one line per method. Right: top-1 per student at
    IPC 10, one bar per method. Both ± one std over seeds; one colour per method in both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, bars) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=120, width_ratios=(1, 1.3))
    colours = {method: f"C{i}" for i, method in enumerate(METHODS)}
    ipcs = sorted({r["ipc"] for r in records})
    for method in METHODS:
        points = [(ipc, r) for ipc in ipcs
                  if (r := newest(records, ipc=ipc, method=method, split="test", student="convnet-bn",
                                  labels="soft", label=None, protocol=DEFAULT_PROTOCOL))]
        if points:
            axes.errorbar([ipc for ipc, _ in points], [r["top1_final_mean"] for _, r in points],
                          yerr=[r["top1_final_std"] for _, r in points], marker="o", capsize=3, label=method,
                          color=colours[method])
    axes.set_xscale("log")
    axes.set_xticks(ipcs, [str(ipc) for ipc in ipcs])
    axes.minorticks_off()
    axes.set_xlabel("images per class (IPC)")
    axes.set_ylabel("test top-1 %, last epoch")
    axes.set_title(f"{dataset}: ConvNet-BN student, soft labels")
    axes.grid(alpha=0.3)
    axes.legend()

    width = 0.8 / len(STUDENT_METHODS)
    for i, method in enumerate(STUDENT_METHODS):
        places = [(x, found[i]) for x, (_, found) in enumerate(by_student.values()) if found[i]]
        offset = (i - (len(STUDENT_METHODS) - 1) / 2) * width  # the method's bars, centred on each student
        bars.bar([x + offset for x, _ in places], [r["top1_final_mean"] for _, r in places], width,
                 yerr=[r["top1_final_std"] for _, r in places], capsize=2, color=colours[method], label=method)
    names = [f"{student}\nlr {lr}" for student, (lr, _) in by_student.items()]
    bars.set_xticks(range(len(by_student)), names, fontsize=8)
    means = [r["top1_final_mean"] for _, found in by_student.values() for r in found if r] or [0]
    bars.set_ylim(max(0, min(means) - 3), min(100, max(means) + 3))  # the differences are a few points
    bars.set_ylabel("test top-1 %, last epoch")
    bars.set_title(f"{dataset}: each student, IPC 10, soft labels")
    bars.grid(alpha=0.3, axis="y")
    bars.legend(loc="upper center", ncol=len(STUDENT_METHODS))
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    main()
