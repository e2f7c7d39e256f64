"""The student protocol on a built set: train on the replayed soft labels, test on the real split.

A fresh student (``preset.student`` or any model ``builders.models.build_model`` knows) is trained
with AdamW (``preset.eval_lr``, ``preset.eval_weight_decay``) and a cosine schedule over all steps,
on epoch ``e`` of the soft-label store in training epoch ``e`` (the exact recorded crops, flips and
CutMix), with loss KL(student/T || teacher/T) * T^2 at ``T = preset.temperature`` and gradient
accumulation over ``preset.eval_grad_accumulation`` recorded batches. Top-1/top-5 on the real test
split (or the held-out validation split) are measured every few epochs and at the end; best and final top-1 go into the manifest.
The run's state is kept at every check (``builders.checkpoints``), so a killed evaluation resumes there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import logging
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fadrm_datasets._checks import one_of
from fadrm_datasets._io import fingerprint_of
from fadrm_datasets.layout import IMAGES, MANIFEST, SOFT_LABELS, BuildDirectory
from fadrm_datasets.softlabels import INDEX, SoftLabelStore, replay_loader

from . import distributed
from .context import BuildContext
from .checkpoints import Progress, StudentCheckpoint, prune, rng_state
from .models import build_model
from .options import BuildError
from .presets import Preset, get_preset
from .progress import progress_bar
from .protocols import DEFAULT_PROTOCOL, PROTOCOLS, ProtocolRun, protocol_preset
from .schedules import cosine_factor, cosine_schedule
from .seeding import derive_seed
from .sources import EVAL_SPLITS, load_split
from .teachers import evaluate_accuracy

log = logging.getLogger(__name__)

# Fields of the manifest's (effective) preset that the evaluation follows.
EVAL_FIELDS = ("student", "eval_epochs", "eval_lr", "eval_weight_decay", "eval_batch_size",
               "eval_grad_accumulation", "temperature")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            times_t_squared: bool = True) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch, times T^2 unless a
    protocol leaves it unscaled."""
    t = temperature
    loss = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True)
    return loss * (t * t) if times_t_squared else loss


def hard_label_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against CutMix's mixed one-hot targets, averaged over the batch."""
    return -(targets * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()


def check_epochs(epochs: int, every: int | None = None) -> set[int]:
    """The (1-based) epochs after which the test split is measured: every few, and the last."""
    every = every or max(1, epochs // 10)
    return {e for e in range(every, epochs + 1, every)} | {epochs}


def check_store(store: SoftLabelStore, preset: Preset, epochs: int) -> None:
    """Refuse more epochs than the store was made for; warn when its batches are not the preset's."""
    if epochs > store.train_epochs:
        raise ValueError(f"{epochs} evaluation epochs asked for, but the soft-label store was made for only "
                         f"{store.train_epochs}; pass --epochs {store.train_epochs} or less, or relabel with "
                         f"--epochs {epochs}")
    if store.batch_size != preset.eval_batch_size:
        log.warning("evaluate: the store's recorded batches hold %d images (preset eval batch %d); the "
                    "replay follows the store", store.batch_size, preset.eval_batch_size)


@dataclass
class StudentRun:
    """One student run once set up: its model (``net`` is the same model, wrapped in DDP under torchrun),
    optimizer and schedule, the replayed batches still to train on, and where the run stands."""

    preset: Preset
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    batches: int  # recorded batches an epoch
    accumulation: int
    device: torch.device
    targets: str  # "soft" or "hard"
    protocol: ProtocolRun
    micro_batch: int = 0  # images a forward pass takes when a protocol accumulates within a recorded batch
    loader: Iterator | None = None
    pad: tuple[torch.Tensor, torch.Tensor] | None = None  # the last batch trained on: a weightless pass's input
    checkpoint: StudentCheckpoint | None = None
    so_far: Progress = field(default_factory=lambda: Progress(epoch=0, checks=[], best=None, seconds=0.0))
    resumed_at: int | None = None

    def train_epoch(self) -> tuple[torch.Tensor, int]:
        """One epoch of optimizer steps; returns the summed loss (on the device: no sync per batch) and
        the number of images it is summed over.

        Under torchrun (DDP, even as its only process) each optimizer step's recorded batches are dealt to
        the ranks; each real batch weighs world / group size and DDP averages over the world, so a step's
        gradient is the same sum as with one process. Ranks with fewer batches in a step make weightless
        passes to keep the all-reduce in step (never rank 0, whose BatchNorm statistics DDP broadcasts)."""
        if self.protocol.protocol.accumulate_within_batch:
            return self.train_epoch_in_micro_batches()
        world, rank = distributed.world_size(), distributed.rank()
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        running, seen = torch.zeros((), device=self.device), 0
        for group in range(math.ceil(self.batches / self.accumulation)):
            size = min(self.accumulation, self.batches - group * self.accumulation)
            own, passes = len(range(rank, size, world)), -(-size // world)
            for index in range(passes):
                weight = world if index < own else 0
                if weight:
                    x, soft, _ = next(self.loader)
                    self.pad = x.to(self.device, memory_format=torch.channels_last), soft.to(self.device)
                x, soft = self.pad
                with contextlib.nullcontext() if index == passes - 1 or world == 1 else self.net.no_sync():
                    out = self.net(x)
                    loss = self.loss(out, soft)
                    (loss * weight / size).backward()
                if weight:
                    running, seen = running + loss.detach() * len(x), seen + len(x)
            self.optimizer.step()
            self.schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
        return running, seen

    def loss(self, out: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        if self.targets == "hard":
            return hard_label_loss(out, soft)
        return kd_loss(out, soft, self.preset.temperature, self.protocol.protocol.loss_times_t_squared)

    def train_epoch_in_micro_batches(self) -> tuple[torch.Tensor, int]:
        """One epoch as FADRM's train_fkd.py trains it: one optimizer step per recorded batch, whose images
        go through in micro-batches of batch / accumulation, each loss divided by the accumulation."""
        self.net.train()
        running, seen = torch.zeros((), device=self.device), 0
        for _ in range(self.batches):
            x, soft, _ = next(self.loader)
            x, soft = x.to(self.device, memory_format=torch.channels_last), soft.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            for part, part_soft in zip(x.split(self.micro_batch), soft.split(self.micro_batch)):
                loss = self.loss(self.net(part), part_soft)
                (loss / self.accumulation).backward()
                running, seen = running + loss.detach() * len(part), seen + len(part)
            self.optimizer.step()
            self.schedule.step()
        return running, seen

    def check(self, epoch: int, running: torch.Tensor, seen: int, test_set) -> dict:
        """Measure the test split after ``epoch`` (1-based) and add the check to the run's progress; rank 0
        measures, every rank keeps the numbers. Returns them with the epoch's mean loss over every rank."""
        running, seen = map(sum, zip(*distributed.gather((running.item(), seen))))
        measured = evaluate_accuracy(self.model, test_set, self.preset, self.device) if distributed.is_main() else None
        metrics = distributed.gather(measured)[0]
        so_far = self.so_far
        so_far.epoch = epoch
        so_far.best = metrics["top1"] if so_far.best is None else max(so_far.best, metrics["top1"])
        so_far.checks.append({"epoch": epoch, "top1": round(metrics["top1"], 2), "top5": round(metrics["top5"], 2),
                              "loss": round(running / max(1, seen), 4)})
        return {**metrics, "loss": running / max(1, seen)}

    def save(self, seconds: float) -> None:
        """Keep the run's state as of its last check (``seconds`` trained so far) in its checkpoint."""
        if self.checkpoint is None:
            return
        rng_by_rank = distributed.gather(rng_state(self.device))  # every rank draws its own dropout masks
        if distributed.is_main():
            standing = Progress(self.so_far.epoch, self.so_far.checks, self.so_far.best, seconds)
            self.checkpoint.save(self.model, self.optimizer, self.schedule, standing, rng_by_rank)


def new_student(preset: Preset, student: str, seed: int, device: torch.device) -> nn.Module:
    """The run's fresh student, its initialisation drawn from the run's seed."""
    torch.manual_seed(derive_seed(seed, "evaluate", "init"))
    model: nn.Module = build_model(student, preset.num_classes, preset.channels, preset.image_size)
    # channels_last: the same maths, faster steps on the CPU (BENCHMARKS.md, "Student step speed:
    # channels_last") and the usual layout for convolutions on CUDA.
    return model.to(device, memory_format=torch.channels_last)


def resume_run(run: StudentRun, checkpoint: StudentCheckpoint, checks_at: set[int]) -> None:
    """Keep ``run``'s state in ``checkpoint``, with what only this loop knows in its identity (that decides
    the numbers too), and restore the run from it when it holds this run's state."""
    model, device, world = run.model, run.device, distributed.world_size()
    layout = hashlib.sha256(repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()]).encode())
    run.checkpoint = checkpoint.with_identity(checks=sorted(checks_at), device=device.type, processes=world,
                                              torch=torch.__version__, threads=torch.get_num_threads(),
                                              model_layout=layout.hexdigest()[:16])
    resumed = run.checkpoint.load(model, run.optimizer, run.schedule, distributed.rank())
    found = distributed.gather(resumed.epoch if resumed else 0)
    if len(set(found)) > 1:
        raise RuntimeError(f"the ranks found checkpoints at different epochs ({found}); keep the build "
                           "directory on storage every rank shares")
    if resumed is not None:
        run.so_far, run.resumed_at = resumed, resumed.epoch


def student_schedule(optimizer: torch.optim.Optimizer, protocol: ProtocolRun, epochs: int,
                     steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Ours: a cosine over every optimizer step. A per-epoch protocol's: the same cosine held through each
    epoch, falling over ``cosine_stretch`` x the epochs (FADRM's eta, DD-Ranking's 2), stepped per step."""
    if not protocol.protocol.schedule_per_epoch:
        return cosine_schedule(optimizer, max(1, epochs * steps_per_epoch))
    span = epochs * protocol.cosine_stretch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step // steps_per_epoch, span))


def set_up_student_run(preset: Preset, images: torch.Tensor, labels: torch.Tensor, store: SoftLabelStore,
                       student: str, epochs: int, device: torch.device, seed: int, num_workers: int, targets: str,
                       checks_at: set[int], checkpoint: StudentCheckpoint | None,
                       protocol: ProtocolRun | None = None) -> StudentRun:
    """The fresh (or resumed) student with AdamW and the protocol's schedule (ours: a cosine over all
    steps), and the replay of the epochs it has still to train."""
    protocol = protocol or ProtocolRun(PROTOCOLS[DEFAULT_PROTOCOL], preset)
    within = protocol.protocol.accumulate_within_batch
    if within and distributed.world_size() > 1:
        raise BuildError(f"protocol {protocol.name} splits each recorded batch in micro-batches, which this "
                         "evaluation runs in one process only; run it without torchrun")
    model = new_student(preset, student, seed, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.eval_lr, weight_decay=preset.eval_weight_decay)
    accumulation = max(1, preset.eval_grad_accumulation)
    steps_per_epoch = store.num_batches if within else math.ceil(store.num_batches / accumulation)
    schedule = student_schedule(optimizer, protocol, epochs, steps_per_epoch)
    run = StudentRun(preset, model, model, optimizer, schedule, store.num_batches, accumulation, device, targets,
                     protocol, micro_batch=max(1, store.batch_size // accumulation))
    if checkpoint is not None:
        resume_run(run, checkpoint, checks_at)
    if distributed.joined():
        run.net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    world, rank = distributed.world_size(), distributed.rank()

    def mine(batch: int) -> bool:
        return (batch % accumulation) % world == rank

    remaining = range(run.so_far.epoch, epochs)
    if remaining:
        run.loader = iter(replay_loader(images, labels, store, remaining, preset.mean, preset.std,
                                        num_workers=num_workers, keep=mine if world > 1 else None, targets=targets,
                                        persistent_workers=num_workers > 0))
    if run.resumed_at is not None:  # after the loader, whose creation draws from the generator as it did at the start
        run.so_far.restore_rng(device)
    run.pad = (torch.zeros(1, preset.channels, store.image_size, store.image_size, device=device),
               torch.zeros(1, preset.num_classes, device=device))
    return run


def train_student(preset: Preset, images: torch.Tensor, labels: torch.Tensor, store: SoftLabelStore,
                  test_set, student: str | None = None, epochs: int | None = None, device="cpu", seed: int = 0,
                  num_workers: int = 0, check_every: int | None = None, progress: bool = True,
                  split: str = "test", targets: str = "soft", checkpoint: StudentCheckpoint | None = None,
                  protocol: ProtocolRun | None = None) -> dict:
    """Train a student on the replayed store; returns metrics on ``test_set`` (top-1 best/final, top-5,
    checks). ``split`` names that set ("test" or "val") in the log and the record. ``targets="hard"``
    trains on the same replayed batches with hard labels (CutMix-mixed one-hot, cross-entropy).
    ``checkpoint`` keeps the run's state at every check and resumes from it (the caller removes it
    once the record is kept). ``protocol`` (default: ours) says how the student trains; ``preset`` is
    already the protocol's (:func:`builders.protocols.protocol_preset`)."""
    student = student or preset.student
    epochs = epochs or preset.eval_epochs
    check_store(store, preset, epochs)
    device = torch.device(device)
    checks_at = check_epochs(epochs, check_every)
    run = set_up_student_run(preset, images, labels, store, student, epochs, device, seed, num_workers, targets,
                             checks_at, checkpoint, protocol)
    start = time.perf_counter() - run.so_far.seconds
    bar = progress_bar(range(run.so_far.epoch, epochs), f"evaluate {student}",
                       enabled=progress and distributed.is_main())
    for epoch in bar:
        running, seen = run.train_epoch()
        if epoch + 1 in checks_at:
            metrics, best = run.check(epoch + 1, running, seen, test_set), run.so_far.best
            log.info("evaluate %s: epoch %d/%d loss %.4f, %s top-1 %.2f %% top-5 %.2f %% (best %.2f %%)",
                     student, epoch + 1, epochs, metrics["loss"], split, metrics["top1"], metrics["top5"], best)
            bar.set_postfix(top1=f"{metrics['top1']:.2f}", best=f"{best:.2f}")
            run.save(time.perf_counter() - start)
    final = run.so_far.checks[-1]
    return {"student": student, "epochs": epochs, "top1_best": round(run.so_far.best, 2), "top1_final": final["top1"],
            "top5": final["top5"], "seconds": round(time.perf_counter() - start, 2), "seed": seed,
            "checks": run.so_far.checks, "split": split, "lr": preset.eval_lr,
            "weight_decay": preset.eval_weight_decay, "temperature": preset.temperature,
            "batch_size": store.batch_size, "grad_accumulation": run.accumulation,
            "soft_label_epochs": store.train_epochs,
            "soft_labels": {"fingerprint": store.index.get("fingerprint"), **store.size_record()},
            "teacher_mode": store.teacher_mode, "teachers": store.teachers,
            "device": str(device), "processes": distributed.world_size(), "labels": targets,
            "resumed_at_epoch": run.resumed_at, **protocol_fields(run.protocol)}


def protocol_fields(protocol: ProtocolRun) -> dict:
    """What a record says of its protocol: ours by name only (its settings are the record's own)."""
    if protocol.is_default:
        return {"protocol": protocol.name}
    spec = protocol.protocol
    return {"protocol": protocol.name, "protocol_source": spec.source, "optimizer": spec.optimizer,
            "loss_times_t_squared": spec.loss_times_t_squared, "accumulate_within_batch": spec.accumulate_within_batch,
            "schedule_per_epoch": spec.schedule_per_epoch, "cosine_stretch": protocol.cosine_stretch}


def manifest_preset(manifest: dict) -> Preset:
    """The dataset's preset with the evaluation fields the build recorded (e.g. overridden epochs)."""
    if "dataset" not in manifest:
        raise ValueError(f"the build directory has no {MANIFEST} with a dataset; is it a build directory?")
    preset = get_preset(manifest["dataset"])
    recorded = manifest.get("preset") or {}
    changes = {k: recorded[k] for k in EVAL_FIELDS if k in recorded and recorded[k] is not None}
    return preset.replace(**changes) if changes else preset


def stored_labels_fit(store: SoftLabelStore, run: ProtocolRun, epochs: int) -> bool:
    """Whether ``store`` holds the batches, crops, teacher mode and epochs protocol ``run`` trains on: a
    paper's protocol trains on every epoch's labels in float16, none reused."""
    preset = run.preset
    return (store.batch_size == preset.relabel_batch_size and store.epochs >= epochs and store.logit_dtype == "float16"
            and tuple(store.index["crop_scale"]) == tuple(preset.relabel_crop_scale)
            and run.teacher_mode in (None, store.teacher_mode))


def evaluate_build(build_dir: str | Path, preset: Preset | None = None, student: str | None = None,
                   epochs: int | None = None, data_root: str | None = None, download: bool = False,
                   device="cpu", seed: int = 0, num_workers: int = 0, command: str | None = None,
                   progress: bool = True, split: str = "test", targets: str = "soft",
                   lr: float | None = None, protocol: str = DEFAULT_PROTOCOL, labels: Path | None = None) -> dict:
    """Evaluate the set in ``build_dir`` under ``protocol`` and append the record to its manifest's
    ``evaluations`` (``lr`` overrides the protocol's student learning rate, e.g. for another student).
    ``labels``: the soft-label store to train on (default: the build's; ``builders.build.protocol_labels``
    gives a protocol's own)."""
    one_of("split", split, EVAL_SPLITS)
    build = BuildDirectory(Path(build_dir))
    manifest = build.read_manifest()
    if not manifest:
        raise BuildError(f"{build.root} has no {build.manifest_path.name}; build the set first")
    run = protocol_preset(protocol, preset or manifest_preset(manifest), int(manifest.get("ipc", 1)))
    preset = run.preset
    if lr is not None:
        preset = preset.replace(eval_lr=lr)
        run = dataclasses.replace(run, preset=preset)
    if not (build.soft_labels / INDEX).is_file():
        raise BuildError(f"{build.root} has no soft labels; run `fadrm-build relabel {preset.name} "
                         f"--ipc {manifest.get('ipc', 'N')}` first")
    damaged = build.damaged((IMAGES + "/", SOFT_LABELS + "/"))
    if damaged:
        raise BuildError(f"{len(damaged)} file(s) of {build.root} changed since their stage wrote them "
                         f"({', '.join(damaged[:3])}); run the build command again: recover and relabel make "
                         "damaged images and shards again")
    student = student or preset.student
    epochs = epochs or preset.eval_epochs
    store = SoftLabelStore.open(labels or build.soft_labels)
    if not (run.is_default or stored_labels_fit(store, run, epochs)):
        raise BuildError(f"protocol {run.name} trains on other soft labels than {store.directory}'s; run "
                         f"`fadrm-build evaluate {build.root} --protocol {run.name}`, which relabels into its own store")
    images, labels, _ = build.load_images(preset.channels)
    if data_root is None:
        data_root = (manifest.get("options") or {}).get("data_root", "data")
    # "val" (held-out training images) is for choosing settings; "test" is for reporting.
    test_set = load_split(preset, data_root, split, download)
    # What decides the numbers: the inputs as recorded (and just verified) and every setting.
    inputs = {rel: sha for rel, sha in manifest.get("files", {}).items()
              if rel.startswith((IMAGES + "/", SOFT_LABELS + "/"))}
    settings = ("eval_lr", "eval_weight_decay", "eval_batch_size", "eval_grad_accumulation", "temperature")
    if store.directory != build.soft_labels:  # a protocol's own labels, as their index records them
        inputs = {rel: sha for rel, sha in inputs.items() if rel.startswith(IMAGES + "/")}
        inputs.update({f"{run.name}/{s['file']}": s["sha256"] for s in store.shards})
    inputs_sha256 = fingerprint_of(inputs)
    identity = {"inputs": inputs_sha256, "student": student, "epochs": epochs, "seed": seed, "split": split,
                "labels": targets, **{field: getattr(preset, field) for field in settings}}
    if not run.is_default:  # ours keeps the identity (and so the checkpoints) it had before protocols
        identity.update(protocol_fields(run))
    checkpoint = StudentCheckpoint.in_directory(build.checkpoints, identity)
    record = train_student(preset, images, labels, store, test_set, student, epochs, device, seed, num_workers,
                           progress=progress, split=split, targets=targets, checkpoint=checkpoint, protocol=run)
    record["command"] = command if command is not None else shlex.join(["fadrm-build", *sys.argv[1:]])
    record["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record["run"] = checkpoint.path.stem  # the run's settings and inputs, by name

    def keep_record() -> None:
        evaluations = build.read_manifest().get("evaluations", [])
        # A run killed after its record was kept, before its checkpoint went, resumes at the end: kept once.
        if not (record["resumed_at_epoch"] == epochs and any(r.get("run") == record["run"] for r in evaluations)):
            build.update_manifest(evaluations=[*evaluations, record])
        checkpoint.remove()  # the record is kept: the run is not resumed again
        prune(build.checkpoints, inputs_sha256)

    distributed.main_only(keep_record)
    log.info("evaluate: %s on %s: best %s top-1 %.2f %%, final %.2f %% (%d epochs, %.0f s)", record["student"],
             build.root, split, record["top1_best"], record["top1_final"], record["epochs"], record["seconds"])
    return record


def stage_evaluate(ctx: BuildContext, protocol: str = DEFAULT_PROTOCOL, labels: Path | None = None) -> dict:
    """The build's evaluation stage (``run_build``): the effective preset, the build's data root and seed."""
    options = ctx.options
    return evaluate_build(ctx.directory.root, preset=ctx.preset, data_root=options.data_root,
                          download=options.download, device=ctx.device, seed=options.seed, protocol=protocol,
                          labels=labels)


def teacher_accuracy(manifest: dict) -> str | None:
    """The (first) teacher's recorded test top-1, for printing next to the set's."""
    for record in (manifest.get("teachers") or {}).values():
        if isinstance(record, dict) and record.get("test_top1") is not None:
            return str(record["test_top1"])
    return None


__all__ = ["StudentRun", "check_epochs", "check_store", "evaluate_build", "hard_label_loss", "kd_loss",
           "manifest_preset", "new_student", "protocol_fields", "stored_labels_fit",
           "student_schedule", "resume_run", "set_up_student_run", "stage_evaluate", "teacher_accuracy",
           "train_student"]
