"""Class-incremental scenarios over a distilled set: pure data, no training.

A :class:`ClassIncrementalScenario` splits a set's classes into steps along a class order. Step
``s`` brings ``increments[s]`` new classes, and a learner at step ``s`` has seen the first
``seen_count(s)`` classes of the order. Inside a scenario a class is named by its *position* in
the order (Continuum's renumbering, ``argsort(order)[label]``): the classes seen at step ``s``
are ``0 .. seen_count(s) - 1``, so a head grown at each step keeps its old outputs.

The peers draw class orders as ``numpy.random.RandomState(seed).permutation(num_classes)``, seeds
0..4 (DM's ``np.random.seed(s); np.random.permutation(n)`` draws the same numbers):
:func:`class_order`.

Soft labels are per-sample logits over all of a set's classes, in the set's own class numbering
(for example the set's teacher on each image, :func:`teacher_logits`). A step restricts them to
the classes it has seen, in order (:meth:`ClassIncrementalScenario.restrict`), so a softmax over
them puts no mass on classes the learner has not met yet. The stored soft-label store cannot be
cut this way: every recorded batch mixes classes (CutMix partners, logits over all classes).

Adapters build the same scenario in the two libraries continual-learning users work in,
imported only when called: :func:`to_avalanche` (``avalanche-lib``) and :func:`to_continuum`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .install import install_hint

PEER_ORDER_SEEDS = (0, 1, 2, 3, 4)  # the class orders the peers report over
CONTINUAL_EXTRA = install_hint("continual")


class ScenarioError(ValueError):
    """A scenario cannot be made as asked; the message says what to change."""


def class_order(num_classes: int, seed: int) -> tuple[int, ...]:
    """The peers' class order for ``seed``: ``numpy.random.RandomState(seed).permutation(num_classes)``."""
    if num_classes <= 0:
        raise ScenarioError(f"a scenario needs at least one class, got {num_classes}")
    return tuple(int(c) for c in np.random.RandomState(seed).permutation(num_classes))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _targets(dataset) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ScenarioError(f"{type(dataset).__name__} has no `targets` (one label per sample), which torchvision "
                            "datasets and FADRMDataset have; wrap it in one that does")
    return np.asarray(torch.as_tensor(targets).cpu(), dtype=np.int64)


def _soft_labels(soft_labels, count: int, num_classes: int) -> torch.Tensor:
    """Soft labels checked to hold one row of ``num_classes`` logits per sample, as float32."""
    soft_labels = torch.as_tensor(soft_labels).float()
    if tuple(soft_labels.shape) != (count, num_classes):
        raise ScenarioError(f"soft labels of shape {tuple(soft_labels.shape)} given for {count} samples of "
                            f"{num_classes} classes; give one row of logits per sample, in the set's class numbering")
    return soft_labels


@dataclass(frozen=True)
class ClassIncrementalScenario:
    """Which classes each step brings, in which order.

    Args:
        order: every class of the set once, in the order the steps bring them.
        increments: how many new classes each step brings; they add up to the number of classes.
    """

    order: tuple[int, ...]
    increments: tuple[int, ...]

    def __post_init__(self) -> None:
        order = tuple(int(c) for c in self.order)
        increments = tuple(int(n) for n in self.increments)
        if sorted(order) != list(range(len(order))) or not order:
            raise ScenarioError(f"the class order must hold each of the classes 0..N-1 exactly once, got {list(order)}")
        if not increments or min(increments) <= 0 or sum(increments) != len(order):
            raise ScenarioError(f"the steps must bring a positive number of classes each, {len(order)} in all; "
                                f"got {list(increments)}")
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "increments", increments)

    @classmethod
    def from_seed(cls, num_classes: int, num_steps: int, seed: int = 0) -> "ClassIncrementalScenario":
        """``num_steps`` equal steps along the peers' order for ``seed`` (:func:`class_order`)."""
        if num_steps <= 0 or num_classes % num_steps:
            raise ScenarioError(f"{num_classes} classes do not split into {num_steps} equal steps; use a number of "
                                f"steps that divides {num_classes}: {', '.join(map(str, _divisors(num_classes)))}")
        return cls(class_order(num_classes, seed), (num_classes // num_steps,) * num_steps)

    # -- classes ---------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.order)

    @property
    def num_steps(self) -> int:
        return len(self.increments)

    def _check_step(self, step: int) -> int:
        if not 0 <= step < self.num_steps:
            raise ScenarioError(f"step {step} does not exist; the scenario has steps 0..{self.num_steps - 1}")
        return step

    def seen_count(self, step: int) -> int:
        """How many classes a learner has seen at ``step`` (its own included)."""
        return sum(self.increments[:self._check_step(step) + 1])

    def seen_classes(self, step: int) -> tuple[int, ...]:
        """The classes seen at ``step``, in the set's numbering, in the order they came."""
        return self.order[:self.seen_count(step)]

    def new_classes(self, step: int) -> tuple[int, ...]:
        """The classes ``step`` brings, in the set's numbering."""
        return self.order[self.seen_count(step) - self.increments[step]:self.seen_count(step)]

    @property
    def positions(self) -> np.ndarray:
        """``positions[c]``: class ``c``'s place in the order, its label inside the scenario."""
        return np.argsort(np.asarray(self.order))

    # -- samples and labels ----------------------------------------------------------------------

    def step_of(self, targets) -> np.ndarray:
        """The step at which each label's class arrives."""
        positions = self.positions[np.asarray(torch.as_tensor(targets).cpu(), dtype=np.int64)]
        return np.searchsorted(np.cumsum(self.increments), positions, side="right")

    def indices(self, targets, step: int, new_only: bool = False) -> np.ndarray:
        """Ascending indices of the samples whose class is seen at ``step`` (or, ``new_only``, new at it)."""
        arrival = self.step_of(targets)
        return np.flatnonzero(arrival == self._check_step(step) if new_only else arrival <= self._check_step(step))

    def restrict(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Logits over all classes (set numbering, last dimension) -> over the classes seen at ``step``, in
        order: column ``j`` is the class at position ``j``, the scenario's label ``j``."""
        if logits.shape[-1] != self.num_classes:
            raise ScenarioError(f"logits over {logits.shape[-1]} classes given to a scenario of {self.num_classes}")
        return logits[..., list(self.seen_classes(step))]

    def train_subset(self, dataset, step: int, soft_labels: torch.Tensor | None = None) -> "StepSubset":
        """The samples of ``dataset`` (a distilled set) that a learner at ``step`` trains on: every class seen
        so far, labelled by position, with ``soft_labels`` ((N, num_classes) logits, set numbering) restricted."""
        return StepSubset(dataset, self, step, soft_labels)

    def test_subset(self, dataset, step: int) -> "StepSubset":
        """The samples of ``dataset`` (a real test split) of the classes seen at ``step``, labelled by position."""
        return StepSubset(dataset, self, step)


class StepSubset(Dataset):
    """The samples of the classes seen at one step, in the dataset's order: ``(image, label)`` or, with soft
    labels, ``(image, label, soft)``. ``label`` is the class's position in the order; ``soft`` holds the
    logits of the seen classes only. ``indices`` are the samples' indices in the whole dataset."""

    def __init__(self, dataset, scenario: ClassIncrementalScenario, step: int,
                 soft_labels: torch.Tensor | None = None):
        all_targets = _targets(dataset)
        if all_targets.size and (all_targets.min() < 0 or all_targets.max() >= scenario.num_classes):
            raise ScenarioError(f"the dataset's labels run {all_targets.min()}..{all_targets.max()}, outside the "
                                f"scenario's {scenario.num_classes} classes")
        self.dataset = dataset
        self.scenario = scenario
        self.step = step
        self.indices = scenario.indices(all_targets, step)
        self.original_targets = all_targets[self.indices]
        self.targets = scenario.positions[self.original_targets]
        self.soft_labels = None
        if soft_labels is not None:
            soft_labels = _soft_labels(soft_labels, len(all_targets), scenario.num_classes)
            self.soft_labels = scenario.restrict(soft_labels[torch.as_tensor(self.indices)], step)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        image = self.dataset[int(self.indices[index])][0]
        label = int(self.targets[index])
        if self.soft_labels is None:
            return image, label
        return image, label, self.soft_labels[index]


# --- soft labels from a teacher -------------------------------------------------------------------

@torch.no_grad()
def teacher_logits(dataset, teacher: torch.nn.Module, device: str | torch.device = "cpu",
                   batch_size: int = 256) -> torch.Tensor:
    """Per-sample logits of ``teacher`` (eval mode) on every image of a distilled set (``images_uint8``,
    ``mean``, ``std``: a :class:`~fadrm_datasets.FADRMDataset`), float32 (N, classes), in the set's order."""
    images = dataset.images_uint8()
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    was_training = teacher.training
    teacher.eval()
    out = [teacher((chunk.to(device).float() / 255 - mean) / std).float().cpu()
           for chunk in images.split(batch_size)]
    teacher.train(was_training)
    return torch.cat(out)


# --- adapters -------------------------------------------------------------------------------------

def _require(module: str, package: str) -> None:
    """Import ``module`` now, so a missing package is named with how to install it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this adapter needs {package} ({error}); install it with {CONTINUAL_EXTRA}") from None


def to_avalanche(train, test, scenario: ClassIncrementalScenario, soft_labels: torch.Tensor | None = None):
    """Avalanche's ``class_incremental_benchmark`` over ``train`` (a distilled set) and ``test`` (the real
    test split), one experience per step of ``scenario``, in its order.

    Avalanche keeps the set's own labels. With ``soft_labels`` ((N, num_classes) logits, set numbering) every
    training sample carries its row as the data attribute ``soft_labels``, so a batch reads
    ``(x, y, soft_labels, task_label)`` (the task label stays last, where Avalanche's strategies look for
    it); a strategy at step ``s`` restricts them with ``scenario.restrict(soft_labels, s)``.
    """
    _require("avalanche", "avalanche-lib")
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from avalanche.benchmarks.utils import DataAttribute, TaskLabels
    from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset

    def wrap(dataset, soft: torch.Tensor | None):
        targets = _targets(dataset)
        attributes = [DataAttribute(targets.tolist(), "targets")]
        if soft is not None:
            soft = _soft_labels(soft, len(targets), scenario.num_classes)
            attributes.append(DataAttribute(list(soft), "soft_labels", use_in_getitem=True))  # one tensor a sample
        attributes.append(TaskLabels([0] * len(targets)))
        return ClassificationDataset([dataset], data_attributes=attributes)

    return class_incremental_benchmark({"train": wrap(train, soft_labels), "test": wrap(test, None)},
                                       class_order=list(scenario.order),
                                       num_classes_per_exp=list(scenario.increments))


def _hwc(image) -> np.ndarray:
    """One image (uint8 (C, H, W) tensor, or a PIL image) as Continuum's uint8 (H, W) or (H, W, C) array."""
    array = image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        raise ScenarioError(f"Continuum's image arrays are uint8; got {array.dtype} images (drop the transform "
                            "that makes them float)")
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array


def _uint8_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's images as one uint8 (N, H, W[, C]) array, and its labels."""
    if hasattr(dataset, "images_uint8"):  # a distilled set: decoded once, in one tensor
        images = [_hwc(image) for image in dataset.images_uint8()]
    else:
        images = [_hwc(dataset[i][0]) for i in range(len(dataset))]
    return np.stack(images), _targets(dataset)


@dataclass
class ContinuumScenarios:
    """The scenario in Continuum: ``train`` and ``test`` are ``continuum.ClassIncremental`` objects (labels
    renumbered by the order, as ours are); ``soft_labels`` are the training logits with their columns put in
    the order, so column ``j`` is label ``j``."""

    train: Any
    test: Any
    scenario: ClassIncrementalScenario
    train_targets: np.ndarray  # the training labels, set numbering
    soft_labels: torch.Tensor | None

    def soft_labels_for(self, tasks: int | slice) -> torch.Tensor:
        """The soft labels of ``train[tasks]``, row for row, restricted to the classes seen by its last task.
        (Continuum keeps a task's samples in the dataset's order, as :meth:`ClassIncrementalScenario.indices`.)"""
        if self.soft_labels is None:
            raise ScenarioError("these Continuum scenarios were made without soft labels; pass soft_labels=")
        steps = range(self.scenario.num_steps)[tasks]
        steps = list(steps) if isinstance(tasks, slice) else [steps]
        if not steps:
            raise ScenarioError(f"the tasks {tasks} select no step of {self.scenario.num_steps}")
        rows = np.flatnonzero(np.isin(self.scenario.step_of(self.train_targets), steps))
        return self.soft_labels[torch.as_tensor(rows)][:, :self.scenario.seen_count(max(steps))]


def to_continuum(train, test, scenario: ClassIncrementalScenario,
                 soft_labels: torch.Tensor | None = None) -> ContinuumScenarios:
    """Continuum's ``InMemoryDataset`` + ``ClassIncremental`` over ``train`` (a distilled set) and ``test``
    (the real test split), with ``scenario``'s order and increments. Continuum renumbers labels by the order
    (``argsort(order)[y]``), so ``soft_labels`` ((N, num_classes) logits, set numbering) are permuted to match:
    ``soft_labels_for(tasks)`` gives those of ``train[tasks]``."""
    _require("continuum", "continuum")
    from continuum import ClassIncremental
    from continuum.datasets import InMemoryDataset

    def scenario_of(dataset):
        x, y = _uint8_arrays(dataset)
        return ClassIncremental(InMemoryDataset(x, y), increment=list(scenario.increments),
                                class_order=list(scenario.order))

    permuted = None
    if soft_labels is not None:
        permuted = _soft_labels(soft_labels, len(train), scenario.num_classes)[:, list(scenario.order)]
    return ContinuumScenarios(scenario_of(train), scenario_of(test), scenario, _targets(train), permuted)


__all__ = ["CONTINUAL_EXTRA", "ClassIncrementalScenario", "ContinuumScenarios", "PEER_ORDER_SEEDS", "ScenarioError",
           "StepSubset", "class_order", "teacher_logits", "to_avalanche", "to_continuum"]
