"""Soft-label bytes: computed per preset and switch, and the measured size-against-accuracy curve.

``sizes``: every label byte a relabel writes (its shards' tensors; the index, a few KB, aside) for each
preset at IPC 10 and 50 under each switch of ``fadrm-build relabel`` (``--label-cycle``, ``--label-dtype``,
``--topk``; the preset's top-k kept, as ImageNet-1K's 100), from the store's layout (``builders.relabel.store_bytes``), beside the FKD reference layout
and LPLD's published sizes; nothing is written or trained.

``curve``: the accuracy records of ``benchmarks/accuracy.py --soft-labels ... --label NAME`` (and those of the
full labels, no label) as a table and a plot of top-1 against label bytes, per IPC and method.

    python benchmarks/label_sizes.py sizes
    python benchmarks/label_sizes.py curve benchmarks/results/label_curve.json --plot benchmarks/results/label_curve.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from builders.card import markdown_table  # noqa: E402
from builders.presets import get_preset  # noqa: E402
from builders.relabel import RelabelConfig, store_bytes  # noqa: E402

DATASETS = ("fashion-mnist", "cifar100", "tiny-imagenet", "imagenet")
IPCS = (10, 50)
# LPLD's README (he-y/soft-label-pruning-for-dataset-distillation 63eee18, "Previous Soft Labels vs Ours"):
# ImageNet-1K label GB and ResNet-18 top-1 %, FKD's layout ("previous") against LPLD's 40x pruning.
LPLD_IMAGENET = {10: {"fkd_gb": 5.67, "fkd_top1": 20.1, "lpld_gb": 0.14, "lpld_top1": 20.2},
                 50: {"fkd_gb": 28.33, "fkd_top1": 46.8, "lpld_gb": 0.71, "lpld_top1": 46.7}}


def switches(preset) -> dict[str, dict]:
    """Each switch alone and the combinations, as RelabelConfig changes to every epoch stored (the labels
    before the switches, at the preset's top-k)."""
    epochs, default = preset.relabel_epochs, RelabelConfig.from_preset(preset).cycle
    rows = {"every epoch stored": {}, "int8": {"logit_dtype": "int8"},
            f"cycle {epochs // 10}": {"cycle": epochs // 10},
            f"cycle {epochs // 10} + int8": {"cycle": epochs // 10, "logit_dtype": "int8"},
            f"cycle {default} (the default)": {"cycle": default},
            f"cycle {default} + int8": {"cycle": default, "logit_dtype": "int8"}}
    if preset.num_classes >= 100:  # top-k means something only with many classes
        for k in (10, 50):
            if k < (preset.soft_label_topk or preset.num_classes):
                rows[f"top-{k} + cycle {default}"] = {"topk": k, "cycle": default}
    return rows


def computed_sizes() -> list[dict]:
    records = []
    for name in DATASETS:
        preset = get_preset(name)
        base = RelabelConfig(epochs=preset.relabel_epochs, batch_size=preset.relabel_batch_size,
                             crop_scale=tuple(preset.relabel_crop_scale), topk=preset.soft_label_topk)
        for ipc in IPCS:
            images = ipc * preset.num_classes
            every = store_bytes(images, preset.num_classes, base)
            for switch, changes in switches(preset).items():
                size = store_bytes(images, preset.num_classes, dataclasses.replace(base, **changes))
                records.append({"dataset": name, "ipc": ipc, "switch": switch, "epochs": preset.relabel_epochs,
                                "topk": preset.soft_label_topk, **changes, "bytes": size,
                                "fraction_of_every_epoch": round(size / every, 4)})
    return records


def print_sizes(records: list[dict]) -> None:
    rows = [[r["dataset"], r["ipc"], r["switch"], f"{r['bytes'] / 1e9:.3f} GB" if r["bytes"] >= 1e8
             else f"{r['bytes'] / 1e6:.2f} MB", f"1/{1 / r['fraction_of_every_epoch']:.1f}"] for r in records]
    print(markdown_table(["dataset", "IPC", "labels", "bytes (computed)", "of every epoch stored"], rows))


def curve_rows(records: list[dict]) -> list[list]:
    """One row per (IPC, method, labels) on the validation split: top-1, bytes, and both against full labels."""
    full = {(r["ipc"], r["method"]): r for r in records if not r.get("label") and r["split"] == "val"}
    rows = []
    for r in sorted((r for r in records if r["split"] == "val"), key=lambda r: (r["ipc"], r["method"], -r["label_bytes"])):
        base = full.get((r["ipc"], r["method"]))
        if base is None:
            continue
        rows.append([r["ipc"], r["method"], r.get("label") or "full", r.get("soft_labels") or "",
                     f"{r['label_bytes']:,}", f"1/{base['label_bytes'] / r['label_bytes']:.1f}",
                     f"{r['top1_final_mean']:.2f}", f"{r['top1_final_mean'] - base['top1_final_mean']:+.2f}"])
    return rows


CURVE_HEADER = ["IPC", "method", "labels", "relabel flags", "label bytes", "of full", "val top-1 % (last epoch)",
                "against full"]


def plot_curve(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [r for r in records if r["split"] == "val"]
    ipcs = sorted({r["ipc"] for r in val})
    figure, axes = plt.subplots(1, len(ipcs), figsize=(5.5 * len(ipcs), 4), squeeze=False)
    for axis, ipc in zip(axes[0], ipcs):
        for method in sorted({r["method"] for r in val if r["ipc"] == ipc}):
            points = sorted((r["label_bytes"], r["top1_final_mean"], r.get("label") or "full")
                            for r in val if r["ipc"] == ipc and r["method"] == method)
            line, = axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
            full = [top1 for _, top1, label in points if label == "full"]
            if full:  # the default's bound: half a point under full labels
                axis.axhline(full[0] - 0.5, color=line.get_color(), linestyle=":", linewidth=1)
            for size, top1, label in points:
                axis.annotate(label, (size, top1), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel("soft-label bytes (log)")
        axis.set_ylabel("val top-1 % at the last epoch")
        axis.set_title(f"Fashion-MNIST IPC {ipc}, 1 seed (dotted: full labels - 0.5)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sizes = commands.add_parser("sizes", help="computed bytes per preset and switch")
    sizes.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "label_sizes.json"))
    curve = commands.add_parser("curve", help="the measured curve from accuracy records")
    curve.add_argument("records", help="accuracy.py's --output of the label runs")
    curve.add_argument("--plot", default=None, help="write the plot here (PNG)")
    args = parser.parse_args(argv)
    if args.command == "sizes":
        records = computed_sizes()
        Path(args.output).write_text(json.dumps({"computed": records, "lpld_imagenet": LPLD_IMAGENET}, indent=2) + "\n")
        print_sizes(records)
        return
    records = json.loads(Path(args.records).read_text())
    print(markdown_table(CURVE_HEADER, curve_rows(records)))
    if args.plot:
        plot_curve(records, Path(args.plot))


if __name__ == "__main__":
    main()
