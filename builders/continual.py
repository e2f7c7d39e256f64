"""Class-incremental learning on built sets: the peers' protocol, and one model carried through the steps.

For each build, class order and step of a :class:`~fadrm_datasets.continual.ClassIncrementalScenario`:

- ``fresh`` (the peers' protocol, GDumb-style): a fresh student (the preset's) is trained from scratch on
  the distilled images of every class seen so far, then tested on the real test images of those classes.
- ``carried``: one student goes through the steps. At each step its head grows by the new classes (the
  old outputs kept), and it trains on the same images with, on top of the teacher's labels, distillation
  from the previous step's model on the old classes (KL at ``previous_temperature``, IDC's T = 2).

Labels. The set's stored soft labels cannot serve a step: every recorded batch mixes classes (CutMix
partners and logits over all classes). Instead the set's own teachers (those its manifest records)
label each augmented batch live, and their logits are restricted to the classes seen so far
(``scenario.restrict``), so the target distribution puts no mass on a class the learner has not met.
The batches follow the set's student protocol (the preset's crop, flip and CutMix, here drawn among
the step's images only), as do the optimiser, batch, accumulation and temperature; the teacher's
BatchNorm uses each batch's statistics, as in the set's relabel (chosen over running statistics on
the validation split, BENCHMARKS.md). The student has one output per seen class (position in the
order). Only the final epoch's accuracy is reported.

Every method meets the same student initialisations and batch plans (seeded by order and step, not by
method), so differences between methods are not differences of luck.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fadrm_datasets._checks import one_of
from fadrm_datasets._io import atomic_write_json
from fadrm_datasets.continual import PEER_ORDER_SEEDS, ClassIncrementalScenario
from fadrm_datasets.layout import BuildDirectory
from fadrm_datasets.sets import FADRMDataset, HubError
from fadrm_datasets.softlabels import make_epoch_plan

from .evaluate import kd_loss, manifest_preset
from .models import build_model
from .options import BuildError
from .presets import Preset
from .progress import progress_bar
from .schedules import cosine_schedule
from .relabel import TEACHER_MODES, teacher_logits, teachers_in_mode
from .seeding import derive_seed
from .sources import EVAL_SPLITS, load_split
from .teachers import evaluate_accuracy, load_teacher, recorded_teacher_file

log = logging.getLogger(__name__)

CONTINUAL_MODES = ("fresh", "carried")


@dataclass(frozen=True)
class ContinualSettings:
    """What a continual run does beyond the preset's student protocol (recorded with the results)."""

    steps: int = 5
    orders: tuple[int, ...] = PEER_ORDER_SEEDS  # class-order seeds
    modes: tuple[str, ...] = ("fresh",)
    epochs: int = 150  # per step; sized by the benchmark's time budget (BENCHMARKS.md, "Continual learning")
    split: str = "test"  # "val": the held-out training images, for choosing settings
    teacher_mode: str = "train"  # BatchNorm on each batch's statistics, as the set's relabel; chosen on val
    previous_temperature: float = 2.0  # carried: distillation from the previous step's model
    seed: int = 0  # student initialisations and batch plans

    def __post_init__(self) -> None:
        for mode in self.modes:
            one_of("mode", mode, CONTINUAL_MODES)
        one_of("split", self.split, EVAL_SPLITS)
        one_of("teacher mode", self.teacher_mode, TEACHER_MODES)
        if self.steps <= 0 or self.epochs <= 0 or not self.orders or not self.modes:
            raise BuildError("steps and epochs must be positive, and at least one order and one mode given")


@dataclass
class ContinualSet:
    """One built set as the runner uses it."""

    method: str
    root: Path
    preset: Preset
    ipc: int
    images: torch.Tensor  # uint8 (N, C, H, W), canonical order
    targets: torch.Tensor  # int64 (N,)
    teachers: list[nn.Module]
    data_root: str


def open_set(build_dir: str | Path, device: torch.device, data_root: str | None = None) -> ContinualSet:
    """A build directory's images (checked against its manifest), preset, and teachers."""
    build = BuildDirectory(build_dir)
    manifest = build.read_manifest()
    if not manifest.get("dataset"):
        raise BuildError(f"{build.root} is not a build directory (no {build.manifest_path.name} with a dataset); "
                         "build the set first: fadrm-build DATASET --ipc N --method METHOD")
    preset = manifest_preset(manifest)
    records = manifest.get("teachers") or {}
    if not records:
        raise BuildError(f"{build.root} records no teacher in its manifest; run `fadrm-build teacher "
                         f"{preset.name}` and rebuild the set")
    # channels_last: the layout the students train in, so teacher and batch share one layout
    files = {name: recorded_teacher_file(name, record, manifest) for name, record in records.items()}
    teachers = [load_teacher(preset, name, path, device).to(memory_format=torch.channels_last)
                for name, path in files.items()]
    try:
        dataset = FADRMDataset.from_build(build.root)
    except HubError as error:  # files that do not match the manifest, or no images
        raise BuildError(str(error)) from None
    if data_root is None:
        data_root = (manifest.get("options") or {}).get("data_root", "data")
    return ContinualSet(method=str(manifest.get("method", build.root.name)), root=build.root, preset=preset,
                        ipc=int(manifest.get("ipc") or dataset.ipc), images=dataset.images_uint8(),
                        targets=torch.tensor(dataset.targets, dtype=torch.long), teachers=teachers,
                        data_root=str(data_root))


# --- one step -------------------------------------------------------------------------------------

def step_targets(teachers: list[nn.Module], x: torch.Tensor, scenario: ClassIncrementalScenario,
                 step: int) -> torch.Tensor:
    """The teachers' logits on batch ``x``, restricted to the classes seen at ``step`` (in order)."""
    return scenario.restrict(teacher_logits(teachers, x), step)


def grow_head(model: nn.Module, outputs: int) -> nn.Module:
    """``model`` with its last linear layer widened to ``outputs``; the old outputs keep their weights."""
    name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    wider = nn.Linear(head.in_features, outputs, bias=head.bias is not None).to(head.weight.device)
    with torch.no_grad():
        wider.weight[:head.out_features] = head.weight
        if head.bias is not None:
            wider.bias[:head.out_features] = head.bias
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], wider)
    return model


def train_step(model: nn.Module, images: torch.Tensor, dataset: ContinualSet, scenario: ClassIncrementalScenario,
               step: int, settings: ContinualSettings, generator: torch.Generator, device: torch.device,
               previous: nn.Module | None = None) -> nn.Module:
    """Train ``model`` on ``images`` (the step's distilled images, uint8) for ``settings.epochs`` epochs."""
    preset = dataset.preset
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.eval_lr, weight_decay=preset.eval_weight_decay)
    accumulation = max(1, preset.eval_grad_accumulation)
    batches = math.ceil(len(images) / preset.eval_batch_size)
    total_steps = max(1, settings.epochs * math.ceil(batches / accumulation))
    schedule = cosine_schedule(optimizer, total_steps)
    old_outputs = scenario.seen_count(step - 1) if previous is not None else 0
    images = images.to(device)
    model.train()
    with teachers_in_mode(dataset.teachers, settings.teacher_mode):
        for _ in range(settings.epochs):
            plan = make_epoch_plan(len(images), preset.image_size, preset.eval_batch_size,
                                   preset.relabel_crop_scale, generator)
            optimizer.zero_grad(set_to_none=True)
            for b in range(batches):
                x = plan.build_batch(images, b, preset.mean, preset.std).contiguous(memory_format=torch.channels_last)
                out = model(x)
                loss = kd_loss(out, step_targets(dataset.teachers, x, scenario, step), preset.temperature)
                if previous is not None:
                    with torch.no_grad():
                        before = previous(x)
                    loss = loss + kd_loss(out[:, :old_outputs], before, settings.previous_temperature)
                group_size = min(accumulation, batches - (b // accumulation) * accumulation)
                (loss / group_size).backward()
                if (b + 1) % accumulation == 0 or b + 1 == batches:
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
    return model


def run_order(dataset: ContinualSet, test_set, scenario: ClassIncrementalScenario, order_seed: int, mode: str,
              settings: ContinualSettings, device: torch.device, bar=None) -> list[float]:
    """Test top-1 (%) after each step of ``scenario`` for one set, one order, one mode."""
    preset = dataset.preset
    accuracies, model = [], None
    for step in range(scenario.num_steps):
        start = time.perf_counter()
        outputs = scenario.seen_count(step)
        torch.manual_seed(derive_seed(settings.seed, "continual", order_seed, step, "init"))
        previous = None
        if mode == "fresh" or model is None:
            model = build_model(preset.student, outputs, preset.channels, preset.image_size)
        else:
            previous = copy.deepcopy(model).eval().requires_grad_(False)
            model = grow_head(model, outputs)
        model = model.to(device, memory_format=torch.channels_last)
        generator = torch.Generator().manual_seed(derive_seed(settings.seed, "continual", order_seed, step, "plan"))
        images = dataset.images[torch.as_tensor(scenario.indices(dataset.targets, step))]
        train_step(model, images, dataset, scenario, step, settings, generator, device, previous)
        top1 = evaluate_accuracy(model, scenario.test_subset(test_set, step), preset, device, topk=(1,))["top1"]
        accuracies.append(round(top1, 2))
        log.info("continual %s %s order %d: step %d/%d (%d classes) %s top-1 %.2f %% (%.1f s)", dataset.method,
                 mode, order_seed, step + 1, scenario.num_steps, outputs, settings.split, top1,
                 time.perf_counter() - start)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(method=dataset.method, order=order_seed, step=step + 1, top1=f"{top1:.2f}")
    return accuracies


# --- the run --------------------------------------------------------------------------------------

def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(dataset: ContinualSet, mode: str, settings: ContinualSettings, per_order: list[dict],
              command: str, device: torch.device, seconds: float) -> dict:
    """One record: a set and a mode over every order (means and sample standard deviations over orders)."""
    steps = list(zip(*(o["per_step"] for o in per_order)))
    averages = [o["average"] for o in per_order]
    scenario = ClassIncrementalScenario.from_seed(dataset.preset.num_classes, settings.steps, per_order[0]["order"])
    return {
        "dataset": dataset.preset.name, "ipc": dataset.ipc, "steps": settings.steps, "method": dataset.method,
        "mode": mode, "orders": [o["order"] for o in per_order],
        "classes_seen": [scenario.seen_count(s) for s in range(settings.steps)],
        "per_step_mean": [round(statistics.fmean(s), 2) for s in steps],
        "per_step_std": [round(_std(list(s)), 2) for s in steps],
        "average_mean": round(statistics.fmean(averages), 2), "average_std": round(_std(averages), 2),
        "per_order": per_order, "split": settings.split, "epochs": settings.epochs,
        "student": dataset.preset.student, "teacher_mode": settings.teacher_mode,
        "teachers": len(dataset.teachers), "lr": dataset.preset.eval_lr,
        "temperature": dataset.preset.temperature, "batch_size": dataset.preset.eval_batch_size,
        "previous_temperature": settings.previous_temperature if mode == "carried" else None,
        "seed": settings.seed, "build_dir": str(dataset.root), "command": command, "device": str(device),
        "machine": f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch thread(s)"
                   + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "seconds": round(seconds, 1),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def check_sets(sets: list[ContinualSet]) -> None:
    """The sets of one run must be comparable: one dataset, one IPC, one build per method."""
    kinds = {(s.preset.name, s.ipc) for s in sets}
    if len(kinds) > 1:
        raise BuildError("the builds hold different datasets or IPCs (" + ", ".join(f"{d} ipc{i}" for d, i in
                         sorted(kinds)) + "); compare builds of one dataset and IPC per run")
    methods = [s.method for s in sets]
    for method in set(methods):
        if methods.count(method) > 1:
            raise BuildError(f"two builds of method {method} given; give one build per method per run")


def run_continual(build_dirs: list[str | Path], settings: ContinualSettings, device: torch.device,
                  data_root: str | None = None, command: str | None = None, progress: bool = True) -> list[dict]:
    """Every build x mode x order: one record per build and mode (see :func:`summarise`)."""
    if not build_dirs:
        raise BuildError("no build directory given")
    sets = [open_set(d, device, data_root) for d in build_dirs]
    check_sets(sets)
    preset = sets[0].preset
    scenarios = {seed: ClassIncrementalScenario.from_seed(preset.num_classes, settings.steps, seed)
                 for seed in settings.orders}
    # "val" (held-out training images) is for choosing settings; "test" is for reporting.
    test_set = load_split(preset, sets[0].data_root, settings.split)
    command = command if command is not None else shlex.join(["fadrm-build", *sys.argv[1:]])
    records = []
    total = len(sets) * len(settings.modes) * len(settings.orders) * settings.steps
    with progress_bar(None, "continual", enabled=progress, total=total) as bar:
        for dataset in sets:
            for mode in settings.modes:
                start, per_order = time.perf_counter(), []
                for seed, scenario in scenarios.items():
                    accuracies = run_order(dataset, test_set, scenario, seed, mode, settings, device, bar)
                    per_order.append({"order": seed, "class_order": list(scenario.order), "per_step": accuracies,
                                      "average": round(statistics.fmean(accuracies), 2)})
                records.append(summarise(dataset, mode, settings, per_order, command, device,
                                         time.perf_counter() - start))
    return records


# --- reporting ------------------------------------------------------------------------------------

RECORD_KEY = ("dataset", "ipc", "steps", "method", "mode", "split", "teacher_mode")


def read_records(path: str | Path) -> list[dict]:
    """The continual records in the JSON list at ``path`` (none when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        records = None
    if not isinstance(records, list):
        raise BuildError(f"{path} holds no list of continual records; give another --output")
    return records


def save_records(records: list[dict], path: str | Path) -> list[dict]:
    """Write ``records`` into the JSON list at ``path``, replacing earlier records of the same dataset, IPC,
    steps, method, mode, split and teacher mode (other records stay); returns the list written."""
    new_keys = {tuple(r[k] for k in RECORD_KEY) for r in records}
    kept = [r for r in read_records(path) if tuple(r.get(k) for k in RECORD_KEY) not in new_keys]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, kept + records)
    return kept + records


def format_table(records: list[dict]) -> str:
    """Per-step accuracy and the average, mean ± std over the orders, one row per method and mode."""
    header = ["method", "mode", *(f"{n} classes" for n in records[0]["classes_seen"]), "average"]
    rows = [[r["method"], r["mode"],
             *(f"{m:.2f} ± {s:.2f}" for m, s in zip(r["per_step_mean"], r["per_step_std"])),
             f"{r['average_mean']:.2f} ± {r['average_std']:.2f}"] for r in records]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows])


def plot(records: list[dict], path: str | Path) -> Path:
    """Accuracy against the number of classes seen, one line per method (mean ± std band over the orders),
    one panel per mode; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(r["mode"] for r in records))
    figure, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False, sharey=True)
    for axis, mode in zip(axes[0], modes):
        for record in (r for r in records if r["mode"] == mode):
            x, mean, std = record["classes_seen"], record["per_step_mean"], record["per_step_std"]
            axis.plot(x, mean, marker="o", label=f"{record['method']} (avg {record['average_mean']:.2f})")
            axis.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
        first = next(r for r in records if r["mode"] == mode)
        axis.set_title(f"{first['dataset']} IPC {first['ipc']}, {first['steps']} steps, {mode} "
                       f"({len(first['orders'])} orders)")
        axis.set_xlabel("classes seen")
        axis.set_xticks(first["classes_seen"])
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0][0].set_ylabel(f"{first['split']} top-1 on the seen classes (%)")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = ["CONTINUAL_MODES", "ContinualSet", "ContinualSettings", "RECORD_KEY", "check_sets", "format_table",
           "grow_head", "open_set", "plot", "read_records", "run_continual", "run_order", "save_records",
           "step_targets", "summarise", "train_step"]
