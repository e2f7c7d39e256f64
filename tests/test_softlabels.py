"""The soft-label store and the replay: what the student sees is what the teacher saw."""

from __future__ import annotations

import json

import pytest
import torch

from builders.presets import get_preset
from builders.relabel import RelabelConfig, teacher_logits, teachers_in_mode, write_soft_labels
from fadrm_datasets import layout
from fadrm_datasets.softlabels import (EpochPlan, ReplayBatchSampler, ReplayDataset, SoftLabelStore,
                                       SoftLabelStoreError, apply_plan, compress_logits, expand_logits,
                                       make_epoch_plan, replay_loader, sample_crop_boxes)
from tests.helpers import tiny_teacher

FASHION_MNIST = get_preset("fashion-mnist")
PRESET = FASHION_MNIST.replace(relabel_batch_size=8, relabel_crop_scale=(0.3, 1.0), soft_label_reuse=1)  # every epoch


def tiny_set(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    order = torch.argsort(labels, stable=True)  # canonical: sorted by label
    return images[order], labels[order]


def write_store(directory, teachers=None, images=None, epochs: int = 3, preset=PRESET, **config) -> SoftLabelStore:
    teachers = teachers or [tiny_teacher(scale=2, shift=0.5)]
    images = tiny_set()[0] if images is None else images
    cfg = RelabelConfig.from_preset(preset, epochs=epochs, **config)
    write_soft_labels(teachers, [f"t{i}" for i in range(len(teachers))], images, preset, directory, cfg,
                      progress=False)
    return SoftLabelStore.open(directory)


@pytest.mark.parametrize("mode,num_workers", [("train", 0), ("train", 2), ("eval", 0)])
def test_replay_through_the_teacher_gives_the_stored_logits(tmp_path, mode, num_workers):
    teacher = tiny_teacher(scale=2, shift=0.5)
    images, labels = tiny_set()
    store = write_store(tmp_path / "sl", [teacher], images, epochs=2, teacher_mode=mode)
    assert store.teacher_mode == mode and store.epochs == 2
    for epoch in range(store.epochs):
        record = store.epoch(epoch)
        loader = replay_loader(images, labels, store, epoch, PRESET.mean, PRESET.std, num_workers=num_workers)
        seen = []
        with teachers_in_mode([teacher], mode):
            for b, (x, soft, y) in enumerate(loader):
                batch = record.batches()[b]
                assert x.shape == (len(batch), 1, 28, 28) and x.dtype == torch.float32
                assert soft.dtype == torch.float32 and soft.shape == (len(batch), 10)
                assert y.dtype == torch.int64 and torch.equal(y, labels[batch])
                replayed = teacher_logits([teacher], x)
                assert torch.allclose(replayed, soft, atol=2e-2, rtol=2e-3)
                seen.extend(batch)
        assert sorted(seen) == list(range(len(images)))  # every sample once per epoch
    # Train-mode BN statistics really are batch statistics: eval mode would give other logits.
    if mode == "train":
        record = store.epoch(0)
        x, soft, _ = ReplayDataset(images, labels, store, 0, PRESET.mean, PRESET.std).__getitems__(record.batches()[0])
        assert not torch.allclose(teacher_logits([teacher.eval()], x), soft, atol=2e-2)


def test_replay_is_the_same_for_any_worker_count(tmp_path):
    images, labels = tiny_set()
    store = write_store(tmp_path / "sl", images=images, epochs=1)
    runs = []
    for workers in (0, 2):
        runs.append([tuple(t.clone() for t in batch) for batch in
                     replay_loader(images, labels, store, 0, PRESET.mean, PRESET.std, num_workers=workers)])
    for a, b in zip(*runs):
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)


def test_asking_for_more_epochs_than_stored_errors(tmp_path):
    images, labels = tiny_set()
    store = write_store(tmp_path / "sl", images=images, epochs=2)
    with pytest.raises(ValueError, match="made for 2 epochs"):
        store.epoch(2)
    with pytest.raises(ValueError, match="made for 2 epochs"):
        ReplayBatchSampler(store, 5)
    with pytest.raises(ValueError, match="made for 2 epochs"):
        replay_loader(images, labels, store, 2)
    with pytest.raises(ValueError, match=">= 0"):
        store.epoch(-1)


def test_topk_expands_to_values_and_the_mean_of_the_rest():
    logits = torch.randn(5, 7, 10) * 4
    stored = compress_logits(logits, topk=3)
    assert set(stored) == {"topk_values", "topk_indices", "rest_mean"}
    assert stored["topk_values"].dtype == torch.float16 and stored["topk_indices"].dtype == torch.int16
    full = expand_logits(stored, 10)
    assert full.shape == logits.shape and full.dtype == torch.float32
    top = logits.topk(3, dim=-1)
    assert torch.equal(stored["topk_indices"].long(), top.indices)
    assert torch.allclose(full.gather(-1, top.indices), top.values, atol=1e-2, rtol=1e-3)
    mask = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, top.indices, False)
    true_rest_mean = (logits * mask).sum(-1) / 7
    assert torch.allclose(stored["rest_mean"].float(), true_rest_mean, atol=1e-2, rtol=1e-3)
    expected_rest = stored["rest_mean"].float().unsqueeze(-1).expand_as(logits)
    assert torch.equal(full[mask], expected_rest[mask])
    # Dense: fp16 logits, and top-k >= classes stays dense.
    assert set(compress_logits(logits, None)) == {"logits"} == set(compress_logits(logits, 10))


def test_topk_store_round_trip(tmp_path):
    teacher = tiny_teacher(scale=2, shift=0.5)
    images, _ = tiny_set()
    preset = PRESET.replace(soft_label_topk=4)
    store = write_store(tmp_path / "sl", [teacher], images, epochs=1, preset=preset)
    assert store.topk == 4 and store.index["layout"] == "topk"
    record = store.epoch(0)
    logits = record.logits
    assert logits.shape == (20, 10)
    dense = write_store(tmp_path / "dense", [teacher], images, epochs=1).epoch(0).logits
    top = dense.topk(4, dim=-1)
    assert torch.allclose(logits.gather(1, top.indices), top.values, atol=1e-2)
    rest = (dense.sum(1) - top.values.sum(1)) / 6
    assert torch.allclose(record.stored_logits["rest_mean"].float(), rest, atol=2e-2)


def test_open_explains_what_is_wrong(tmp_path):
    with pytest.raises(SoftLabelStoreError, match="relabel"):
        SoftLabelStore.open(tmp_path)
    store = write_store(tmp_path / "sl", epochs=2)
    index = json.loads((store.directory / layout.SOFT_LABEL_INDEX).read_text())
    # A build directory works too.
    assert SoftLabelStore.open(tmp_path / "sl").epochs == 2
    (tmp_path / "build").mkdir()
    (tmp_path / "sl").rename(tmp_path / "build" / layout.SOFT_LABELS)
    assert SoftLabelStore.open(tmp_path / "build").num_classes == 10
    path = tmp_path / "build" / layout.SOFT_LABELS / layout.SOFT_LABEL_INDEX
    path.write_text(json.dumps({**index, "complete": False}))
    with pytest.raises(SoftLabelStoreError, match="incomplete"):
        SoftLabelStore.open(tmp_path / "build")
    path.write_text(json.dumps({**index, "format": "other"}))
    with pytest.raises(SoftLabelStoreError, match="format should be fadrm-soft-labels"):
        SoftLabelStore.open(tmp_path / "build")
    path.write_text(json.dumps(index))
    (tmp_path / "build" / layout.SOFT_LABELS / index["shards"][0]["file"]).unlink()
    with pytest.raises(SoftLabelStoreError, match="missing"):
        SoftLabelStore.open(tmp_path / "build")


def test_dataset_checks_its_inputs_and_batches(tmp_path):
    images, labels = tiny_set()
    store = write_store(tmp_path / "sl", images=images, epochs=1)
    with pytest.raises(ValueError, match="made for 20"):
        ReplayDataset(images[:5], labels[:5], store, 0)
    dataset = ReplayDataset(images, labels, store, 0, PRESET.mean, PRESET.std)
    batches = store.epoch(0).batches()
    assert [len(b) for b in batches] == [8, 8, 4] and len(ReplayBatchSampler(store, 0)) == 3
    # The sampler reads only the order, and yields the recorded batches.
    fresh = SoftLabelStore.open(tmp_path / "sl")
    assert [list(b) for b in ReplayBatchSampler(fresh, 0)] == batches and fresh._cache is None
    with pytest.raises(ValueError, match="ReplayBatchSampler"):
        dataset.__getitems__(batches[0][:3])
    # The same batch asked in another order comes back in that order, same images.
    x, soft, y = dataset.__getitems__(batches[1])
    xr, softr, yr = dataset.__getitems__(batches[1][::-1])
    assert torch.equal(xr, x.flip(0)) and torch.equal(softr, soft.flip(0)) and torch.equal(yr, y.flip(0))
    # One sample alone: as it appears in its batch.
    xi, si, yi = dataset[batches[1][2]]
    assert torch.equal(xi, x[2]) and torch.equal(si, soft[2]) and yi == int(y[2])


def test_crop_boxes_lie_inside_and_follow_the_scale():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(2000, 28, 28, (0.3, 1.0), g)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    assert (h > 0).all() and (w > 0).all()
    area = (h * w).float() / 784
    assert area.min() > 0.2 and area.max() <= 1.0 and 0.5 < area.mean() < 0.8
    assert len({tuple(b) for b in boxes.tolist()}) > 500


def test_apply_plan_crops_flips_and_cutmixes():
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) / 32
    whole = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4]])
    out = apply_plan(images, whole, torch.tensor([False, True]), torch.tensor([1, 0]), torch.tensor([0, 0, 2, 2]))
    expected = torch.stack([images[0], images[1].flip(2)])
    mixed = expected.clone()
    mixed[0, :, :2, :2] = expected[1, :, :2, :2]
    mixed[1, :, :2, :2] = expected[0, :, :2, :2]
    assert torch.allclose(out, mixed)
    # Normalisation last; an empty CutMix box leaves the images alone.
    norm = apply_plan(images, whole, torch.tensor([False, False]), torch.tensor([1, 0]), torch.tensor([0, 0, 0, 0]),
                      mean=(0.5,), std=(0.25,))
    assert torch.allclose(norm, (images - 0.5) / 0.25)


def test_plan_is_a_function_of_the_generator():
    def plan(seed):
        return make_epoch_plan(37, 28, 8, (0.08, 1.0), torch.Generator().manual_seed(seed))

    a, b, c = plan(1), plan(1), plan(2)
    for name in ("order", "crop_boxes", "flips", "partners", "lams", "cutmix_boxes"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.order, c.order)
    assert sorted(a.order.tolist()) == list(range(37))
    # Partners are a permutation within each batch; lam is the share left to the own image.
    for i, start in enumerate(range(0, 37, 8)):
        part = a.partners[start:start + 8]
        assert sorted(part.tolist()) == list(range(len(part)))
        _, _, h, w = a.cutmix_boxes[i].tolist()
        assert a.lams[i].item() == pytest.approx(1 - h * w / 784, abs=1e-6)
    assert isinstance(EpochPlan.from_tensors(a.to_tensors(), 8), EpochPlan)


@pytest.mark.parametrize("extra", [{"first_epoch": 1, "last_epoch": 1}, {"first_epoch": 0, "last_epoch": 0},
                                   {"first_epoch": 2, "last_epoch": 3}], ids=["overlap", "repeat", "beyond"])
def test_an_index_whose_shards_overlap_or_overrun_is_refused(tmp_path, extra):
    store = write_store(tmp_path / "sl", epochs=2)
    index_path = store.directory / layout.SOFT_LABEL_INDEX
    index = json.loads(index_path.read_text())
    name = layout.shard_name(extra["first_epoch"], extra["last_epoch"])
    index["shards"].append({"file": name, **extra})
    index_path.write_text(json.dumps(index))
    with pytest.raises(SoftLabelStoreError, match="do not cover epochs 0..1 once each"):
        SoftLabelStore.open(store.directory)
