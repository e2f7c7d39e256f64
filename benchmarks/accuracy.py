"""Accuracy of distilled Fashion-MNIST sets: IPC x method x seeds, through the CLI code paths.

Each (ipc, method, seed) gets its own build directory under ``--build-root`` and runs, exactly as a
user would, ``fadrm-build fashion-mnist --ipc N --method M --seed S`` (teacher, patches, recover,
relabel), then ``fadrm-build relabel ...`` (resumes; nothing to redo when the build finished it),
then ``fadrm-build evaluate BUILD_DIR``. Per (ipc, method) one record is appended to ``--output``:
{dataset, ipc, method, student, seeds, top1_final_mean (the headline: the last epoch's accuracy),
top1_final_std, top1_final_per_seed, top1_best_mean (the best of the checkpoints, which the
measured split chose: shown beside, labelled), command, ...}.

    python benchmarks/accuracy.py --ipc 1,10,50 --methods random-real,sre2l,fadrm,fadrm+ --seeds 0,1,2
    python benchmarks/accuracy.py --ipc 10 --methods fadrm --seeds 0 --epochs 2 --iterations 2,2,2,2  # smoke

Smaller labels (``--soft-labels``, with ``--label``): the set built without a label (its images) is copied
into its own directory, relabelled there with those relabel flags, and evaluated:

    python benchmarks/accuracy.py --ipc 10 --methods fadrm --split val --label cycle20 --soft-labels "--label-cycle 20"

Imported sets (``--imported NAME``, made by ``fadrm-build import ... --name NAME`` in the same build root)
are one set each, ``ipc<N>-<NAME>``: relabelled (resumes) and evaluated at every seed, the seed being the
student's; recorded under their name, so DD-Ranking's scores (``benchmarks/tables.py``) set them against
the random-real records beside them:

    python benchmarks/accuracy.py --ipc 10 --imported theirs --seeds 0,1,2 [--labels hard --evaluate-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fadrm_datasets.layout import IMAGES, MANIFEST, PATCHES, BuildDirectory, build_dir_name, ipc_dir  # noqa: E402
from builders.cli import main as fadrm_build  # noqa: E402
from builders.methods import METHODS  # noqa: E402
from builders.protocols import DEFAULT_PROTOCOL, PROTOCOLS  # noqa: E402
from fadrm_datasets._io import atomic_write_json  # noqa: E402
from fadrm_datasets.softlabels import SoftLabelStore  # noqa: E402

DATASET = "fashion-mnist"


def _csv(kind):
    def parse(text: str):
        return [kind(v) for v in text.split(",") if v.strip()]
    return parse


def run_cli(argv: list[str]) -> None:
    """One ``fadrm-build`` invocation in this process; a failure stops the benchmark."""
    print("$ fadrm-build " + shlex.join(argv), flush=True)
    try:
        fadrm_build(argv)
    except SystemExit as done:
        if done.code not in (0, None):
            raise RuntimeError(f"fadrm-build {shlex.join(argv)} failed (exit status {done.code})") from None


def build_dir_of(args, ipc: int, method: str, seed: int, label: str | None) -> Path:
    suffix = f"-{label}" if label else ""
    if method in args.imported:  # one set, made elsewhere: the seed is only the student's
        return Path(args.build_root) / DATASET / f"{build_dir_name(ipc, method)}{suffix}"
    return Path(args.build_root) / DATASET / f"{ipc_dir(ipc)}-{method}{suffix}-seed{seed}"


def copy_images(base: Path, target: Path) -> None:
    """A build's images, patches and manifest (its evaluations dropped) in a directory of its own."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(base / IMAGES, staging / IMAGES)
    if (base / PATCHES).is_file():
        shutil.copy2(base / PATCHES, staging / PATCHES)
    manifest = json.loads((base / MANIFEST).read_text())
    manifest.pop("evaluations", None)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    staging.rename(target)


def run_one(args, ipc: int, method: str, seed: int) -> dict:
    build_dir = build_dir_of(args, ipc, method, seed, args.label)  # every method named
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []

    imported = method in args.imported

    def common(directory: Path) -> list[str]:
        # An imported set keeps the seed it was imported with: one store, whichever student seed trains on it.
        chosen = [] if imported else ["--method", method, "--seed", str(seed)]
        return ["--ipc", str(ipc), *chosen, "--build-root", args.build_root,
                "--build-dir", str(directory), "--data-root", args.data_root, "--device", args.device]

    def build(directory: Path) -> None:
        flags = ["--iterations", args.iterations] if args.iterations else []
        run_cli([DATASET, *common(directory), "--no-evaluate", *epochs, *flags, *shlex.split(args.extra)])

    relabel = ["--teacher-mode", args.teacher_mode, *shlex.split(args.soft_labels)]
    if args.soft_labels and not args.evaluate_only:  # the same images, other labels
        base = build_dir_of(args, ipc, method, seed, None)
        if not (base / MANIFEST).is_file():
            build(base)
        if not build_dir.is_dir():
            copy_images(base, build_dir)
        run_cli(["relabel", DATASET, *common(build_dir), *epochs, *relabel])
    elif not args.evaluate_only:
        if not imported:  # main() checked that an imported set exists
            build(build_dir)
        run_cli(["relabel", DATASET, *common(build_dir), *epochs, *relabel])
    done = None if args.fresh else matching_evaluation(build_dir, args, seed)
    if done is not None:  # long tables resume: a finished run with the same protocol is not repeated
        print(f"reusing the evaluation of {done['time']} in {build_dir} (final top-1 {done['top1_final']})", flush=True)
    else:
        evaluate = ["evaluate", str(build_dir), "--seed", str(seed), "--device", args.device,
                    "--data-root", args.data_root, "--split", args.split, *epochs]
        if args.student:
            evaluate += ["--student", args.student]
        if args.labels != "soft":
            evaluate += ["--labels", args.labels]
        if args.lr is not None:
            evaluate += ["--lr", str(args.lr)]
        run_cli([*evaluate, "--protocol", args.protocol])
        done = BuildDirectory(build_dir).read_manifest()["evaluations"][-1]
    teachers = BuildDirectory(build_dir).read_manifest().get("teachers") or {}
    return {**done, "label_bytes": SoftLabelStore.open(build_dir).bytes,
            "teacher_records": {name: {k: record.get(k) for k in ("epochs", "test_top1")}
                                for name, record in teachers.items()}}


def matching_evaluation(build_dir: Path, args, seed: int) -> dict | None:
    """The newest evaluation in the build's manifest made with the protocol this run would use."""
    from builders.build import protocol_labels
    from builders.evaluate import manifest_preset
    from builders.options import resolve_device
    from builders.protocols import protocol_preset
    manifest = BuildDirectory(build_dir).read_manifest()
    preset = protocol_preset(args.protocol, manifest_preset(manifest), manifest["ipc"]).preset
    device = resolve_device(args.device)
    store = SoftLabelStore.open(protocol_labels(build_dir, args.protocol, args.epochs, device))
    wanted = {"split": args.split, "seed": seed, "student": args.student or preset.student,
              "epochs": args.epochs or preset.eval_epochs, "lr": args.lr or preset.eval_lr,
              "weight_decay": preset.eval_weight_decay, "temperature": preset.temperature,
              "grad_accumulation": preset.eval_grad_accumulation, "teacher_mode": store.teacher_mode,
              "teachers": store.teachers, "soft_label_epochs": store.train_epochs}
    for record in reversed(manifest.get("evaluations", [])):
        same_protocol = record.get("protocol", "ours") == args.protocol  # older records were all ours
        same_labels = same_protocol and record.get("labels", "soft") == args.labels  # older records were all soft
        named = record.get("soft_labels") or {}  # older records name no store
        same_store = (named.get("fingerprint") in (None, store.index["fingerprint"])
                      and named.get("stored_epochs", store.epochs) == store.epochs)
        if same_labels and same_store and all(record.get(key) == value for key, value in wanted.items()):
            return record
    return None


def append_record(path: Path, record: dict) -> None:
    records = json.loads(path.read_text()) if path.is_file() else []
    records.append(record)
    atomic_write_json(path, records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ipc", type=_csv(int), default=[1, 10, 50], help="IPC list, e.g. 1,10,50")
    parser.add_argument("--methods", type=_csv(str), default=None,
                        help="from " + ",".join(METHODS) + " (default: all of them, or none with --imported)")
    parser.add_argument("--imported", type=_csv(str), default=[], metavar="NAMES",
                        help="sets imported into the build root with fadrm-build import --name NAME")
    parser.add_argument("--seeds", type=_csv(int), default=[0], help="seed list, e.g. 0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="soft-label and student epochs (preset: 300)")
    parser.add_argument("--iterations", default=None, help="recover iterations per stage, e.g. 100,100,100,100")
    parser.add_argument("--student", default=None, help="student architecture (preset: convnet-bn)")
    parser.add_argument("--lr", type=float, default=None, help="student learning rate (preset: 3e-3)")
    parser.add_argument("--teacher-mode", choices=("train", "eval"), default="train")
    parser.add_argument("--labels", choices=("soft", "hard"), default="soft",
                        help="hard: train the student on the same batches with hard labels (DD-Ranking's HLR)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default=DEFAULT_PROTOCOL,
                        help="how the students train (builders/protocols.py); ours is the default")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="val: the held-out training images, for choosing settings")
    parser.add_argument("--extra", default="", help="more build flags, e.g. '--alpha 0.7 --lr 0.05'")
    parser.add_argument("--label", default=None, help="a name for this configuration in the records")
    parser.add_argument("--soft-labels", default="", metavar="FLAGS",
                        help="relabel flags, e.g. '--label-cycle 20 --label-dtype int8': the unlabelled build's "
                             "images relabelled so in their own directory (needs --label)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="the builds exist: only evaluate them (another student, hard labels, another lr)")
    parser.add_argument("--fresh", action="store_true",
                        help="train every student again, even where the build already holds an evaluation "
                             "made with the same protocol (reused by default, so a long table resumes)")
    parser.add_argument("--build-root", default="build/benchmarks")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "accuracy.json"))
    args = parser.parse_args(argv)
    if args.soft_labels and not args.label:
        parser.error("--soft-labels needs --label, the name of the relabelled copies")
    clashing = sorted(set(args.imported) & set(METHODS))
    if clashing:
        parser.error(f"--imported {','.join(clashing)}: an imported set is never named as a method")
    if args.imported and (args.extra or args.iterations or (args.label and not args.soft_labels)):
        parser.error("an imported set is not built here: --extra and --iterations do not apply, and --label "
                     "names its relabelled copy, so it needs --soft-labels")
    missing = [name for name in args.imported for ipc in args.ipc
               if not (build_dir_of(args, ipc, name, 0, None) / MANIFEST).is_file()]
    if missing:
        parser.error(f"no imported set {', '.join(sorted(set(missing)))} in {args.build_root}: make it first with "
                     f"fadrm-build import SOURCE --dataset {DATASET} --ipc N --name NAME --build-root {args.build_root}")
    if args.methods is None:
        args.methods = [] if args.imported else list(METHODS)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    command = shlex.join(["python", "benchmarks/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    for ipc in args.ipc:
        for method in [*args.methods, *args.imported]:
            start = time.perf_counter()
            runs = [run_one(args, ipc, method, seed) for seed in args.seeds]
            best = [r["top1_best"] for r in runs]
            final = [r["top1_final"] for r in runs]
            record = {
                "dataset": DATASET, "ipc": ipc, "method": method, "imported": method in args.imported,
                "student": runs[0]["student"],
                "seeds": args.seeds, "top1_final_mean": round(statistics.fmean(final), 2),
                "top1_final_std": round(statistics.stdev(final), 2) if len(final) > 1 else 0.0,
                "top1_final_per_seed": final, "top1_best_mean": round(statistics.fmean(best), 2),
                "top1_best_per_seed": best, "top5_mean": round(statistics.fmean(r["top5"] for r in runs), 2),
                "split": args.split, "label": args.label, "extra": args.extra, "labels": args.labels,
                "soft_labels": args.soft_labels, "label_bytes": runs[0]["label_bytes"],
                "protocol": args.protocol, "epochs": runs[0]["epochs"], "lr": runs[0]["lr"], "temperature": runs[0]["temperature"],
                "iterations": args.iterations, "teacher_mode": args.teacher_mode,
                "teachers": runs[0]["teacher_records"],
                "device": runs[0]["device"], "seconds": round(time.perf_counter() - start, 1),
                "command": command,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            append_record(Path(args.output), record)
            print(f"{DATASET} ipc {ipc} {method}: final top-1 {record['top1_final_mean']:.2f} +- "
                  f"{record['top1_final_std']:.2f} % ({len(args.seeds)} seeds) -> {args.output}", flush=True)


if __name__ == "__main__":
    main()
