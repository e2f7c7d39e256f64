"""The build: teacher -> patches -> recover -> relabel [-> evaluate], into one build directory.

Each stage reads what the previous stage wrote, records itself in ``manifest.json``, and can be
rerun alone (``fadrm-build patches|recover|relabel|evaluate``). The manifest holds everything needed
to reproduce the set: the effective preset, every switch, the seed, the code version, per-stage
timings and the sha256 of every file. The stages sit below this module and never import it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import subprocess
import time
from pathlib import Path

import torch

from fadrm_datasets import __version__
from fadrm_datasets.layout import BuildDirectory
from fadrm_datasets.softlabels import INDEX, SoftLabelStore

from . import distributed
from .context import BuildContext, environment, open_build
from .evaluate import manifest_preset, stage_evaluate, stored_labels_fit
from .options import BuildError, BuildOptions
from .patches import check_patches, stage_patches
from .presets import Preset
from .protocols import DEFAULT_PROTOCOL, protocol_preset
from .recover import check_recover, stage_recover
from .relabel import RelabelConfig, stage_relabel, write_soft_labels
from .teachers import resolve_teachers

log = logging.getLogger(__name__)



def code_version() -> dict:
    version = {"package": __version__}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True,
                             capture_output=True, timeout=5).stdout.strip()
        version["git"] = sha or None
    except (OSError, subprocess.SubprocessError):
        version["git"] = None
    return version


def run_build(preset: Preset, options: BuildOptions, protocol: str = DEFAULT_PROTOCOL) -> BuildDirectory:
    """teacher -> patches -> recover -> relabel [-> evaluate under ``protocol``]; each stage skips finished work.

    The teachers are decided once, and a directory holding work made with other settings is refused
    before its manifest is touched.
    """
    start = time.perf_counter()
    with open_build(preset, options) as ctx:
        timings = {"teacher": round(time.perf_counter() - start, 2)}
        with distributed.main_first():  # rank 0 checks and records; the other ranks start after it
            if distributed.is_main():
                check_patches(ctx)
                check_recover(ctx)
                ctx.directory.start_manifest(dataset=preset.name, ipc=options.ipc, method=options.method,
                                             seed=options.seed, preset=preset.to_dict(),
                                             options=dataclasses.asdict(options), code_version=code_version(),
                                             environment=environment(ctx.device))
                ctx.record_teachers()
        stages = [("patches", stage_patches), ("recover", stage_recover), ("relabel", stage_relabel)]
        if preset.evaluate_by_default if options.evaluate is None else options.evaluate:
            stages.append(("evaluate", functools.partial(evaluate_stage, protocol=protocol)))
        for name, stage in stages:
            start = time.perf_counter()
            stage(ctx)
            timings[name] = round(time.perf_counter() - start, 2)
        distributed.main_only(ctx.directory.update_manifest, timings=timings)
    log.info("build done: %s (%s)", ctx.directory.root, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return ctx.directory


def protocol_labels(build_dir: str | Path, protocol: str, epochs: int | None = None, device="cpu",
                    preset: Preset | None = None) -> Path:
    """The soft-label store ``protocol`` trains on: the build's own when its batches, crops, teacher mode
    and epochs fit, else the protocol's store (``BuildDirectory.protocol_soft_labels``), relabelled now by
    the build's teachers with the build's seed for ``epochs`` epochs (the protocol's by default).

    Stored, not live (DD-Ranking labels live): the same teacher outputs on the same plans, computed once
    for every student seed, resumable and verified by shard hashes like the build's own store, which is
    never touched. A longer run later extends the store, keeping its finished shards."""
    build = BuildDirectory(Path(build_dir))
    manifest = build.read_manifest()
    run = protocol_preset(protocol, preset or manifest_preset(manifest), int(manifest.get("ipc", 1)))
    epochs = epochs or run.preset.eval_epochs
    if run.is_default or not (build.soft_labels / INDEX).is_file():  # evaluate_build says what is missing
        return build.soft_labels
    stored = SoftLabelStore.open(build.soft_labels)
    if stored_labels_fit(stored, run, epochs):
        return build.soft_labels
    ipc = int(manifest["ipc"])
    options = BuildOptions(**{**manifest["options"], "device": str(device)})
    teachers = resolve_teachers(manifest_preset(manifest).for_ipc(ipc), options, torch.device(device))
    ids = [f"{name}@{weights}" for name, weights in teachers.weights_ids().items()]
    if ids != stored.teachers:
        raise BuildError(f"the build's soft labels were made by {', '.join(stored.teachers)}, but its teachers are "
                         f"now {', '.join(ids)}; relabel the build before evaluating under protocol {protocol}")
    config = RelabelConfig.from_preset(run.preset, epochs=epochs, teacher_mode=run.teacher_mode or stored.teacher_mode,
                                       seed=int(manifest.get("seed", 0))).every_epoch()
    log.info("evaluate: protocol %s relabels into its own store (batch %d, crops %s, teacher mode %s, %d epochs)",
             protocol, config.batch_size, config.crop_scale, config.teacher_mode, config.epochs)
    target = build.protocol_soft_labels(protocol)
    write_soft_labels(teachers.modules(), ids, build.load_images(run.preset.channels)[0], run.preset, target,
                      config, device, progress=False)
    return target


def evaluate_stage(ctx: BuildContext, protocol: str) -> dict:
    """The build's evaluation under ``protocol``, on the labels it trains on."""
    labels = protocol_labels(ctx.directory.root, protocol, device=ctx.device, preset=ctx.preset)
    return stage_evaluate(ctx, protocol, labels)


__all__ = ["code_version", "evaluate_stage", "protocol_labels", "run_build"]
