"""Class-incremental scenarios over a distilled set, and the Avalanche and Continuum adapters."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from fadrm_datasets import layout
from fadrm_datasets.continual import (ClassIncrementalScenario, ScenarioError, class_order, teacher_logits,
                                      to_avalanche, to_continuum)
from fadrm_datasets.sets import FADRMDataset
from tests.fakebuild import make_build

NUM_CLASSES, IPC = 4, 3


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    build = make_build(tmp_path_factory.mktemp("continual") / layout.build_dir_name(3), seed=3, ipc=IPC)
    return FADRMDataset.from_build(build)


class RealImages(torch.utils.data.Dataset):
    """A stand-in for a real test split: uint8 (C, H, W) images with their labels, not sorted by class."""

    def __init__(self, per_class: int = 2, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(NUM_CLASSES).repeat(per_class)[torch.randperm(NUM_CLASSES * per_class,
                                                                                  generator=generator)]
        self.images = torch.randint(0, 256, (len(self.targets), 3, 8, 8), dtype=torch.uint8, generator=generator)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], int(self.targets[index])


@pytest.fixture(scope="module")
def soft(train):
    return torch.randn(len(train), NUM_CLASSES, generator=torch.Generator().manual_seed(1))


def test_class_orders_are_the_peers_permutations():
    assert class_order(10, 0) == (2, 8, 4, 9, 1, 6, 7, 3, 0, 5)
    for seed in range(5):
        np.random.seed(seed)  # DM's CL_DM.py: np.random.seed(s); np.random.permutation(n)
        assert class_order(100, seed) == tuple(np.random.permutation(100))
    assert class_order(10, 1) != class_order(10, 0)


@pytest.mark.parametrize("num_classes,steps,seed", [(10, 5, 0), (10, 5, 4), (10, 2, 1), (10, 1, 2), (10, 10, 3),
                                                    (100, 10, 0)])
def test_steps_partition_the_classes_in_the_orders_sequence(num_classes, steps, seed):
    scenario = ClassIncrementalScenario.from_seed(num_classes, steps, seed)
    order = class_order(num_classes, seed)
    assert scenario.order == order and scenario.num_steps == steps
    brought = [scenario.new_classes(s) for s in range(steps)]
    assert [c for new in brought for c in new] == list(order)  # every class once, in the order's sequence
    assert {len(new) for new in brought} == {num_classes // steps}
    for s in range(steps):
        assert scenario.seen_classes(s) == order[:(s + 1) * num_classes // steps]
        assert scenario.seen_count(s) == (s + 1) * num_classes // steps
    assert list(scenario.positions[list(order)]) == list(range(num_classes))  # Continuum's renumbering
    assert list(scenario.step_of(list(order))) == [s for s in range(steps) for _ in range(num_classes // steps)]


def test_uneven_steps_bad_orders_and_missing_steps_are_refused():
    with pytest.raises(ScenarioError, match="10 classes do not split into 3 equal steps.*1, 2, 5, 10"):
        ClassIncrementalScenario.from_seed(10, 3)
    with pytest.raises(ScenarioError, match="exactly once"):
        ClassIncrementalScenario((0, 1, 1, 3), (2, 2))
    with pytest.raises(ScenarioError, match="4 in all"):
        ClassIncrementalScenario((0, 1, 2, 3), (2, 1))
    scenario = ClassIncrementalScenario((3, 1, 0, 2), (1, 3))
    assert scenario.new_classes(1) == (1, 0, 2)
    with pytest.raises(ScenarioError, match="steps 0..1"):
        scenario.seen_classes(2)


def test_each_steps_training_and_test_subsets_hold_exactly_its_seen_classes(train, soft):
    scenario = ClassIncrementalScenario.from_seed(NUM_CLASSES, 2, seed=0)
    test = RealImages()
    for step in range(scenario.num_steps):
        seen = scenario.seen_classes(step)
        for data, subset, per_class in ((train, scenario.train_subset(train, step, soft), IPC),
                                        (test, scenario.test_subset(test, step), 2)):
            assert set(subset.original_targets.tolist()) == set(seen)
            assert len(subset) == per_class * len(seen)  # none of a seen class is left out
            assert list(subset.indices) == sorted(subset.indices)
            new = scenario.indices(data.targets, step, new_only=True)
            assert set(np.asarray(data.targets)[new].tolist()) == set(scenario.new_classes(step))
            assert len(new) == per_class * len(scenario.new_classes(step))
            assert [int(t) for t in subset.targets] == [seen.index(c) for c in subset.original_targets]
            for i in range(len(subset)):
                image, label = subset[i][:2]
                original_image, original_label = data[int(subset.indices[i])]
                assert np.array_equal(np.asarray(image), np.asarray(original_image))
                assert seen[label] == original_label


def test_the_labels_a_step_trains_on_put_no_mass_on_unseen_classes(train):
    scenario = ClassIncrementalScenario.from_seed(NUM_CLASSES, 2, seed=0)
    seen, unseen = scenario.seen_classes(0), scenario.new_classes(1)
    logits = torch.zeros(len(train), NUM_CLASSES)
    logits[:, list(unseen)] = 50.0  # a teacher that would put almost all mass on classes not seen yet
    logits[:, seen[1]] = 1.0
    subset = scenario.train_subset(train, 0, logits)
    probabilities = subset.soft_labels.softmax(dim=1)
    assert subset.soft_labels.shape == (len(subset), len(seen))
    full = torch.zeros(len(subset), NUM_CLASSES)
    full[:, list(seen)] = probabilities  # column j is the class at position j
    assert torch.allclose(full[:, list(unseen)], torch.zeros(())) and torch.allclose(full.sum(1), torch.ones(()))
    assert (full.argmax(dim=1) == seen[1]).all()
    assert torch.equal(scenario.restrict(logits, 1), logits[:, list(scenario.order)])
    with pytest.raises(ScenarioError, match="one row of logits per sample"):
        scenario.train_subset(train, 0, logits[:3])


def test_teacher_logits_are_the_teachers_outputs_on_the_normalised_images(train):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(NUM_CLASSES))
    teacher(torch.zeros(2, 3, 8, 8))
    teacher.train()
    logits = teacher_logits(train, teacher, batch_size=5)
    assert teacher.training  # its mode is given back
    mean, std = torch.tensor(train.mean).view(1, -1, 1, 1), torch.tensor(train.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = teacher.eval()((train.images_uint8().float() / 255 - mean) / std)
    assert logits.shape == (len(train), NUM_CLASSES) and torch.allclose(logits, expected, atol=1e-5)


def _pixels(image) -> np.ndarray:
    """PIL image or (C, H, W) tensor -> (H, W, C) uint8, for comparisons across libraries."""
    if isinstance(image, torch.Tensor):
        image = (image * 255).round().to(torch.uint8) if image.is_floating_point() else image
        return image.permute(1, 2, 0).numpy()
    return np.asarray(image)


def test_avalanche_adapter_yields_our_images_labels_and_soft_labels(train, soft):
    scenario = ClassIncrementalScenario.from_seed(NUM_CLASSES, 2, seed=1)
    test = RealImages()
    benchmark = to_avalanche(train, test, scenario, soft)
    for step, experience in enumerate(benchmark.train_stream):
        assert set(experience.classes_in_this_experience) == set(scenario.new_classes(step))
        ours = scenario.train_subset(train, step, soft)
        new = [i for i in range(len(ours)) if ours.original_targets[i] in scenario.new_classes(step)]
        theirs = [experience.dataset[i] for i in range(len(experience.dataset))]
        assert len(theirs) == len(new)
        assert all(t[-1] == 0 for t in theirs)  # the task label stays last, where strategies read it
        # Avalanche groups samples by class; match them to ours by label and pixels.
        key = lambda label, image: (int(label), _pixels(image).tobytes())  # noqa: E731
        by_key = {key(ours.original_targets[i], ours[i][0]): ours.soft_labels[i] for i in new}
        assert len(by_key) == len(new)
        for image, label, soft_row, _ in theirs:
            assert torch.equal(scenario.restrict(soft_row, step), by_key[key(label, image)])
    for step, experience in enumerate(benchmark.test_stream):
        labels = sorted(int(experience.dataset[i][1]) for i in range(len(experience.dataset)))
        assert labels == sorted(int(y) for y in test.targets if y in scenario.new_classes(step))


def test_continuum_adapter_yields_our_images_labels_and_soft_labels(train, soft):
    scenario = ClassIncrementalScenario.from_seed(NUM_CLASSES, 2, seed=2)
    test = RealImages()
    continuum = to_continuum(train, test, scenario, soft)
    for step in range(scenario.num_steps):
        ours, ours_test = scenario.train_subset(train, step, soft), scenario.test_subset(test, step)
        theirs, theirs_test = continuum.train[:step + 1], continuum.test[:step + 1]  # every task seen so far
        assert len(theirs) == len(ours) and len(theirs_test) == len(ours_test)
        soft_rows = continuum.soft_labels_for(slice(0, step + 1))
        assert torch.equal(soft_rows, ours.soft_labels)
        for i in range(len(ours)):
            image, label, _ = theirs[i]
            assert label == ours.targets[i]  # Continuum renumbers by the order, as we do
            assert np.array_equal(_pixels(image), _pixels(ours[i][0]))
        for i in range(len(ours_test)):
            image, label, _ = theirs_test[i]
            assert label == ours_test.targets[i] and np.array_equal(_pixels(image), _pixels(ours_test[i][0]))
        only_new = continuum.soft_labels_for(step)
        new = [i for i in range(len(ours)) if ours.original_targets[i] in scenario.new_classes(step)]
        assert len(continuum.train[step]) == len(new) and torch.equal(only_new, ours.soft_labels[new])


@pytest.mark.parametrize("adapter,module", [(to_avalanche, "avalanche"), (to_continuum, "continuum")])
def test_an_adapter_without_its_package_says_how_to_install_it(adapter, module, train, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError, match=r"install it with `pip install '\.\[continual\]'` in a checkout"):
        adapter(train, RealImages(), ClassIncrementalScenario.from_seed(NUM_CLASSES, 2))
