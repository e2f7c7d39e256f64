"""Teachers: pretrained torchvision weights, a user's weights file, or trained here and cached.

Weights are stored as safetensors with the architecture, dataset and test accuracy in the
file's metadata, so a cached teacher explains itself and never needs unpickling. A build decides
its teachers once (:func:`resolve_teachers`) and hands the :class:`TeacherSet` to every stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fadrm_datasets._io import atomic_write_bytes, cached_sha256, read_safetensors_metadata, safetensors_bytes
from fadrm_datasets.layout import LayoutError, hidden_lock, inside, teacher_file

from .imaging import normalize, random_flip, random_pad_crop
from .models import build_model
from .options import BuildOptions
from .presets import Preset, TeacherRecipe
from .progress import progress_bar
from .schedules import cosine_schedule
from .sources import load_split

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    """A teacher cannot be had; the message says how to provide one."""


def teacher_path(teachers_dir: Path, name: str, preset: Preset | None = None, ipc: int = 1) -> Path:
    """Where the teacher ``name`` of a set with ``ipc`` images per class is cached. A teacher the
    preset trains longer for larger sets (``epochs_from_ipc``) sits beside the default one as
    ``<name>-<epochs>ep``."""
    recipe = preset.teacher_recipe if preset is not None else None
    longer = recipe is not None and recipe.epochs_for(ipc) != recipe.epochs
    return Path(teachers_dir) / teacher_file(name, recipe.epochs_for(ipc) if longer else None)


def recipe_metadata(recipe: TeacherRecipe) -> str:
    """The recipe as it is recorded in a trained teacher's metadata."""
    return json.dumps(dataclasses.asdict(recipe), sort_keys=True)


def check_cached_recipe(path: Path, metadata: dict[str, str], preset: Preset, ipc: int = 1) -> None:
    """A cached teacher must come from the preset's recipe (for sets of ``ipc`` images per class): a
    preset that changed its recipe would otherwise keep distilling (and labelling) with the old
    teacher without saying so."""
    recipe = preset.teacher_recipe.for_ipc(ipc)
    recorded = metadata.get("recipe")
    if recorded is not None:
        stale = json.loads(recorded) != json.loads(recipe_metadata(recipe))
    else:  # teachers cached before the recipe was recorded carry only their epochs
        stale = "epochs" in metadata and int(metadata["epochs"]) != recipe.epochs
    if stale:
        raise TeacherError(
            f"the cached teacher {path} was trained with another recipe ({recorded or metadata['epochs'] + ' epochs'})"
            f" than {preset.name}'s ({recipe_metadata(recipe)}); run `fadrm-build teacher {preset.name} --ipc {ipc} "
            "--retrain` to replace it, use another --build-root, or pass it with --teacher-weights to keep using it")


def save_teacher(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(state, {k: str(v) for k, v in metadata.items()}))


def read_teacher_metadata(path: Path) -> dict[str, str]:
    try:
        return read_safetensors_metadata(path)
    except Exception as error:  # safetensors raises several types for a damaged file
        raise TeacherError(f"cannot read the teacher weights {path} ({type(error).__name__}); retrain it with "
                           "`fadrm-build teacher DATASET --retrain`, or pass --teacher-weights") from None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # A user's own .pth: the restricted loader accepts tensors only, never arbitrary objects.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch.load raise several types for a bad file
        raise TeacherError(f"cannot read the teacher weights {path} ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}); retrain it with `fadrm-build "
                           "teacher DATASET --retrain`, or pass another --teacher-weights") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _pretrained_state(name: str) -> dict[str, torch.Tensor]:
    import torchvision.models

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise TeacherError(f"torchvision has no pretrained weights for {name!r}") from None
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # URLError, HTTPError, hash mismatch: all mean "not here"
        raise TeacherError(
            f"could not download torchvision's {weights} for {name!r} ({error.__class__.__name__}: "
            f"{error}); download it elsewhere and pass --teacher-weights PATH (.safetensors or .pth)"
        ) from None


def load_teacher(preset: Preset, name: str, weights: Path | None = None,
                 device: str | torch.device = "cpu") -> nn.Module:
    """The teacher ``name`` for ``preset``, in eval mode with frozen parameters: the weights in the file
    ``weights`` (.safetensors, or a .pth state dict), or torchvision's pretrained ones when None."""
    model = build_model(name, preset.num_classes, preset.channels, preset.image_size)
    if weights is not None and not Path(weights).is_file():
        raise TeacherError(f"teacher weights file {weights} does not exist")
    state = _load_state(Path(weights)) if weights is not None else _pretrained_state(name)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise TeacherError(f"weights do not fit {name!r} for {preset.name}: {first}") from None
    model.eval().requires_grad_(False)
    return model.to(device)


def recorded_teacher_file(name: str, record: dict, manifest: dict) -> Path | None:
    """The weights file of a teacher a build's manifest records, checked against the recorded sha256;
    None for torchvision's pretrained weights. A trained teacher lies in the build's ``teachers_dir``
    (its name refused if it leaves it), a given one where ``options.teacher_weights`` says; manifests
    older than these records name the file's path as their ``source``."""
    source = str(record.get("source", ""))
    if source.startswith("torchvision:"):
        return None
    teachers_dir = manifest.get("teachers_dir")
    if source == "given":
        path = Path(str((manifest.get("options") or {}).get("teacher_weights") or ""))
    else:  # trained; a manifest older than these records names the file's path: only its name is trusted
        file = record.get("file") if source == "trained" else Path(source).name
        if not teachers_dir or not isinstance(file, str):
            raise TeacherError(f"teacher {name}: the manifest does not say where its weights are; run the build "
                               "command again to record them")
        try:
            path = inside(teachers_dir, file)
        except LayoutError as error:
            raise TeacherError(f"teacher {name}: {error}") from None
    if not path.is_file():
        raise TeacherError(f"teacher {name}: {path} not found; rerun `fadrm-build teacher {manifest.get('dataset')}` "
                           "with the set's --build-root, or run where the set was built")
    if record.get("sha256") and cached_sha256(path) != record["sha256"]:
        raise TeacherError(f"teacher {name}: {path} is not the teacher the set was built with (its sha256 differs "
                           "from the manifest's); restore that teacher or rebuild the set")
    return path


# --- the build's teachers, decided once -------------------------------------------------------

@dataclass
class Teacher:
    """One teacher of a build: where its weights come from, and what the manifest records of it."""

    name: str
    weights: Path | None  # the weights file; None: torchvision's pretrained weights
    # "source" (given, trained, or torchvision:<name>); for files their name and "sha256" (+ what
    # training recorded). No local paths: the record is published with the set.
    record: dict

    @property
    def weights_id(self) -> str:
        """What identifies the weights, so that work made with other weights is never resumed."""
        return self.record.get("sha256") or self.record["source"]


class TeacherSet:
    """A build's teachers (FADRM: one; FADRM+: several, cycled), each loaded once on first use."""

    def __init__(self, preset: Preset, teachers: list[Teacher], device: torch.device):
        self.preset = preset
        self.teachers = teachers
        self.device = device
        self._modules: list[nn.Module] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.teachers)

    def weights_ids(self, count: int | None = None) -> dict[str, str]:
        """name -> weights id of the first ``count`` teachers (all by default)."""
        return {t.name: t.weights_id for t in self.teachers[:count]}

    def records(self) -> dict[str, dict]:
        return {t.name: t.record for t in self.teachers}

    def modules(self) -> list[nn.Module]:
        if self._modules is None:
            self._modules = [load_teacher(self.preset, t.name, t.weights, self.device) for t in self.teachers]
        return self._modules


def resolve_teachers(preset: Preset, options: BuildOptions, device: torch.device,
                     retrain: bool = False) -> TeacherSet:
    """Decide each teacher of a build once: the user's weights file, torchvision's pretrained weights
    (presets without a training recipe), or trained with the preset's recipe and cached in
    ``options.teachers_dir`` (trained now when missing, or when ``retrain``)."""
    names = options.teacher_names(preset)
    for name in names:  # fail on a bad name before any download or training
        build_model(name, preset.num_classes, preset.channels, preset.image_size)
    teachers = []
    for name in names:
        if options.teacher_weights:
            path = Path(options.teacher_weights)
            if not path.is_file():
                raise TeacherError(f"teacher weights file {path} does not exist")
            teachers.append(Teacher(name, path, {"source": "given", "file": path.name, "sha256": cached_sha256(path)}))
        elif preset.teacher_recipe is None:
            teachers.append(Teacher(name, None, {"source": f"torchvision:{name}"}))
        else:
            path = _cached_or_trained(preset, options, device, name, retrain)
            teachers.append(Teacher(name, path, {**read_teacher_metadata(path), "source": "trained",
                                                 "file": path.name, "sha256": cached_sha256(path)}))
    resolved = TeacherSet(preset, teachers, device)
    resolved.modules()  # given and pretrained weights are checked (and downloaded) before any work
    return resolved


def _cached_or_trained(preset: Preset, options: BuildOptions, device: torch.device, name: str,
                       retrain: bool) -> Path:
    from filelock import FileLock, Timeout

    path = teacher_path(options.teachers_dir, name, preset, options.ipc)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Builds of several IPCs share the cache: one trains a missing teacher while the others wait.
    lock = FileLock(str(hidden_lock(path)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("teacher %s: another builder is training or checking %s; waiting for it", name, path)
        lock.acquire()
    try:
        return _cached_or_trained_locked(preset, options, device, name, retrain, path)
    finally:
        lock.release()


def _cached_or_trained_locked(preset: Preset, options: BuildOptions, device: torch.device, name: str,
                              retrain: bool, path: Path) -> Path:
    if path.is_file() and not retrain:
        meta = read_teacher_metadata(path)
        check_cached_recipe(path, meta, preset, options.ipc)
        log.info("teacher %s: cached at %s (test top-1 %s %%)", name, path, meta.get("test_top1"))
        return path
    recipe_preset = preset.for_ipc(options.ipc)
    log.info("teacher %s: training with the %s recipe (%d epochs)", name, preset.name,
             recipe_preset.teacher_recipe.epochs)
    train = load_split(preset, options.data_root, "train", options.download)
    test = load_split(preset, options.data_root, "test", options.download)
    model, metrics = train_teacher(recipe_preset, name, train, test, seed=options.seed, device=device)
    # No wall-clock time in the file: a teacher trained twice is the same bytes, and so are the soft
    # labels and records that name it by its hash.
    save_teacher(path, model, {"arch": name, "dataset": preset.name, "test_top1": f"{metrics['top1']:.2f}",
                               "test_top5": f"{metrics['top5']:.2f}", "epochs": metrics["epochs"],
                               "seed": options.seed, "recipe": recipe_metadata(recipe_preset.teacher_recipe)})
    return path


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, dataset: Dataset, preset: Preset, device="cpu",
                      batch_size: int = 512, topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (percent) on a real split, model in eval mode."""
    was_training = model.training
    model.eval()
    correct = {k: 0 for k in topk}
    total = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        logits = model(normalize(images.to(device), preset))
        ranked = logits.topk(max(topk), dim=1).indices.cpu()
        for k in topk:
            correct[k] += (ranked[:, :k] == labels[:, None]).any(dim=1).sum().item()
        total += len(labels)
    model.train(was_training)
    return {f"top{k}": 100.0 * correct[k] / total for k in topk}


def _optimizer(recipe: TeacherRecipe, params):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, nesterov=True)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW  # the recipe checked the name
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train_teacher(preset: Preset, name: str, train: Dataset, test: Dataset, seed: int = 0,
                  device: str | torch.device = "cpu", epochs: int | None = None) -> tuple[nn.Module, dict]:
    """Train ``name`` from scratch with the preset's recipe; returns (model, metrics)."""
    recipe = preset.teacher_recipe
    if recipe is None:
        raise TeacherError(f"{preset.name} teachers come pretrained; nothing to train")
    epochs = recipe.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(name, preset.num_classes, preset.channels, preset.image_size).to(device)
    optimizer = _optimizer(recipe, model.parameters())
    # Dropping the ragged last batch keeps BN statistics sound, unless it is the only batch.
    loader = DataLoader(train, batch_size=recipe.batch_size, shuffle=True, generator=generator,
                        drop_last=len(train) > recipe.batch_size)
    total_steps = max(1, epochs * len(loader))
    schedule = cosine_schedule(optimizer, total_steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        bar = progress_bar(loader, f"teacher {name} epoch {epoch + 1}/{epochs}", leave=False)
        for step, (images, labels) in enumerate(bar):
            x = normalize(images.to(device), preset)
            x = random_pad_crop(x, recipe.crop_padding, generator)
            if recipe.flip:
                x = random_flip(x, generator)
            loss = F.cross_entropy(model(x), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 50 == 0:  # reading the loss syncs with the device: not every step
                bar.set_postfix(loss=f"{loss.item():.3f}")
        log.info("teacher %s: epoch %d/%d done, last loss %.3f", name, epoch + 1, epochs, loss.item())
    metrics = evaluate_accuracy(model, test, preset, device)
    metrics.update(epochs=epochs, seconds=round(time.perf_counter() - start, 1), seed=seed)
    log.info("teacher %s: test top-1 %.2f %% after %d epochs (%.0f s)", name, metrics["top1"],
             epochs, metrics["seconds"])
    model.eval().requires_grad_(False)
    return model, metrics


__all__ = ["Teacher", "TeacherError", "TeacherSet", "check_cached_recipe", "evaluate_accuracy", "load_teacher",
           "read_teacher_metadata", "recipe_metadata", "recorded_teacher_file", "resolve_teachers", "save_teacher",
           "teacher_path", "train_teacher"]
