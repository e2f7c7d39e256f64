"""Methods as named pieces: RDED's stitched crops, checked against their parts."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch
from PIL import Image

from builders.methods import METHODS, Stitching, stitch
from builders.patches import Patches, keep_stitched, padded_cross_entropy, select_stitched_crops
from builders.presets import get_preset
from builders.sources import TensorImages
from fadrm_datasets import layout
from fadrm_datasets.augment import resized_crop
from tests.builders.test_build import FAST
from tests.helpers import run_cli_ok, tiny_teacher


def test_each_region_of_a_stitched_image_is_its_crop():
    crops = torch.randint(0, 256, (3 * 4, 1, 14, 14), dtype=torch.uint8)  # ipc 3, factor 2
    images = stitch(crops, factor=2, size=28)
    assert images.shape == (3, 1, 28, 28)
    for k in range(3):
        for block, (top, left) in enumerate([(0, 0), (0, 14), (14, 0), (14, 14)]):
            assert torch.equal(images[k, :, top:top + 14, left:left + 14], crops[block * 3 + k])


def test_a_side_that_does_not_divide_gives_the_first_blocks_the_extra_pixels():
    crops = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 1, 9, 9).contiguous()  # ipc 1, factor 3
    image = stitch(crops, factor=3, size=28)[0, 0]
    rows = [int(image[r, 0]) // 3 for r in range(28)]  # block row of each pixel row, read from its value
    assert rows == [0] * 10 + [1] * 9 + [2] * 9
    assert torch.equal(image[:10, 10:19], torch.full((10, 9), 1, dtype=torch.uint8))


def test_stitched_crops_are_each_images_easiest_crop_and_the_class_keeps_the_easiest():
    preset = get_preset("fashion-mnist")
    generator = torch.Generator().manual_seed(0)
    train = TensorImages(torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=generator),
                         torch.arange(60) % 10, list(preset.class_names))
    teacher, stitching = tiny_teacher(), Stitching(factor=2, images_per_class=5, crops_per_image=3)
    patches = select_stitched_crops(preset, train, teacher, ipc=1, stitching=stitching, seed=1)
    assert patches.images.shape == (10, 4, 1, 14, 14)
    for label in range(10):
        scores = patches.cross_entropy[label]
        assert torch.equal(scores, scores.sort().values)  # the easiest first
        assert len(set(patches.source_index[label].tolist())) == 4  # four different real images
        for i in range(4):
            source, (top, left, h, w) = int(patches.source_index[label, i]), patches.box[label, i].tolist()
            assert h == w and int(train.targets[source]) == label  # square crops of the class's images
            crop = resized_crop(train[source][0].float(), (top, left, h, w), 14).round().clamp(0, 255).to(torch.uint8)
            assert torch.equal(patches.images[label, i], crop)
            with torch.no_grad():
                again = padded_cross_entropy(teacher, crop[None], label, preset, "cpu")
            assert torch.allclose(again, scores[i:i + 1], atol=1e-5)


def test_rded_is_built_in_and_its_images_are_the_stitched_patches(tmp_path, monkeypatch):
    from builders import presets
    from tests.fakedata import make_fashion_mnist

    data_root = make_fashion_mnist(tmp_path / "data", per_class=12, test_per_class=2)
    base = presets.get_preset("fashion-mnist")
    small = base.replace(teacher_recipe=dataclasses.replace(base.teacher_recipe, epochs=1),
                         methods={"rded": {"images_per_class": 6, "crops_per_image": 2}})
    monkeypatch.setitem(presets.PRESETS, "fashion-mnist", small)
    root = tmp_path / "build"
    run_cli_ok(["fashion-mnist", "--ipc", "2", "--method", "rded", "--factor", "2", "--data-root", str(data_root),
             "--build-root", str(root), *FAST])
    build = layout.build_dir(root, "fashion-mnist", 2, "rded")
    patches = Patches.load(build / layout.PATCHES)
    assert patches.images.shape[:2] == (10, 8)  # ipc 2 x factor 2 x 2
    for label in range(10):
        expected = stitch(patches.images[label], 2, 28)
        for ipc_id in range(2):
            png = (build / layout.image_relpath(label, ipc_id)).read_bytes()
            pixels = np.asarray(Image.open(io.BytesIO(png)))
            assert np.array_equal(pixels, expected[ipc_id, 0].numpy())
    assert METHODS["rded"].optimisation is None and METHODS["rded"].patches.difficulty == "easy"


def test_rded_keeps_each_images_easiest_crop_and_the_class_keeps_its_easiest_images():
    ce = torch.rand(40, 5, generator=torch.Generator().manual_seed(3))  # 40 images x 5 crops
    rows, crops = keep_stitched(ce, kept=12)
    # The reference, another way: every image's minimum over its crops, the 12 smallest minima.
    minima = [(min(ce[i].tolist()), i) for i in range(40)]
    expected = [i for _, i in sorted(minima)[:12]]
    assert rows.tolist() == expected
    assert [int(ce[i].argmin()) for i in expected] == crops.tolist()
    dropped = [m for m, i in minima if i not in expected]
    assert max(ce[rows, crops].tolist()) <= min(dropped)
