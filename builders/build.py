"""The build: teacher -> patches -> recover -> relabel [-> evaluate], into one build directory.

Each stage reads what the previous stage wrote, records itself in ``manifest.json``, and can be
rerun alone (``fadrm-build patches|recover|relabel|evaluate``). The manifest holds everything needed
to reproduce the set: the effective preset, every switch, the seed, the code version, per-stage
timings and the sha256 of every file. The stages sit below this module and never import it.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from pathlib import Path

from fadrm_datasets import __version__
from fadrm_datasets.layout import BuildDirectory

from . import distributed
from .context import environment, open_build
from .evaluate import stage_evaluate
from .options import BuildOptions
from .patches import check_patches, stage_patches
from .presets import Preset
from .recover import check_recover, stage_recover
from .relabel import stage_relabel

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


def run_build(preset: Preset, options: BuildOptions) -> BuildDirectory:
    """teacher -> patches -> recover -> relabel [-> evaluate]; each stage skips finished work.

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
            stages.append(("evaluate", stage_evaluate))
        for name, stage in stages:
            start = time.perf_counter()
            stage(ctx)
            timings[name] = round(time.perf_counter() - start, 2)
        distributed.main_only(ctx.directory.update_manifest, timings=timings)
    log.info("build done: %s (%s)", ctx.directory.root, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return ctx.directory


__all__ = ["code_version", "run_build"]
