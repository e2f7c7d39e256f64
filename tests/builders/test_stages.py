"""Sources, models, teachers and patch selection, each against fake data in the real formats."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from builders.models import UnknownModelError, build_model
from builders.patches import Patches, keep_by_difficulty, select_patches
from builders.presets import UnknownDatasetError, get_preset
from builders.sources import DataNotFoundError, TensorImages, load_imagenet, load_split, load_tiny_imagenet, read_idx
from builders.teachers import TeacherError, load_teacher, read_teacher_metadata, save_teacher
from tests.fakedata import make_fashion_mnist, write_idx_images, write_idx_labels

CIFAR100, FASHION_MNIST, IMAGENET = (get_preset(name) for name in ("cifar100", "fashion-mnist", "imagenet"))


def test_read_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
    write_idx_images(tmp_path / "i.gz", images)
    write_idx_labels(tmp_path / "l.gz", np.array([7, 0, 9]))
    assert np.array_equal(read_idx(tmp_path / "i.gz"), images)
    assert read_idx(tmp_path / "l.gz").tolist() == [7, 0, 9]
    (tmp_path / "bad").write_bytes(b"\x00\x00\x00\x01" + b"\x00" * 12)
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_source_reads_idx_files(tmp_path):
    make_fashion_mnist(tmp_path, per_class=3, test_per_class=2)
    train = load_split(FASHION_MNIST, tmp_path, "train")
    test = load_split(FASHION_MNIST, tmp_path, "test")
    assert len(train) == 30 and len(test) == 20
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10
    assert sorted(train.targets.tolist()) == sorted(list(range(10)) * 3)
    assert train.classes[0] == "T-shirt/top"


def test_missing_fashion_mnist_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("builders.sources.DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load_split(FASHION_MNIST, tmp_path, "train")


def test_tiny_imagenet_source_reads_the_zip_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (base).mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids))
    for wnid in wnids:
        folder = base / "train" / wnid / "images"  # not a set's name: Tiny-ImageNet's own
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (i * 100, 0, 0)).save(folder / f"{wnid}_{i}.JPEG")
    (base / "val" / "images").mkdir(parents=True)  # not a set's name: Tiny-ImageNet's own
    Image.new("RGB", (64, 64)).save(base / "val" / "images" / "val_0.JPEG")  # not a set's name: Tiny-ImageNet's own
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t63\t63\n")
    train = load_tiny_imagenet(tmp_path, "train", download=False)
    val = load_tiny_imagenet(tmp_path, "test", download=False)
    assert len(train) == 4 and train.targets.tolist() == [0, 0, 1, 1]
    assert train[0][0].shape == (3, 64, 64)
    assert len(val) == 1 and val[0][1] == 1


def test_imagenet_image_folder_is_resized_and_centre_cropped(tmp_path):
    for split in ("train", "val"):
        for wnid in ("n0002", "n0001"):
            folder = tmp_path / split / wnid
            folder.mkdir(parents=True)
            Image.new("RGB", (300, 400), (10, 20, 30)).save(folder / "a.JPEG")
    train = load_imagenet(tmp_path, "train", download=False)
    assert train.classes == ["n0001", "n0002"]
    image, label = train[0]
    assert image.shape == (3, 224, 224) and label == 0
    assert image[:, 100, 100].tolist() == [10, 20, 30]
    # Two classes are not ImageNet-1K: the build stops before any work, with what to do.
    with pytest.raises(DataNotFoundError, match="holds 2 classes, not 1000; point --data-root at the whole"):
        load_split(IMAGENET, tmp_path, "train")


def test_unknown_dataset():
    with pytest.raises(UnknownDatasetError, match="choose one of"):
        get_preset("mnist")


@pytest.mark.parametrize("name, channels, size", [
    ("convnet-bn", 1, 28), ("convnet-bn-w16-d2", 3, 32), ("resnet18-cifar", 3, 32), ("resnet18-cifar", 1, 28),
    ("mobilenet_v2", 3, 32), ("shufflenet_v2_x0_5", 3, 32), ("shufflenet_v2_x0_5-cifar", 1, 28),
    ("mobilenet_v2-cifar", 3, 32),
])
def test_models_build_and_classify(name, channels, size):
    model = build_model(name, 7, channels, size).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_convnet_runs_at_every_mro_resolution():
    model = build_model("convnet-bn", 10, 1, 28).eval()
    for size in FASHION_MNIST.stage_resolutions:
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


def test_unknown_model_names():
    with pytest.raises(UnknownModelError, match="unknown model"):
        build_model("resnet99", 10)
    with pytest.raises(UnknownModelError, match="unknown model 'resnet99-cifar'"):
        build_model("resnet99-cifar", 10)


@pytest.mark.parametrize("name, factor", [("shufflenet_v2_x0_5", 4), ("mobilenet_v2", 2)])
def test_cifar_variants_undo_the_imagenet_stems_downsampling(name, factor):
    """The small-image stem (stride-1 first convolution, no max-pool) leaves the last feature map 4x
    (ShuffleNetV2: stride 2 and max-pool undone) or 2x (MobileNetV2: stride 2 undone) as wide."""
    def last_map(model):
        net = model.model
        body = net.features if name.startswith("mobilenet") else torch.nn.Sequential(
            net.conv1, net.maxpool, net.stage2, net.stage3, net.stage4)
        return body(torch.randn(1, 3, 64, 64)).shape[-1]

    imagenet, small = build_model(name, 10, 1, 64).eval(), build_model(f"{name}-cifar", 10, 1, 64).eval()
    assert last_map(small) == last_map(imagenet) * factor
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in small.modules())


@pytest.mark.parametrize("name", ["densenet121-cifar", "vgg11-cifar", "resnet50-cifar", "vit_b_16-cifar"])
def test_cifar_variants_are_refused_where_one_stride_is_not_the_whole_stem(name):
    with pytest.raises(UnknownModelError, match="small-image stem: shufflenet_v2, mobilenet_v2"):
        build_model(name, 10)


def test_torchvision_students_see_a_grey_image_as_three_equal_channels():
    model = build_model("mobilenet_v2", 10, in_channels=1, image_size=28).eval()
    grey = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(grey), model.model(grey.repeat(1, 3, 1, 1)))
    assert build_model("mobilenet_v2", 10).features[0][0].in_channels == 3  # RGB models are left as they are


def test_teacher_round_trip_with_metadata(tmp_path):
    model = build_model("convnet-bn-w8-d2", 10, 1, 28)
    save_teacher(tmp_path / "convnet-bn-w8-d2.safetensors", model, {"test_top1": 91.5, "arch": "convnet-bn-w8-d2"})
    assert read_teacher_metadata(tmp_path / "convnet-bn-w8-d2.safetensors")["test_top1"] == "91.5"
    loaded = load_teacher(FASHION_MNIST, "convnet-bn-w8-d2", tmp_path / "convnet-bn-w8-d2.safetensors")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_teacher_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher(FASHION_MNIST, "convnet-bn", tmp_path / "missing.safetensors")
    save_teacher(tmp_path / "wrong.safetensors", build_model("convnet-bn-w8", 10, 1, 28), {})
    with pytest.raises(TeacherError, match="do not fit"):
        load_teacher(FASHION_MNIST, "convnet-bn", tmp_path / "wrong.safetensors")

    import torchvision.models

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(TeacherError, match="--teacher-weights"):
        load_teacher(IMAGENET, "resnet18")


def test_pth_teacher_weights_load_without_unpickling_objects(tmp_path):
    model = build_model("resnet18-cifar", 100, 3, 32)
    torch.save(model.state_dict(), tmp_path / "teacher.pth")
    loaded = load_teacher(CIFAR100, "resnet18-cifar", tmp_path / "teacher.pth")
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_keep_by_difficulty():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])  # ranks: 1, 5, 3, 0, 4, 2
    assert keep_by_difficulty(scores, 2, "easy").tolist() == [1, 5]
    assert keep_by_difficulty(scores, 2, "hard").tolist() == [4, 2]
    assert keep_by_difficulty(scores, 2, "medium").tolist() == [3, 0]
    with pytest.raises(ValueError, match="difficulty"):
        keep_by_difficulty(scores, 2, "extreme")


def _toy_split(per_class: int = 6) -> TensorImages:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10 * per_class, 1, 28, 28), generator=generator, dtype=torch.uint8)
    return TensorImages(images, torch.arange(10).repeat_interleave(per_class), [str(i) for i in range(10)])


def test_patch_selection_ranks_by_teacher_loss_and_is_reproducible(tmp_path):
    train = _toy_split()
    teacher = build_model("convnet-bn-w8-d2", 10, 1, 28).eval()
    easy = select_patches(FASHION_MNIST, train, teacher, ipc=2, difficulty="easy", seed=3, candidates=3)
    hard = select_patches(FASHION_MNIST, train, teacher, ipc=2, difficulty="hard", seed=3, candidates=3)
    assert easy.images.shape == (10, 2, 1, 28, 28) and easy.images.dtype == torch.uint8
    assert (easy.cross_entropy.max(dim=1).values <= hard.cross_entropy.min(dim=1).values + 1e-6).all()
    for label in range(10):  # every patch comes from its own class
        assert (train.targets[easy.source_index[label]] == label).all()
    again = select_patches(FASHION_MNIST, train, teacher, ipc=2, difficulty="easy", seed=3, candidates=3)
    assert torch.equal(again.images, easy.images)
    easy.save(tmp_path / "p.safetensors", {"difficulty": "easy"})
    loaded = Patches.load(tmp_path / "p.safetensors")
    assert torch.equal(loaded.images, easy.images) and torch.equal(loaded.box, easy.box)


def test_patch_crops_match_their_recorded_boxes():
    from fadrm_datasets.augment import resized_crop

    train = _toy_split()
    patches = select_patches(FASHION_MNIST, train, None, ipc=2, difficulty="random", seed=1)
    for label in (0, 9):
        for i in range(2):
            source = train[int(patches.source_index[label, i])][0].float()
            box = tuple(patches.box[label, i].tolist())
            expected = resized_crop(source, box, 28).round().clamp(0, 255).to(torch.uint8)
            assert torch.equal(patches.images[label, i], expected)


def test_validation_split_is_held_out_of_the_distillation_pool(tmp_path):
    make_fashion_mnist(tmp_path, per_class=4, test_per_class=1)
    train = load_split(FASHION_MNIST, tmp_path, "train")
    val = load_split(FASHION_MNIST, tmp_path, "val")
    pool = load_split(FASHION_MNIST, tmp_path, "distill")
    assert len(val) == 20 and len(pool) == 20  # at most half of a small train split is held out
    assert set(val.indices.tolist()).isdisjoint(pool.indices.tolist())
    assert sorted(val.indices.tolist() + pool.indices.tolist()) == list(range(len(train)))
    assert torch.equal(val[3][0], train[int(val.indices[3])][0])
    assert torch.equal(val.targets, train.targets[val.indices])
    assert torch.equal(load_split(FASHION_MNIST, tmp_path, "val").indices, val.indices)  # fixed
    with pytest.raises(ValueError, match="no validation split"):
        load_split(CIFAR100, tmp_path, "val")


def test_pretrained_teachers_come_from_torchvision_once_cached(tmp_path, monkeypatch):
    """ImageNet's teachers are torchvision's pretrained weights: fetched through torchvision's own cache
    (filled here by hand, as no download is possible), recorded by source, checked before any work."""
    import torchvision.models

    from builders.options import BuildOptions
    from builders.teachers import resolve_teachers

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    reference = build_model("resnet18", 1000).state_dict()
    torch.save(reference, cached)
    teachers = resolve_teachers(IMAGENET, BuildOptions(dataset="imagenet", ipc=1, build_root=str(tmp_path)),
                                torch.device("cpu"))
    assert teachers.records() == {"resnet18": {"source": "torchvision:resnet18"}}
    assert teachers.weights_ids() == {"resnet18": "torchvision:resnet18"}
    model, = teachers.modules()
    assert torch.equal(model.fc.weight, reference["fc.weight"]) and not model.training
    assert not (tmp_path / "imagenet").exists()  # nothing cached or trained by the build itself
