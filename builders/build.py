"""The build: teacher -> patches -> recover, into one build directory with a manifest.

Each stage reads what the previous stage wrote, records itself in ``manifest.json``, and can be
rerun alone. The manifest holds everything needed to reproduce the set: the effective preset,
every switch, the seed, the code version, per-stage timings and the sha256 of every file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fadrm_datasets import __version__
from fadrm_datasets._io import atomic_write_json, read_safetensors_metadata, sha256_file

from .imaging import save_png
from .models import build_model
from .patches import Patches, select_patches
from .presets import Preset
from .recover import RecoverConfig, plan_units, recover_set
from .sources import load_split
from .teachers import (TeacherError, check_cached_recipe, load_teacher, read_teacher_metadata, recipe_metadata,
                       save_teacher, teacher_path, train_teacher)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PATCHES = "patches.safetensors"

# Methods are bundles of recover switches; explicit switches override them.
METHODS = {
    "fadrm": dict(plus=False, arc=True, mro=True, init="patches"),
    "fadrm+": dict(plus=True, arc=True, mro=True, init="patches"),
    "sre2l": dict(plus=False, arc=False, mro=False, init="gaussian"),
    "random-real": dict(plus=False, arc=False, mro=False, init="patches"),
}


class BuildError(RuntimeError):
    """A build cannot go on; the message says what to do."""


@dataclass(frozen=True)
class BuildOptions:
    """Everything a user chose for one build (recorded verbatim in the manifest)."""

    dataset: str
    ipc: int
    method: str = "fadrm"
    seed: int = 0
    build_root: str = "build"
    data_root: str = "data"
    download: bool = False
    device: str = "cpu"
    plus: bool = False
    arc: bool = True
    mro: bool = True
    amp: bool = False
    init: str = "patches"
    difficulty: str = "medium"
    teacher: str | None = None  # overrides the preset's FADRM teacher
    teacher_weights: str | None = None
    build_dir: str | None = None
    evaluate: bool | None = None  # train and test a student after relabel; None: preset.evaluate_by_default

    @property
    def directory(self) -> Path:
        if self.build_dir:
            return Path(self.build_dir)
        suffix = "" if self.method == "fadrm" else f"-{self.method}"
        return Path(self.build_root) / self.dataset / f"ipc{self.ipc}{suffix}"

    @property
    def teachers_dir(self) -> Path:
        # Shared by every build of the dataset: a teacher is trained once, not once per IPC.
        return Path(self.build_root) / self.dataset / "teachers"

    def teacher_names(self, preset: Preset) -> tuple[str, ...]:
        if self.plus:
            return preset.teachers_plus
        return (self.teacher or preset.teacher,)


def code_version() -> dict:
    version = {"package": __version__}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True,
                             capture_output=True, timeout=5).stdout.strip()
        version["git"] = sha or None
    except (OSError, subprocess.SubprocessError):
        version["git"] = None
    return version


class BuildDirectory:
    """Paths and manifest of one build (``build/<dataset>/ipc<N>``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.images = self.root / "images"
        self.soft_labels = self.root / "soft_labels"
        self.patches = self.root / PATCHES
        self.manifest_path = self.root / MANIFEST

    def read_manifest(self) -> dict:
        if not self.manifest_path.is_file():
            return {}
        return json.loads(self.manifest_path.read_text())

    def update_manifest(self, **sections) -> dict:
        manifest = self.read_manifest()
        manifest.update(sections)
        manifest["files"] = self.file_hashes()
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def record_stage(self, stage: str, record: dict) -> dict:
        stages = self.read_manifest().get("stages", {})
        stages[stage] = record
        return self.update_manifest(stages=stages)

    def file_hashes(self) -> dict[str, str]:
        hashes = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.name != MANIFEST and not path.name.startswith("."):
                hashes[path.relative_to(self.root).as_posix()] = _cached_sha256(path)
        return hashes


# The manifest is rewritten after every stage; files that did not change are not hashed again.
_HASHES: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BuildError("--device cuda asked for, but PyTorch sees no CUDA device; use --device cpu")
    return device


def effective_preset(preset: Preset, **overrides) -> Preset:
    """The preset with CLI overrides (None means keep) applied."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return preset.replace(**changes) if changes else preset


# --- stages -----------------------------------------------------------------------------------

def stage_teacher(preset: Preset, options: BuildOptions, device: torch.device,
                  names: tuple[str, ...] | None = None, retrain: bool = False, announce: bool = True) -> dict:
    """Make sure each teacher exists: pretrained, given, or trained and cached. ``announce=False``
    logs a cached teacher at debug level (the later stages that only check the weights)."""
    names = names or options.teacher_names(preset)
    for name in names:  # fail on a bad name before any download or training
        build_model(name, preset.num_classes, preset.channels, preset.image_size)
    records = {}
    for name in names:
        path = teacher_path(options.teachers_dir, name, preset, options.ipc)
        if options.teacher_weights or preset.teacher_recipe is None:
            load_teacher(preset, name, options.teachers_dir, _weights(options), device)  # check it loads
            records[name] = {"source": _given_source(options, name)}
            continue
        if path.is_file() and not retrain:
            meta = read_teacher_metadata(path)
            check_cached_recipe(path, meta, preset, options.ipc)
            log.log(logging.INFO if announce else logging.DEBUG, "teacher %s: cached at %s (test top-1 %s %%)",
                    name, path, meta.get("test_top1"))
        else:
            recipe_preset = preset.for_ipc(options.ipc)
            log.info("teacher %s: training with the %s recipe (%d epochs)", name, preset.name,
                     recipe_preset.teacher_recipe.epochs)
            train = load_split(preset, options.data_root, "train", options.download)
            test = load_split(preset, options.data_root, "test", options.download)
            model, metrics = train_teacher(recipe_preset, name, train, test, seed=options.seed, device=device)
            meta = {"arch": name, "dataset": preset.name, "test_top1": f"{metrics['top1']:.2f}",
                    "test_top5": f"{metrics['top5']:.2f}", "epochs": metrics["epochs"],
                    "seed": options.seed, "seconds": metrics["seconds"],
                    "recipe": recipe_metadata(recipe_preset.teacher_recipe)}
            save_teacher(path, model, meta)
        records[name] = {"source": str(path), "sha256": _cached_sha256(path), **meta}
    return records


def _weights(options: BuildOptions) -> Path | None:
    return Path(options.teacher_weights) if options.teacher_weights else None


def _given_source(options: BuildOptions, name: str) -> str:
    """Where a teacher that is not trained here comes from: the user's file, or torchvision."""
    return options.teacher_weights or f"torchvision:{name}"


def weights_by_name(records: dict, names) -> dict[str, str]:
    """name -> sha256 of each teacher's weights file (or, for given and pretrained ones, their source),
    from ``stage_teacher``'s records: what resumed stages compare."""
    return {name: records[name].get("sha256") or records[name]["source"] for name in names}


def load_teachers(preset: Preset, options: BuildOptions, device: torch.device) -> list:
    return [load_teacher(preset, name, options.teachers_dir, _weights(options), device, options.ipc)
            for name in options.teacher_names(preset)]


def teacher_weights(preset: Preset, options: BuildOptions, device: torch.device,
                    names: tuple[str, ...]) -> dict[str, str]:
    """``weights_by_name`` for stages that only check the weights, so work made with other weights is
    never continued. Given and pretrained weights are named by their source, not loaded again."""
    if options.teacher_weights or preset.teacher_recipe is None:
        return {name: _given_source(options, name) for name in names}
    return weights_by_name(stage_teacher(preset, options, device, names, announce=False), names)


def stage_patches(preset: Preset, options: BuildOptions, device: torch.device) -> Patches:
    """Select and save the real patches (reused when the file exists)."""
    build = BuildDirectory(options.directory)
    # The random-real baseline draws whole images at random: no teacher chooses them.
    chooser = {} if options.method == "random-real" else \
        teacher_weights(preset, options, device, options.teacher_names(preset)[:1])
    if build.patches.is_file():
        recorded = read_safetensors_metadata(build.patches).get("teacher_weights")
        if recorded is not None and json.loads(recorded) != chooser:
            raise BuildError(f"{build.patches} was selected with other teacher weights; pass --build-dir to "
                             "build elsewhere, or delete it and images/ to start over")
        log.info("patches: reusing %s", build.patches)
        return Patches.load(build.patches)
    start = time.perf_counter()
    train = load_split(preset, options.data_root, "distill", options.download)
    build.update_manifest(classes=list(train.classes))
    if options.method == "random-real":
        # Whole random images: the baseline is a random real subset, not crops of it.
        preset = preset.replace(patch_crop_scale=(1.0, 1.0))
        teacher, difficulty = None, "random"
    else:
        teacher, difficulty = load_teachers(preset, options, device)[0], options.difficulty
    patches = select_patches(preset, train, teacher, options.ipc, difficulty, options.seed, device)
    patches.save(build.patches, {"difficulty": difficulty, "seed": options.seed, "ipc": options.ipc,
                                 "teacher_weights": json.dumps(chooser)})
    build.record_stage("patches", {"difficulty": difficulty, "seconds": round(time.perf_counter() - start, 2),
                                   "mean_teacher_ce": round(patches.cross_entropy.mean().item(), 4)})
    return patches


def stage_recover(preset: Preset, options: BuildOptions, device: torch.device) -> dict:
    build = BuildDirectory(options.directory)
    if not build.patches.is_file():
        raise BuildError(f"no patches in {build.root}; run `fadrm-build patches {options.dataset} "
                         f"--ipc {options.ipc}` first")
    patches = Patches.load(build.patches)
    if patches.ipc != options.ipc:
        raise BuildError(f"{build.patches} holds {patches.ipc} patches per class, not {options.ipc}")
    start = time.perf_counter()
    if options.method == "random-real":  # the images are the patches themselves
        for label in range(preset.num_classes):
            for ipc_id in range(options.ipc):
                save_png(build.images / f"{label:05d}" / f"{ipc_id:05d}.png", patches.images[label, ipc_id])
        record = {"method": "random-real", "seconds": round(time.perf_counter() - start, 2)}
        build.record_stage("recover", record)
        return record
    config = RecoverConfig.from_preset(preset, arc=options.arc, mro=options.mro, amp=options.amp,
                                       init=options.init)
    names = options.teacher_names(preset)
    settings = {"config": dataclasses.asdict(config), "seed": options.seed, "teachers": list(names),
                "teacher_weights": teacher_weights(preset, options, device, names),
                "patches_sha256": sha256_file(build.patches)}
    settings = json.loads(json.dumps(settings))  # as the manifest stores it: tuples become lists
    previous = build.read_manifest().get("stages", {}).get("recover", {}).get("settings")
    if previous is not None and "teacher_weights" not in previous:  # recorded before the weights were
        previous = {**previous, "teacher_weights": settings["teacher_weights"]}
    if previous is not None and previous != settings and build.images.exists():
        what = "other teacher weights" if previous["teacher_weights"] != settings["teacher_weights"] else \
            "other recover settings"
        raise BuildError(f"{build.root} holds images made with {what}; "
                         "pass --build-dir to build elsewhere, or delete its images/ to start over")
    build.record_stage("recover", {"settings": settings, "complete": False})
    teachers = load_teachers(preset, options, device)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    units = recover_set(teachers, patches.images, preset, config, build.images, options.ipc,
                        options.seed, device, rank, world)
    seconds = round(time.perf_counter() - start, 2)
    done = sum(1 for _ in build.images.rglob("*.png")) == preset.num_classes * options.ipc
    unit_stats = build.read_manifest().get("stages", {}).get("recover", {}).get("units", {})
    unit_stats.update(units)
    record = {"settings": settings, "complete": done, "seconds": seconds, "units": unit_stats,
              "units_total": len(plan_units(preset, options.ipc))}
    build.record_stage("recover", record)
    log.info("recover: %d units in %.1f s -> %s", len(units), seconds, build.images)
    return record


def run_build(preset: Preset, options: BuildOptions) -> BuildDirectory:
    """teacher -> patches -> recover -> relabel [-> evaluate]; each stage skips finished work."""
    device = resolve_device(options.device)
    build = BuildDirectory(options.directory)
    build.root.mkdir(parents=True, exist_ok=True)
    build.update_manifest(dataset=preset.name, ipc=options.ipc, method=options.method,
                          seed=options.seed, preset=preset.to_dict(), options=dataclasses.asdict(options),
                          code_version=code_version(), format_version=1)
    # relabel and evaluate import this module, hence the late imports.
    from .evaluate import stage_evaluate
    from .relabel import stage_relabel

    def teachers_stage(preset, options, device):
        records = stage_teacher(preset, options, device)
        build.update_manifest(teachers=records, teachers_dir=str(options.teachers_dir))

    stages = [("teacher", teachers_stage), ("patches", stage_patches), ("recover", stage_recover),
              ("relabel", stage_relabel)]
    if preset.evaluate_by_default if options.evaluate is None else options.evaluate:
        stages.append(("evaluate", stage_evaluate))
    timings = {}
    for name, stage in stages:
        start = time.perf_counter()
        stage(preset, options, device)
        timings[name] = round(time.perf_counter() - start, 2)
    build.update_manifest(timings=timings)
    log.info("build done: %s (%s)", build.root,
             ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return build


__all__ = ["BuildDirectory", "BuildError", "BuildOptions", "METHODS", "TeacherError", "run_build",
           "stage_patches", "stage_recover", "stage_teacher", "effective_preset", "resolve_device"]
