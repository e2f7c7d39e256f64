"""FADRM recover: the method's pieces against hand computations, and unit determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from builders.imaging import normalize, pixel_bounds
from fadrm_datasets.layout import BuildDirectory
from builders.presets import PRESETS
from builders.recover import (BNStatisticsLoss, Precision, RecoverConfig, Unit, arc_merge, plan_units,
                              recover_set, recover_unit, resample, stage_schedule)
from tests.devices import DEVICES
from tests.helpers import tiny_teacher

FASHION_MNIST, IMAGENET = PRESETS["fashion-mnist"], PRESETS["imagenet"]
TINY = FASHION_MNIST.replace(stage_iterations=(3, 3, 3, 3), class_block=5)


class ResolutionSpy(nn.Module):
    """Wraps a teacher and records the resolution and pixel range of every input it sees."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []
        self.ranges: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x):
        self.sizes.append(x.shape[-1])
        self.ranges.append((x.detach().amin(dim=(0, 2, 3)), x.detach().amax(dim=(0, 2, 3))))
        return self.inner(x)


def test_arc_merge_equals_formula_on_known_tensors():
    x = torch.full((1, 1, 4, 4), 2.0)
    patch = torch.arange(16.0).view(1, 1, 4, 4)
    merged = arc_merge(x, patch, alpha=0.3)
    assert torch.allclose(merged, 0.3 * 2.0 + 0.7 * patch)
    # Across a change of resolution the patch is resampled to the image's resolution first.
    small = torch.zeros(1, 1, 2, 2)
    constant_patch = torch.full((1, 1, 4, 4), 5.0)
    assert torch.allclose(arc_merge(small, constant_patch, alpha=0.5), torch.full((1, 1, 2, 2), 2.5))
    # alpha = 1 keeps the optimised image untouched.
    assert torch.equal(arc_merge(x, patch, alpha=1.0), x)


def test_resample_is_bilinear_and_identity_at_same_size():
    x = torch.rand(2, 3, 8, 8)
    assert resample(x, 8) is x
    up = resample(x, 16)
    assert up.shape == (2, 3, 16, 16)
    assert torch.allclose(up, F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))


def test_stage_schedule_follows_the_preset():
    assert stage_schedule(FASHION_MNIST) == tuple(zip(FASHION_MNIST.stage_resolutions, FASHION_MNIST.stage_iterations))
    assert [r for r, _ in stage_schedule(IMAGENET)] == [200, 224, 200, 224]
    # The Fashion-MNIST schedule really changes resolution, so MRO is exercised on real data.
    assert len(set(FASHION_MNIST.stage_resolutions)) > 1
    # MRO off: every stage at the output size; MRO and ARC off: one stage of the same length.
    assert stage_schedule(FASHION_MNIST, mro=False) == tuple((28, n) for n in FASHION_MNIST.stage_iterations)
    assert stage_schedule(FASHION_MNIST, mro=False, arc=False) == ((28, FASHION_MNIST.total_iterations),)


def test_the_recover_config_takes_the_presets_settings_by_name():
    preset = FASHION_MNIST.replace(lr=0.125, adam_betas=(0.25, 0.75), r_bn=3.0, first_bn_multiplier=7.0, alpha=0.375,
                                   jitter=5, crop_scale=(0.3, 0.9))
    config = RecoverConfig.from_preset(preset, arc=False, amp=True, init="gaussian")
    # The manifest records this dict: its keys, their order and their values.
    assert list(dataclasses.asdict(config).items()) == [
        ("stages", ((24, 100), (28, 100), (24, 100), (28, 100))), ("output_size", 28), ("lr", 0.125),
        ("adam_betas", (0.25, 0.75)), ("r_bn", 3.0), ("first_bn_multiplier", 7.0), ("alpha", 0.375), ("jitter", 5),
        ("crop_scale", (0.3, 0.9)), ("arc", False), ("amp", True), ("init", "gaussian")]


def test_teacher_sees_the_preset_resolution_sequence():
    spy = ResolutionSpy(tiny_teacher())
    config = RecoverConfig.from_preset(TINY)
    recover_unit([spy], torch.arange(5), torch.zeros(5, 1, 28, 28, dtype=torch.uint8), TINY, config, seed=1)
    expected = [r for r, n in config.stages for _ in range(n)]
    assert spy.sizes == expected == [24] * 3 + [28] * 3 + [24] * 3 + [28] * 3


def test_bn_loss_equals_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1),
                          nn.BatchNorm2d(2))
    model[1].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
    model[1].running_var.copy_(torch.tensor([1.5, 0.5, 2.0]))
    model[4].running_mean.copy_(torch.tensor([0.05, 0.4]))
    model[4].running_var.copy_(torch.tensor([0.7, 1.2]))
    model.eval()
    x = torch.randn(4, 1, 6, 6)
    hooks = BNStatisticsLoss(model, first_multiplier=10.0)
    model(x)
    loss = hooks.pop()
    hooks.remove()

    def term(inp, bn):
        flat = inp.transpose(0, 1).reshape(inp.shape[1], -1)
        mean = flat.mean(1)
        var = ((flat - mean[:, None]) ** 2).mean(1)
        return ((mean - bn.running_mean) ** 2).sum().sqrt() + ((var - bn.running_var) ** 2).sum().sqrt()

    h1 = model[0](x)
    h2 = model[3](model[2](model[1](h1)))
    expected = 10.0 * term(h1, model[1]) + term(h2, model[4])
    assert torch.allclose(loss, expected, rtol=1e-5)
    model(x)  # hooks removed: nothing recorded any more
    assert hooks.terms == []


def test_bn_loss_needs_batchnorm():
    with pytest.raises(ValueError, match="BatchNorm"):
        BNStatisticsLoss(nn.Linear(2, 2))


def test_clamp_keeps_pixels_in_range():
    # A huge learning rate would throw pixels far out; the clamp must hold them in the valid
    # range. With no jitter and a full-image crop the teacher sees the pixels as they are.
    preset = TINY.replace(jitter=0, crop_scale=(1.0, 1.0), lr=50.0)
    spy = ResolutionSpy(tiny_teacher())
    config = RecoverConfig.from_preset(preset, mro=False)
    patches = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    recover_unit([spy], torch.arange(5), patches, preset, config, seed=0)
    low, high = (b.flatten() for b in pixel_bounds(preset, "cpu"))
    for step_min, step_max in spy.ranges[1:]:
        assert (step_min >= low - 1e-5).all() and (step_max <= high + 1e-5).all()
    assert any((m <= low + 1e-3).any() or (M >= high - 1e-3).any() for m, M in spy.ranges[1:])


def test_recover_moves_the_images_and_lowers_the_loss():
    teacher = tiny_teacher()
    preset = TINY.replace(stage_iterations=(10, 10, 10, 10), lr=0.1)
    patches = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    result = recover_unit([teacher], torch.arange(5), patches, preset, RecoverConfig.from_preset(preset), seed=0)
    assert result.images.shape == (5, 1, 28, 28) and result.images.dtype == torch.uint8
    assert not torch.equal(result.images, patches)
    assert sum(result.losses[-5:]) < sum(result.losses[:5])


def test_gaussian_init_ignores_the_patches():
    teacher = tiny_teacher()
    config = RecoverConfig.from_preset(TINY, arc=False, mro=False, init="gaussian")
    a = recover_unit([teacher], torch.arange(5), torch.zeros(5, 1, 28, 28, dtype=torch.uint8), TINY, config, 3)
    b = recover_unit([teacher], torch.arange(5), torch.full((5, 1, 28, 28), 255, dtype=torch.uint8), TINY, config, 3)
    assert torch.equal(a.images, b.images)


def test_multi_teacher_round_robin():
    spies = [ResolutionSpy(tiny_teacher(seed)) for seed in range(3)]
    config = RecoverConfig.from_preset(TINY)
    recover_unit(spies, torch.arange(5), torch.zeros(5, 1, 28, 28, dtype=torch.uint8), TINY, config, seed=0)
    assert [len(s.sizes) for s in spies] == [4, 4, 4]  # 12 steps, one teacher per step in turn


class Recorder(nn.Module):
    """Wraps a teacher, records every input it sees, and returns inf logits on call ``overflow_at``."""

    def __init__(self, inner: nn.Module, overflow_at: int | None = None):
        super().__init__()
        self.inner, self.overflow_at = inner, overflow_at
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        logits = self.inner(x)
        return logits + float("inf") if len(self.inputs) - 1 == self.overflow_at else logits


def recording_dtype(seen: set, function):
    """``function``, adding the dtype of what it returns to ``seen``."""
    def spy(*args, **kwargs):
        out = function(*args, **kwargs)
        seen.add(out.dtype)
        return out
    return spy


@pytest.mark.parametrize("device", DEVICES)
def test_amp_computes_in_fp16_keeps_statistics_and_losses_in_fp32_and_stays_near_fp32(device, monkeypatch):
    device = torch.device(device)
    teacher = tiny_teacher().to(device)
    patches = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fp32 = RecoverConfig.from_preset(TINY)
    reference = recover_unit([teacher], torch.arange(5), patches, TINY, fp32, seed=0, device=device)
    convs, ce, bn_terms, losses = [], set(), set(), set()
    teacher.features[0].register_forward_hook(lambda module, inputs, output: convs.append(output.dtype))
    monkeypatch.setattr(F, "cross_entropy", recording_dtype(ce, F.cross_entropy))
    monkeypatch.setattr(BNStatisticsLoss, "pop", recording_dtype(bn_terms, BNStatisticsLoss.pop))
    step = Precision.step

    def recording_the_loss(self, loss, optimizer):
        losses.add(loss.dtype)
        step(self, loss, optimizer)

    monkeypatch.setattr(Precision, "step", recording_the_loss)
    amp = recover_unit([teacher], torch.arange(5), patches, TINY, dataclasses.replace(fp32, amp=True), seed=0,
                       device=device)

    assert len(convs) == fp32.total_iterations and set(convs) == {torch.float16}
    assert ce == bn_terms == losses == {torch.float32}
    assert len(amp.losses) == fp32.total_iterations and all(math.isfinite(v) for v in amp.losses)
    # The scaler stepped every time: no overflow skipped a step, and its scale is still the initial 2^16.
    assert (amp.skipped_steps, amp.loss_scale) == (0, 2.0 ** 16)
    assert (reference.skipped_steps, reference.loss_scale) == (0, None)
    assert amp.peak_memory_mb > 0
    # fp16 rounds activations to 11 significant bits, which nudges the gradients: a pixel whose gradient
    # is near zero may step another way. So a few pixels may differ, none by as much as one Adam step
    # moves a pixel (lr in normalised units, in uint8 levels).
    apart = (amp.images.float() - reference.images.float()).abs()
    assert (apart > 0).float().mean() <= 0.01 and apart.max() < TINY.lr * min(TINY.std) * 255


@pytest.mark.parametrize("device", DEVICES)
def test_amp_skips_an_overflowing_step_and_lowers_the_loss_scale(device):
    device = torch.device(device)
    # No jitter and a full-image crop: the teacher sees the pixels themselves, flipped or not.
    preset = TINY.replace(jitter=0, crop_scale=(1.0, 1.0))
    config = RecoverConfig.from_preset(preset, arc=False, mro=False, amp=True)  # one stage of 12 steps
    teacher = Recorder(tiny_teacher().to(device), overflow_at=5)
    patches = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    result = recover_unit([teacher], torch.arange(5), patches, preset, config, seed=0, device=device)

    assert (result.skipped_steps, result.loss_scale) == (1, 2.0 ** 15)
    assert [math.isfinite(v) for v in result.losses] == [step != 5 for step in range(12)]
    seen = teacher.inputs
    unmoved = [step for step in range(11) if torch.equal(seen[step + 1], seen[step])
               or torch.equal(seen[step + 1], seen[step].flip(3))]
    assert unmoved == [5]  # the pixels stood still on the overflowed step alone


def test_units_cover_every_class_and_ipc_once():
    units = plan_units(FASHION_MNIST.replace(class_block=4), ipc=3)
    pairs = [(u.ipc_id, c) for u in units for c in u.classes]
    assert sorted(pairs) == [(i, c) for i in range(3) for c in range(10)]
    assert len({u.seed(0) for u in units}) == len(units)
    assert Unit(0, 0, (0,)).seed(0) != Unit(0, 0, (0,)).seed(1)


def test_unit_output_does_not_depend_on_unit_order(tmp_path):
    teacher = tiny_teacher()
    config = RecoverConfig.from_preset(TINY)
    patches = torch.randint(0, 256, (10, 2, 1, 28, 28), dtype=torch.uint8)
    units = plan_units(TINY, ipc=2)
    a, b, c = (BuildDirectory(tmp_path / name) for name in "abc")
    recover_set([teacher], patches, TINY, config, a, 2, seed=7, units=units)
    recover_set([teacher], patches, TINY, config, b, 2, seed=7, units=units[::-1])
    # And split over two "ranks", as torchrun would.
    for rank in (1, 0):
        recover_set([teacher], patches, TINY, config, c, 2, seed=7, rank=rank, world_size=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 20
    for name in files:
        reference = (tmp_path / "a" / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() == reference
        assert (tmp_path / "c" / name).read_bytes() == reference


def test_presets_are_frozen_and_consistent():
    for preset in PRESETS.values():
        assert len(preset.mean) == len(preset.std) == preset.channels
        assert preset.stage_resolutions[-1] == preset.image_size
        with pytest.raises(Exception):
            preset.lr = 1.0  # frozen
    with pytest.raises(ValueError, match="stage"):
        FASHION_MNIST.replace(stage_iterations=(1, 2))
    with pytest.raises(ValueError, match="alpha"):
        FASHION_MNIST.replace(alpha=1.5)


def test_normalize_round_trip_bounds():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    low, high = pixel_bounds(FASHION_MNIST, "cpu")
    assert torch.allclose(normalize(images, FASHION_MNIST).flatten(), torch.cat([low.flatten(), high.flatten()]))
