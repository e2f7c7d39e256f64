"""FKD relabel: per-epoch augmentation plans and the teacher's outputs on them, as safetensors shards.

For every epoch ``e`` a plan is drawn from ``derive_seed(seed, "relabel", e)`` (so it depends on
neither the shard size nor the order in which epochs are computed): the sample order, batches of
``preset.relabel_batch_size``, a RandomResizedCrop box and a flip bit per sample, and per batch a
CutMix partner permutation, lam ~ Beta(1, 1) and a box. The teachers see each batch exactly as the
student will see it (``fadrm_datasets.softlabels.apply_plan`` builds both), and the average of
their logits is stored, dense or top-k + the mean of the rest, float16 or int8 with a per-row scale.
Only the first ``cycle`` epochs may be stored, for a student to reuse in turn over all its epochs.
The layout is described in ``fadrm_datasets/softlabels.py``.

Shards hold many epochs each and are written atomically; a shard already on disk that was made
with the same settings is skipped, so an interrupted relabel resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from fadrm_datasets._checks import one_of
from fadrm_datasets._io import (atomic_write_bytes, atomic_write_json, cached_sha256, fingerprint_of,
                                read_safetensors_metadata, safetensors_bytes)
from fadrm_datasets.augment import CROP_RATIO
from fadrm_datasets.layout import IMAGES, SOFT_LABELS, BuildDirectory, is_shard_name, own_file, receipt_name, shard_name
from fadrm_datasets.softlabels import (FORMAT, FORMAT_VERSION, INDEX, LOGIT_DTYPES, EpochPlan, compress_logits,
                                       epoch_bytes, make_epoch_plan, num_batches, store_files)

from . import distributed
from .context import BuildContext
from .options import BuildError
from .presets import Preset
from .progress import progress_bar
from .seeding import derive_seed

log = logging.getLogger(__name__)

TEACHER_MODES = ("train", "eval")
MAX_EPOCHS_PER_SHARD = 100
TARGET_SHARD_BYTES = 1 << 30  # keep a shard (built in memory) near 1 GiB at most
EVAL_CHUNK = 256  # eval-mode teachers see several recorded batches in one forward


@dataclass(frozen=True)
class RelabelConfig:
    epochs: int  # the epochs a student trains on these labels
    batch_size: int
    crop_scale: tuple[float, float]
    topk: int | None = None
    teacher_mode: str = "train"  # "train": BN layers use batch statistics (FKD); "eval": running stats
    seed: int = 0
    epochs_per_shard: int | None = None  # None: chosen from the size of one epoch
    cycle: int | None = None  # distinct epochs stored and replayed in turn; None: every epoch
    logit_dtype: str = "float16"

    def __post_init__(self) -> None:
        one_of("teacher mode", self.teacher_mode, TEACHER_MODES)
        one_of("logit dtype", self.logit_dtype, LOGIT_DTYPES)
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ValueError("epochs and batch size must be positive")
        if self.epochs_per_shard is not None and self.epochs_per_shard <= 0:
            raise ValueError("epochs per shard must be positive")
        if self.cycle is not None and self.cycle <= 0:
            raise ValueError("the label cycle must be positive")
        if self.topk is not None and self.topk <= 0:
            raise ValueError("top-k must be positive")

    @property
    def stored_epochs(self) -> int:
        """The epochs the store holds: the first ``cycle`` of the student's."""
        return min(self.epochs, self.cycle or self.epochs)

    @classmethod
    def from_preset(cls, preset: Preset, epochs: int | None = None, teacher_mode: str = "train", seed: int = 0,
                    epochs_per_shard: int | None = None) -> "RelabelConfig":
        epochs = epochs or preset.relabel_epochs
        cycle = preset.soft_label_cycle or math.ceil(epochs / preset.soft_label_reuse)
        return cls(epochs=epochs, batch_size=preset.relabel_batch_size, crop_scale=tuple(preset.relabel_crop_scale),
                   topk=preset.soft_label_topk, teacher_mode=teacher_mode, seed=seed,
                   epochs_per_shard=epochs_per_shard, cycle=cycle, logit_dtype=preset.soft_label_dtype)

    def every_epoch(self) -> "RelabelConfig":
        """The same labels with every epoch stored in float16 (the protocols that reproduce a paper's)."""
        return dataclasses.replace(self, cycle=None, logit_dtype="float16")


# --- plans and teachers -----------------------------------------------------------------------

def epoch_plan(num_samples: int, image_size: int, config: RelabelConfig, epoch: int) -> EpochPlan:
    """Epoch ``epoch``'s plan: a function of (seed, epoch, sizes, batch size, crop scale) only."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "relabel", epoch))
    return make_epoch_plan(num_samples, image_size, config.batch_size, config.crop_scale, generator)


def _batchnorms(models: Sequence[nn.Module]) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    for model in models:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                yield module


@contextlib.contextmanager
def teachers_in_mode(models: Sequence[nn.Module], mode: str):
    """Put teachers in relabel mode for the duration, then restore them exactly.

    ``train``: only the BatchNorm layers switch to batch statistics (dropout and the like stay
    off, so outputs are reproducible), with momentum 0 so the running statistics stay put; every
    buffer is restored afterwards anyway. ``eval``: plain eval mode.
    """
    one_of("teacher mode", mode, TEACHER_MODES)
    saved_training = [(m, m.training) for model in models for m in model.modules()]
    saved_buffers = [{k: v.detach().clone() for k, v in model.named_buffers()} for model in models]
    bns = list(_batchnorms(models))
    saved_momentum = [bn.momentum for bn in bns]
    try:
        for model in models:
            model.eval()
        if mode == "train":
            for bn in bns:
                bn.train()
                bn.momentum = 0.0
        yield models
    finally:
        for bn, momentum in zip(bns, saved_momentum):
            bn.momentum = momentum
        for module, training in saved_training:
            module.training = training
        with torch.no_grad():
            for model, buffers in zip(models, saved_buffers):
                for name, value in model.named_buffers():
                    value.copy_(buffers[name])


@torch.no_grad()
def teacher_logits(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The average of the teachers' logits (float32)."""
    total = None
    for model in models:
        out = model(x).float()
        total = out if total is None else total + out
    return total / len(models)


@torch.no_grad()
def relabel_epoch(models: Sequence[nn.Module], images: torch.Tensor, plan: EpochPlan, preset: Preset,
                  mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 (N, K) teacher logits at every position of ``plan`` (teachers already in ``mode``).

    Train mode: one forward per recorded batch, since the batch statistics depend on it. Eval
    mode: outputs are per image, so several recorded batches share one forward.
    """
    images = images.to(device)
    size = preset.image_size
    outputs = []
    step = 1 if mode == "train" else max(1, EVAL_CHUNK // plan.batch_size)
    for first in range(0, plan.num_batches, step):
        xs = [plan.build_batch(images, b, preset.mean, preset.std, size=size)
              for b in range(first, min(plan.num_batches, first + step))]
        x = torch.cat(xs) if len(xs) > 1 else xs[0]
        outputs.append(teacher_logits(models, x.contiguous(memory_format=torch.channels_last)).cpu())
    return torch.cat(outputs)


# --- shards -------------------------------------------------------------------------------------

def layout_of(num_samples: int, num_classes: int, config: RelabelConfig) -> dict:
    """The index fields that fix a store's tensors (``softlabels.expected_tensors`` reads them)."""
    topk = config.topk if config.topk is not None and config.topk < num_classes else None
    return {"num_samples": num_samples, "num_classes": num_classes, "batch_size": config.batch_size,
            "topk": topk, "logit_dtype": config.logit_dtype}


def store_bytes(num_samples: int, num_classes: int, config: RelabelConfig) -> int:
    """Bytes of the shards a relabel with ``config`` writes (their headers aside): every label byte."""
    return config.stored_epochs * epoch_bytes(layout_of(num_samples, num_classes, config))


def choose_epochs_per_shard(num_samples: int, num_classes: int, config: RelabelConfig) -> int:
    per_epoch = epoch_bytes(layout_of(num_samples, num_classes, config))
    return max(1, min(MAX_EPOCHS_PER_SHARD, TARGET_SHARD_BYTES // max(1, per_epoch)))


def shard_ranges(epochs: int, per_shard: int) -> list[tuple[int, int]]:
    return [(first, min(epochs, first + per_shard) - 1) for first in range(0, epochs, per_shard)]


def receipt_path(shard: Path) -> Path:
    """The sha256 of a shard, written beside it (hidden) once the shard is complete on disk."""
    return shard.with_name(receipt_name(shard.name))


def write_shard(path: Path, data: bytes) -> str:
    """Write a shard, then its receipt; a shard without a receipt (a kill in between) is not trusted."""
    atomic_write_bytes(path, data)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(receipt_path(path), digest.encode())
    return digest


def shard_digest(path: Path, first: int, last: int, fingerprint: str) -> str | None:
    """The sha256 of a finished shard that can be reused, or None: the file must hash to its receipt
    (so a flipped byte anywhere is caught, not just in the header) and hold these epochs and settings."""
    receipt = receipt_path(path)
    if own_file(path.parent, path.name) is None or own_file(path.parent, receipt.name) is None:
        return None  # missing, or a symbolic link: never trusted, the shard is written again
    digest = cached_sha256(path)  # the final check and the manifest's record reuse it
    if digest != receipt.read_text().strip():
        log.warning("relabel: %s does not match its receipt (damaged or changed); writing it again", path.name)
        return None
    try:
        meta = read_safetensors_metadata(path)
    except Exception:  # safetensors raises several types for a bad header
        return None
    current = (meta.get("fingerprint") == fingerprint and meta.get("first_epoch") == first
               and meta.get("last_epoch") == last)
    return digest if current else None


def build_shard(models: Sequence[nn.Module], images: torch.Tensor, preset: Preset, config: RelabelConfig,
                first: int, last: int, fingerprint: str, device, progress: bool = True) -> bytes:
    """The bytes of the shard holding epochs ``first..last``."""
    stacked: dict[str, list[torch.Tensor]] = {}
    epochs = range(first, last + 1)
    for epoch in progress_bar(epochs, f"relabel epochs {first}-{last}", enabled=progress, leave=False):
        plan = epoch_plan(images.shape[0], preset.image_size, config, epoch)
        logits = relabel_epoch(models, images, plan, preset, config.teacher_mode, device)
        labels = compress_logits(logits, config.topk, config.logit_dtype)
        for name, tensor in {**plan.to_tensors(), **labels}.items():
            stacked.setdefault(name, []).append(tensor)
    tensors = {name: torch.stack(parts).contiguous() for name, parts in stacked.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "first_epoch": first, "last_epoch": last,
            "fingerprint": fingerprint}
    return safetensors_bytes(tensors, meta)


def write_soft_labels(models: Sequence[nn.Module], teacher_ids: Sequence[str], images: torch.Tensor,
                      preset: Preset, out_dir: Path, config: RelabelConfig, device="cpu", rank: int = 0,
                      world_size: int = 1, progress: bool = True) -> dict:
    """Relabel ``images`` (uint8, canonical order) into ``out_dir``; returns the index written.

    ``teacher_ids`` name the teachers (and their weights, e.g. ``name@sha256``) in the index and
    the shard fingerprint. With several ranks each writes the shards ``i % world_size == rank``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, channels, height, width = images.shape
    if height != preset.image_size or width != preset.image_size or channels != preset.channels:
        raise ValueError(f"images are {channels}x{height}x{width}, the preset expects "
                         f"{preset.channels}x{preset.image_size}x{preset.image_size}")
    per_shard = config.epochs_per_shard or choose_epochs_per_shard(n, preset.num_classes, config)
    ranges = shard_ranges(config.stored_epochs, per_shard)
    topk = layout_of(n, preset.num_classes, config)["topk"]
    settings = {
        "format_version": FORMAT_VERSION, "seed": config.seed, "batch_size": config.batch_size,
        "crop_scale": list(config.crop_scale), "topk": topk, "logit_dtype": config.logit_dtype,
        "teacher_mode": config.teacher_mode,
        "teachers": list(teacher_ids), "num_samples": n, "num_classes": preset.num_classes,
        "image_size": preset.image_size, "mean": list(preset.mean), "std": list(preset.std),
        "images_sha256": hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest(),
    }
    fingerprint = fingerprint_of(settings)
    index = {
        "format": FORMAT, **settings, "fingerprint": fingerprint, "epochs": config.stored_epochs,
        "train_epochs": config.epochs,
        "epochs_per_shard": per_shard, "num_batches": num_batches(n, config.batch_size),
        "channels": channels, "crop_ratio": list(CROP_RATIO), "cutmix": {"beta": [1.0, 1.0], "prob": 1.0},
        "layout": "dense" if topk is None else "topk",
        "sample_order": "sorted by (label, ipc_id)",
        "shards": [{"file": shard_name(a, b), "first_epoch": a, "last_epoch": b} for a, b in ranges],
        "complete": False,
    }
    if rank == 0:
        atomic_write_json(out_dir / INDEX, index)
    todo = []
    for i, (first, last) in enumerate(ranges):
        if i % world_size != rank:
            continue
        if shard_digest(out_dir / shard_name(first, last), first, last, fingerprint):
            log.info("relabel: %s is done, skipping", shard_name(first, last))
        else:
            todo.append((first, last))
    config = dataclasses.replace(config, topk=topk)
    for model in models:  # as in evaluate: channels_last convolutions are faster on CPU and CUDA
        model.to(memory_format=torch.channels_last)
    with teachers_in_mode(models, config.teacher_mode), _deterministic():
        for first, last in progress_bar(todo, "relabel shards", enabled=progress and len(todo) > 1):
            start = time.perf_counter()
            data = build_shard(models, images, preset, config, first, last, fingerprint, device, progress)
            write_shard(out_dir / shard_name(first, last), data)
            log.info("relabel: wrote %s (%.1f MB, %.1f s)", shard_name(first, last), len(data) / 1e6,
                     time.perf_counter() - start)
    distributed.barrier()  # rank 0 completes the index once every rank has written its shards
    if rank == 0:
        keep = {s["file"] for s in index["shards"]}
        for stale in out_dir.iterdir():
            if is_shard_name(stale.name) and stale.name not in keep:
                log.info("relabel: removing %s (another shard layout)", stale.name)
                stale.unlink()
                receipt_path(stale).unlink(missing_ok=True)
        digests = [shard_digest(out_dir / s["file"], s["first_epoch"], s["last_epoch"], fingerprint)
                   for s in index["shards"]]
        done = all(digests)
        if done:
            for shard, digest in zip(index["shards"], digests):
                shard["sha256"] = digest
                shard["bytes"] = (out_dir / shard["file"]).stat().st_size
        index["complete"] = done
        atomic_write_json(out_dir / INDEX, index)
    return index


@contextlib.contextmanager
def _deterministic():
    """cuDNN picks deterministic kernels while relabelling (reruns give the same shards)."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


# --- the build stage ----------------------------------------------------------------------------

def check_images(build: BuildDirectory, remedy: str) -> None:
    """Refuse to use images changed or damaged since recover recorded them."""
    damaged = build.damaged((IMAGES + "/",))
    if damaged:
        raise BuildError(f"{len(damaged)} image(s) changed since recover wrote them ({', '.join(damaged[:3])}); "
                         f"run `{remedy}` again: it makes their units again")

def stage_relabel(ctx: BuildContext, epochs: int | None = None, teacher_mode: str = "train",
                  epochs_per_shard: int | None = None) -> dict:
    """Relabel a build's images with its teachers into ``<build>/soft_labels`` (resumable)."""
    build, options, preset = ctx.directory, ctx.options, ctx.preset
    expected = preset.num_classes * options.ipc
    found = len(build.scan_images())
    if found != expected:
        raise BuildError(f"{build.images} holds {found} of {expected} images; finish the recover stage "
                         f"(`fadrm-build recover {preset.name} --ipc {options.ipc}`) before relabelling")
    check_images(build, f"fadrm-build recover {preset.name} --ipc {options.ipc}")
    start = time.perf_counter()
    teacher_ids = [f"{name}@{weights}" for name, weights in ctx.teachers.weights_ids().items()]
    images, labels, _ = build.load_images(preset.channels)
    config = RelabelConfig.from_preset(preset, epochs=epochs, teacher_mode=teacher_mode, seed=options.seed,
                                       epochs_per_shard=epochs_per_shard)
    index = write_soft_labels(ctx.teachers.modules(), teacher_ids, images, preset, build.soft_labels, config,
                              ctx.device, distributed.rank(), distributed.world_size())
    index = distributed.gather(index)[0]  # rank 0's: the one that saw every shard
    seconds = round(time.perf_counter() - start, 2)
    total = sum(s.get("bytes", 0) for s in index["shards"])
    record = {"epochs": config.epochs, "stored_epochs": config.stored_epochs, "teacher_mode": config.teacher_mode,
              "teachers": list(ctx.teachers.names), "batch_size": config.batch_size,
              "crop_scale": list(config.crop_scale), "topk": index["topk"], "logit_dtype": config.logit_dtype,
              "seed": config.seed, "shards": len(index["shards"]), "bytes": total,
              "bytes_per_image_epoch": round(total / (len(labels) * config.stored_epochs), 2),  # stored ones
              "complete": index["complete"], "seconds": seconds}
    written = [f"{SOFT_LABELS}/{name}" for name in store_files(index) if (build.soft_labels / name).exists()]
    distributed.main_only(build.record_stage, "relabel", record, written=written)
    if "teachers" not in build.read_manifest():
        distributed.main_only(ctx.record_teachers)
    log.info("relabel: %d epochs (%d stored, %s labels) in %d shards (%.1f MB) in %.1f s -> %s", config.epochs,
             config.stored_epochs, config.logit_dtype, len(index["shards"]), total / 1e6, seconds, build.soft_labels)
    return record


__all__ = ["RelabelConfig", "TEACHER_MODES", "build_shard", "check_images", "choose_epochs_per_shard",
           "epoch_plan", "layout_of", "receipt_path", "relabel_epoch", "shard_digest", "shard_ranges", "stage_relabel", "store_bytes",
           "teacher_logits", "teachers_in_mode", "write_shard", "write_soft_labels"]
