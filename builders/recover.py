"""FADRM recover: synthesise images by matching a teacher's BatchNorm statistics.

The loss on a batch of synthetic images x with labels y is

    CE(teacher(aug(x)), y) + r_bn * sum_l w_l (||mu_l(aug(x)) - running_mean_l||_2
                                               + ||var_l(aug(x)) - running_var_l||_2)

with w_l = ``first_bn_multiplier`` for the first BN layer and 1 elsewhere, optimised with Adam
on the pixels. FADRM's pieces, each a named part of this module:

- MRO (multi-resolution optimisation), :func:`stage_schedule`: the optimisation runs in stages
  whose resolution follows the preset; between stages the images are resampled (bilinear).
- ARC (data-level residual connection), :func:`arc_merge`: between stages,
  ``x = alpha * x + (1 - alpha) * Resample(P_s)`` pulls the images back towards their real patch.
- AMP, :class:`Precision`: fp16 autocast + GradScaler (on CUDA by default; on the CPU only when asked
  for, to test its path); BN statistics and losses in fp32.
- FADRM+: several teachers, cycled round-robin one per step.

Work is cut into units (ipc_id, block of classes). Each unit's randomness comes from a generator
seeded by (seed, ipc_id, block), so a unit's output does not depend on which process runs it or
in which order; a unit's PNGs are written atomically once it finishes and finished units are
skipped, so a killed build resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fadrm_datasets._checks import one_of
from fadrm_datasets._io import cached_sha256
from fadrm_datasets.augment import resized_crop, sample_crop_box
from fadrm_datasets.layout import BuildDirectory, decode_png, image_relpath, own_file

from . import distributed
from .context import BuildContext, environment
from .imaging import normalize, pixel_bounds, save_png, to_uint8
from .methods import INITS
from .options import BuildError, BuildFailed
from .patches import Patches
from .presets import Preset
from .progress import progress_bar
from .schedules import cosine_factor
from .seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoverConfig:
    """The recover settings of one build: the preset's, with the CLI's switches applied."""

    stages: tuple[tuple[int, int], ...]  # (resolution, iterations) per stage
    output_size: int
    lr: float
    adam_betas: tuple[float, float]
    r_bn: float
    first_bn_multiplier: float
    alpha: float
    jitter: int
    crop_scale: tuple[float, float]
    arc: bool = True
    amp: bool = False
    init: str = "patches"

    @classmethod
    def from_preset(cls, preset: Preset, *, arc: bool = True, mro: bool = True,
                    amp: bool = False, init: str = "patches") -> "RecoverConfig":
        one_of("init", init, INITS)
        # The fields a preset has too (lr, Adam's betas, the loss weights, alpha, the augmentation) are the
        # preset's, by name; a field of both that is set here as well would be a TypeError, not a silent pick.
        preset_fields = {f.name for f in dataclasses.fields(preset)}
        shared = {f.name: getattr(preset, f.name) for f in dataclasses.fields(cls) if f.name in preset_fields}
        return cls(stages=stage_schedule(preset, mro=mro, arc=arc), output_size=preset.image_size, arc=arc, amp=amp,
                   init=init, **shared)

    @property
    def total_iterations(self) -> int:
        return sum(iterations for _, iterations in self.stages)


# --- MRO --------------------------------------------------------------------------------------

def stage_schedule(preset: Preset, *, mro: bool = True, arc: bool = True) -> tuple[tuple[int, int], ...]:
    """(resolution, iterations) per stage.

    With MRO off every stage runs at the output size. With MRO and ARC both off, stage
    boundaries would only reset Adam, which single-stage methods (SRe2L) do not do, so the
    stages collapse into one of the same total length.
    """
    resolutions = preset.stage_resolutions if mro else (preset.image_size,) * len(preset.stage_resolutions)
    stages = tuple(zip(resolutions, preset.stage_iterations))
    if not mro and not arc:
        return ((preset.image_size, preset.total_iterations),)
    return stages


def resample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resampling to ``size`` x ``size`` (identity when already that size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


# --- ARC --------------------------------------------------------------------------------------

def arc_merge(x: torch.Tensor, patches: torch.Tensor, alpha: float) -> torch.Tensor:
    """Data-level residual connection: ``alpha * x + (1 - alpha) * Resample(P_s)``."""
    return alpha * x + (1.0 - alpha) * resample(patches, x.shape[-1])


# --- AMP --------------------------------------------------------------------------------------

class Precision:
    """fp16 autocast + loss scaling when enabled, plain fp32 otherwise.

    The autocast device type and the scaler's device are the unit's device: on CUDA AMP saves time and
    memory; on the CPU fp16 is many times slower than fp32, and AMP there serves to test this path.
    """

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if enabled else None
        self.skipped_steps = 0
        self.loss_scale = self.scaler.get_scale() if enabled else None

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=torch.float16, enabled=self.enabled)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)  # not taken when the scaled gradients hold an inf or a NaN,
        self.scaler.update()  # and then alone the scale is lowered
        scale = self.scaler.get_scale()  # a host sync; scaler.step has made one this step already
        if scale < self.loss_scale:
            self.skipped_steps += 1
        self.loss_scale = scale


# --- BN-statistics matching -------------------------------------------------------------------

class BNStatisticsLoss:
    """Forward hooks on a model's BatchNorm layers that measure the distance of each batch's
    channel mean and (biased) variance to the layer's running statistics, in fp32."""

    def __init__(self, model: nn.Module, first_multiplier: float = 1.0):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layers: BN-statistics matching needs them")
        self.weights = [first_multiplier] + [1.0] * (len(self.layers) - 1)
        self.terms: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, module: nn.Module, inputs, output) -> None:
        x = inputs[0].float()
        dims = [0] + list(range(2, x.ndim))
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        self.terms.append(torch.linalg.vector_norm(mean - module.running_mean.float())
                          + torch.linalg.vector_norm(var - module.running_var.float()))

    def pop(self) -> torch.Tensor:
        """The weighted sum over layers for the last forward pass, and reset."""
        if len(self.terms) != len(self.layers):
            raise RuntimeError(f"expected {len(self.layers)} BN terms, got {len(self.terms)}")
        loss = sum(w * t for w, t in zip(self.weights, self.terms))
        self.terms = []
        return loss

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# --- one unit ---------------------------------------------------------------------------------

class NonFiniteError(ArithmeticError):
    """A unit's loss or pixels became NaN or inf; the unit is abandoned, the others go on."""


def check_finite(x: torch.Tensor, losses: list[torch.Tensor], amp: bool, first_step: int) -> None:
    """Once per stage (one host sync): the pixels must be finite, and so must the losses, except the
    overflowed fp16 steps that AMP's loss scaler skips on purpose."""
    if not losses:
        return
    finite = torch.isfinite(torch.stack(losses))
    required = finite[-1:] if amp else finite
    if not bool(required.all()) or not bool(torch.isfinite(x).all()):
        bad = finite.logical_not().nonzero()
        at = first_step + (int(bad[0, 0]) if len(bad) else len(losses) - 1)
        raise NonFiniteError(f"the loss or the pixels became NaN or inf by step {at}")


def augment(x: torch.Tensor, config: RecoverConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-step augmentation, one draw for the whole batch: random roll (jitter), random
    resized crop back to the current resolution, horizontal flip."""
    size = x.shape[-1]
    if config.jitter > 0:
        dy, dx = torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    box = sample_crop_box(size, size, config.crop_scale, generator)
    x = resized_crop(x, box, size)
    if torch.rand(1, generator=generator).item() < 0.5:
        x = x.flip(3)
    return x


@dataclass
class UnitResult:
    images: torch.Tensor  # uint8 (n, C, H, W)
    ce: float
    bn: float
    seconds: float
    peak_memory_mb: float
    losses: list[float] = field(default_factory=list)
    loss_scale: float | None = None  # AMP's loss scale at the end; None in fp32
    skipped_steps: int = 0  # AMP's steps skipped for an overflow (the pixels did not move on them)


def recover_unit(teachers: Sequence[nn.Module], labels: torch.Tensor, patches: torch.Tensor,
                 preset: Preset, config: RecoverConfig, seed: int,
                 device: torch.device = torch.device("cpu")) -> UnitResult:
    """Synthesise one image per label, starting from ``patches`` (uint8, one per label)."""
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    generator = torch.Generator().manual_seed(seed)  # CPU draws: identical on every device
    precision = Precision(config.amp, device)
    losses_bn = [BNStatisticsLoss(t, config.first_bn_multiplier) for t in teachers]
    low, high = pixel_bounds(preset, device)
    labels = labels.to(device)

    real = normalize(patches.to(device), preset)
    if config.init == "gaussian":
        real = torch.randn(real.shape, generator=generator).to(device)
    x = resample(real, config.stages[0][0])

    total, step, history = config.total_iterations, 0, []
    try:
        for index, (resolution, iterations) in enumerate(config.stages):
            first = step
            if index > 0:
                x = resample(x, resolution)  # MRO
                if config.arc:
                    x = arc_merge(x, real, config.alpha)
            x = x.detach().clamp(low, high).requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=config.lr, betas=config.adam_betas)  # reset per stage
            for _ in range(iterations):
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * cosine_factor(step, total)
                teacher_index = step % len(teachers)  # FADRM+: round-robin
                with precision.autocast():
                    logits = teachers[teacher_index](augment(x, config, generator))
                ce = F.cross_entropy(logits.float(), labels)
                bn = losses_bn[teacher_index].pop()
                loss = ce + config.r_bn * bn
                optimizer.zero_grad(set_to_none=True)
                precision.step(loss, optimizer)
                with torch.no_grad():
                    x.clamp_(low, high)
                history.append(loss.detach())  # read once per stage (AMP's scaler syncs each step anyway)
                step += 1
            check_finite(x, history[first:], config.amp, first)
    finally:
        for hooks in losses_bn:
            hooks.remove()

    images = to_uint8(resample(x.detach(), config.output_size), preset).cpu()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # the process's high-water mark: an upper bound for this unit
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    losses = torch.stack(history).float().cpu().tolist() if history else []
    return UnitResult(images, ce.item(), bn.item(), time.perf_counter() - start, peak, losses,
                      precision.loss_scale, precision.skipped_steps)


# --- the set: units, files, resume ------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    ipc_id: int
    block: int
    classes: tuple[int, ...]

    def seed(self, run_seed: int) -> int:
        return derive_seed(run_seed, "recover", self.ipc_id, self.block)


def plan_units(preset: Preset, ipc: int) -> list[Unit]:
    blocks = [tuple(range(start, min(start + preset.class_block, preset.num_classes)))
              for start in range(0, preset.num_classes, preset.class_block)]
    return [Unit(ipc_id, b, classes) for ipc_id in range(ipc) for b, classes in enumerate(blocks)]


def unit_done(build: BuildDirectory, unit: Unit, preset: Preset, recorded: dict[str, str]) -> bool:
    """A unit is finished when each of its images is there and sound: a regular file of the build (a
    symbolic link is never trusted: the unit is made again, which replaces it) matching the sha256 the
    manifest recorded for it, or, written since the last record (a killed run), decoding to the right size."""
    for label in unit.classes:
        rel = image_relpath(label, unit.ipc_id)
        path = own_file(build.root, rel)
        if path is None:
            return False
        if rel in recorded:
            sound = cached_sha256(path) == recorded[rel]
        else:
            try:
                sound = tuple(decode_png(path, preset.channels).shape) == (preset.channels, preset.image_size,
                                                                           preset.image_size)
            except (OSError, SyntaxError, ValueError):  # what PIL raises for a damaged PNG
                sound = False
        if not sound:
            log.warning("recover: %s is damaged or changed; its unit is made again", rel)
            return False
    return True


def recover_set(teachers: Sequence[nn.Module], patches: torch.Tensor, preset: Preset,
                config: RecoverConfig, build: BuildDirectory, ipc: int, seed: int,
                device: torch.device = torch.device("cpu"), rank: int = 0, world_size: int = 1,
                units: Sequence[Unit] | None = None) -> dict:
    """Run every unfinished unit of this rank's share; returns per-unit statistics.

    ``patches`` is uint8 (num_classes, ipc, C, H, W). Units are sharded round-robin by rank, so
    ``torchrun`` processes split the work and write disjoint files.
    """
    units = list(units if units is not None else plan_units(preset, ipc))[rank::world_size]
    recorded = build.read_manifest().get("files", {})
    todo = [u for u in units if not unit_done(build, u, preset, recorded)]
    log.info("recover: %d units (%d already done), %d iterations each over stages %s",
             len(units), len(units) - len(todo), config.total_iterations, list(config.stages))
    stats = {}
    for unit in progress_bar(todo, "recover", unit="unit"):
        labels = torch.tensor(unit.classes)
        try:
            result = recover_unit(teachers, labels, patches[labels, unit.ipc_id], preset, config,
                                  unit.seed(seed), device)
        except NonFiniteError as error:
            log.error("unit ipc_id=%d block=%d failed: %s; its images are not written, the other units go on",
                      unit.ipc_id, unit.block, error)
            stats[f"{unit.ipc_id}/{unit.block}"] = {"failed": str(error)}
            continue
        for label, image in zip(unit.classes, result.images):
            save_png(build.image_path(label, unit.ipc_id), image)
        stats[f"{unit.ipc_id}/{unit.block}"] = unit_stats(result)
        scaling = "" if result.loss_scale is None else \
            f", loss scale {result.loss_scale:g}, {result.skipped_steps} step(s) skipped for overflow"
        log.info("unit ipc_id=%d block=%d: ce %.3f bn %.3f, %.1f s, peak %.0f MB%s", unit.ipc_id,
                 unit.block, result.ce, result.bn, result.seconds, result.peak_memory_mb, scaling)
    return stats


def unit_stats(result: UnitResult) -> dict:
    """What the manifest keeps of a finished unit; with AMP, its loss scale and skipped steps too."""
    stats = {"ce": round(result.ce, 4), "bn": round(result.bn, 4), "seconds": round(result.seconds, 2),
             "peak_memory_mb": round(result.peak_memory_mb, 1)}
    if result.loss_scale is not None:
        stats.update(loss_scale=result.loss_scale, skipped_steps=result.skipped_steps)
    return stats


# --- the build stage ----------------------------------------------------------------------------

def recover_settings(ctx: BuildContext, patches_sha256: str | None) -> tuple[RecoverConfig, dict]:
    """The recover config and the settings recorded with the images, as the manifest stores them."""
    options = ctx.options
    config = RecoverConfig.from_preset(ctx.preset, arc=options.arc, mro=options.mro, amp=options.amp,
                                       init=options.init)
    settings = {"config": dataclasses.asdict(config), "seed": options.seed, "teachers": list(ctx.teachers.names),
                "teacher_weights": ctx.teachers.weights_ids(), "patches_sha256": patches_sha256}
    return config, json.loads(json.dumps(settings))  # tuples become lists, as in the manifest


def check_recover(ctx: BuildContext, patches_sha256: str | None = None) -> None:
    """Refuse to add images made with other settings to a directory that holds some (checked before
    anything is written; without ``patches_sha256`` the patches are not compared)."""
    build = ctx.directory
    previous = build.read_manifest().get("stages", {}).get("recover", {}).get("settings")
    if previous is None or not ctx.options.spec.optimises or not build.scan_images():
        return
    _, settings = recover_settings(ctx, patches_sha256)
    previous = {"teacher_weights": settings["teacher_weights"], **previous}  # recorded before the weights were
    if patches_sha256 is None:
        previous["patches_sha256"] = None
    if previous != settings:
        what = "other teacher weights" if previous["teacher_weights"] != settings["teacher_weights"] else \
            "other recover settings"
        raise BuildError(f"{build.root} holds images made with {what}; pass --build-dir to build elsewhere, or "
                         "delete its images/ to start over")


def stage_recover(ctx: BuildContext) -> dict:
    build, options, preset = ctx.directory, ctx.options, ctx.preset
    if not build.patches.is_file():
        raise BuildError(f"no patches in {build.root}; run `fadrm-build patches {options.dataset} "
                         f"--ipc {options.ipc}` first")
    patches = Patches.load(build.patches)
    wanted = options.ipc * options.spec.patches_per_image(preset.methods)
    if patches.ipc != wanted:
        raise BuildError(f"{build.patches} holds {patches.ipc} patches per class, not {wanted}")
    start = time.perf_counter()
    if not options.spec.optimises:  # the images are made from the patches by the method (written by rank 0)
        record = {"method": options.method, "complete": True}
        with distributed.main_first():
            if distributed.is_main():
                for label in range(preset.num_classes):
                    images = options.spec.assemble(patches.images[label], preset.methods, preset.image_size)
                    for ipc_id in range(options.ipc):
                        save_png(build.image_path(label, ipc_id), images[ipc_id])
                record["seconds"] = round(time.perf_counter() - start, 2)
                build.record_stage("recover", record, written=build.image_files(preset.num_classes, options.ipc))
        return record
    patches_sha256 = cached_sha256(build.patches)  # check_patches hashed it already
    check_recover(ctx, patches_sha256)
    config, settings = recover_settings(ctx, patches_sha256)
    if config.amp and ctx.device.type == "cpu":
        log.warning("recover: AMP on the CPU is many times slower than fp32; it is there to test AMP's path "
                    "(drop --amp for a real build)")
    previous = build.read_manifest().get("stages", {}).get("recover", {})
    env = environment(ctx.device)
    if previous.get("environment") not in (None, env):
        log.warning("recover: units made now (%s) will not be bit-identical to those made before (%s); see "
                    "RELIABILITY.md, Determinism", env, previous["environment"])
    distributed.main_only(build.record_stage, "recover", {**previous, "settings": settings, "complete": False})
    # Under torchrun each rank makes its share of the units; the others' statistics come by gather.
    units = recover_set(ctx.teachers.modules(), patches.images, preset, config, build, options.ipc,
                        options.seed, ctx.device, distributed.rank(), distributed.world_size())
    units = {name: stats for share in distributed.gather(units) for name, stats in share.items()}
    seconds = round(time.perf_counter() - start, 2)
    failed = sorted(name for name, stats in units.items() if "failed" in stats)
    done = not failed and len(build.scan_images()) == preset.num_classes * options.ipc
    unit_stats = previous.get("units", {})
    unit_stats.update(units)
    record = {"settings": settings, "complete": done, "seconds": seconds, "units": unit_stats,
              "units_total": len(plan_units(preset, options.ipc)), "environment": env}
    distributed.main_only(build.record_stage, "recover", record,
                          written=build.image_files(preset.num_classes, options.ipc))
    if failed:
        raise BuildFailed(f"recover: {len(failed)} unit(s) failed (ipc_id/block {', '.join(failed[:5])}): "
                         f"{units[failed[0]]['failed']}; the finished units are kept. Lower --lr or --r-bn, or "
                         "check the teacher, then run the same command to retry them")
    log.info("recover: %d units in %.1f s -> %s", len(units), seconds, build.images)
    return record


__all__ = ["BNStatisticsLoss", "NonFiniteError", "Precision", "RecoverConfig", "Unit", "UnitResult", "arc_merge", "augment",
           "check_finite", "check_recover", "plan_units", "recover_set", "recover_settings", "recover_unit", "resample",
           "stage_recover", "stage_schedule", "unit_done", "unit_stats"]
