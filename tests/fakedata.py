"""Fake original datasets in their real on-disk formats, for tests (torchvision-style)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx_images(path: Path, images: np.ndarray) -> None:
    header = struct.pack(">IIII", 2051, len(images), images.shape[1], images.shape[2])
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def make_fashion_mnist(root: Path, per_class: int = 20, test_per_class: int = 5, seed: int = 0) -> Path:
    """Write Fashion-MNIST-format idx files under ``root/FashionMNIST/raw``.

    Each class is a bright rectangle at its own place on a dark noisy background, so a small
    ConvNet learns it in one epoch and patch scores differ between images.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, count, prefix in (("train", per_class, "train"), ("test", test_per_class, "t10k")):
        labels = np.repeat(np.arange(10), count)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            top, left = 2 + row * 12 + rng.integers(0, 3), 1 + col * 5 + rng.integers(0, 2)
            images[i, top:top + 10, left:left + 4] = rng.integers(180, 256)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return Path(root)


def _class_image(rng: np.random.Generator, label: int, height: int, width: int) -> np.ndarray:
    """A smooth RGB image whose colour and bright square tell its class (compresses well as PNG/JPEG)."""
    colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.int64)
    image = np.empty((height, width, 3), dtype=np.int64)
    image[:] = colour // 2 + rng.integers(0, 20)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top:top + height // 3, left:left + width // 3] = 255 - colour // 4
    return image.clip(0, 255).astype(np.uint8)


def make_cifar100(root: Path, per_class: int = 3, test_per_class: int = 1, seed: int = 0) -> dict[str, str]:
    """Write CIFAR-100 in torchvision's on-disk layout (``cifar-100-python/{train,test,meta}``).

    The files are Python pickles, as the real ones are; torchvision checks them against its md5 list,
    so the md5 of each fake file is returned for the test to hand to torchvision.
    """
    import hashlib
    import pickle

    from fadrm_datasets.registry import get_set

    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), count)
        images = np.stack([_class_image(rng, int(label), 32, 32) for label in labels])
        entry = {"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1), "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist()}
        (base / split).write_bytes(pickle.dumps(entry))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": get_set("cifar100").classes,
                                              "coarse_label_names": [f"super{i}" for i in range(20)]}))
    return {name: hashlib.md5((base / name).read_bytes()).hexdigest() for name in ("train", "test", "meta")}


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def tiny_imagenet_wnids(count: int = 200) -> list[str]:
    # Not sorted, as the real wnids.txt is not: the class order is the file's.
    return [f"n{(i * 7919) % 100000:08d}" for i in range(count)]


def make_tiny_imagenet(root: Path, per_class: int = 2, val_per_class: int = 1, zipped: bool = False,
                       seed: int = 0) -> Path:
    """Write Tiny-ImageNet's layout (``tiny-imagenet-200/{wnids.txt,train,val}``), or its zip."""
    import shutil

    rng = np.random.default_rng(seed)
    root = Path(root)
    base = root / "tiny-imagenet-200"
    wnids = tiny_imagenet_wnids()
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    annotations = []
    for label, wnid in enumerate(wnids):
        train = base / "train" / wnid / "images"  # not a set's name: Tiny-ImageNet's own
        for i in range(per_class):
            _save_jpeg(train / f"{wnid}_{i}.JPEG", _class_image(rng, label, 64, 64))
        for i in range(val_per_class):
            name = f"val_{label * val_per_class + i}.JPEG"
            _save_jpeg(base / "val" / "images" / name, _class_image(rng, label, 64, 64))  # not a set's name
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    if zipped:
        shutil.make_archive(str(root / "tiny-imagenet-200"), "zip", root, "tiny-imagenet-200")
        shutil.rmtree(base)
    return root


def imagenet_wnids(count: int = 1000) -> list[str]:
    return sorted(f"n{1440764 + i * 97:08d}" for i in range(count))


def make_imagenet_folder(root: Path, per_class: int = 2, val_per_class: int = 1, seed: int = 0) -> Path:
    """Write ImageNet-1K as an ImageFolder tree: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``,
    small non-square JPEGs (the loader resizes and centre-crops them to 224)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for label, wnid in enumerate(imagenet_wnids()):
        for split, count in (("train", per_class), ("val", val_per_class)):
            for i in range(count):
                _save_jpeg(root / split / wnid / f"{wnid}_{i}.JPEG", _class_image(rng, label, 60, 80))
    return root


def make_image_folder_tree(base: Path, wnids, per_class: int = 2, val_per_class: int = 1, seed: int = 0) -> Path:
    """Write ``base/{train,val}/<wnid>/*.JPEG`` for the given classes, small non-square JPEGs coloured by
    their position in ``wnids``: an ImageNet ImageFolder tree, or the inside of a fastai release."""
    rng = np.random.default_rng(seed)
    base = Path(base)
    for label, wnid in enumerate(wnids):
        for split, count in (("train", per_class), ("val", val_per_class)):
            for i in range(count):
                _save_jpeg(base / split / wnid / f"{wnid}_{i}.JPEG", _class_image(rng, label, 60, 80))
    return base


def make_imagenet_subset_release(root: Path, release: str, wnids, per_class: int = 2, val_per_class: int = 1,
                                 seed: int = 0) -> Path:
    """Write a fastai ImageNette/ImageWoof release as extracted from its archive:
    ``root/<release>/{train,val}/<wnid>/*.JPEG`` with its noisy-label CSV beside them; returns ``root``."""
    base = make_image_folder_tree(Path(root) / release, wnids, per_class, val_per_class, seed)
    (base / f"noisy_{release.split('2')[0]}.csv").write_text("path,noisy_labels_0,is_valid\n")
    return Path(root)


def push_imagenet_to_hub(repo_id: str, per_class: int = 2, val_per_class: int = 1, seed: int = 0) -> str:
    """Publish a fake ImageNet-1K as a Hugging Face image-classification dataset (``image``, ``label``;
    splits ``train`` and ``validation``) with the real ``datasets`` client; returns ``hf:<repo_id>``."""
    import datasets
    from PIL import Image

    from fadrm_datasets.registry import get_set

    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=get_set("imagenet").classes)})
    for split, count in (("train", per_class), ("validation", val_per_class)):
        labels = [label for label in range(1000) for _ in range(count)]
        images = [Image.fromarray(_class_image(rng, label, 60, 80)) for label in labels]
        data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        data.push_to_hub(repo_id, split=split)
    return f"hf:{repo_id}"


# --- other methods' released sets, in the layouts `fadrm-build import` reads (builders/importer.py) ------

def real_images(data_root: Path, per_class: int) -> dict[int, list[np.ndarray]]:
    """The first ``per_class`` training images of each class of the fake Fashion-MNIST at ``data_root``."""
    from builders.presets import get_preset
    from builders.sources import load_split

    train = load_split(get_preset("fashion-mnist"), data_root, "train")
    found: dict[int, list[np.ndarray]] = {}
    for index in range(len(train)):
        image, label = train[index]
        if len(found.setdefault(label, [])) < per_class:
            found[label].append(image[0].numpy())
    return dict(sorted(found.items()))


def fadrm_release_path(label: int, ipc_id: int, suffix: str = ".png") -> str:
    """FADRM's and CV-DD's release layout (SRe2L's recover writes it with .jpg): new<cls>/class<cls>_id<ipc>."""
    return f"new{label:03d}/class{label:03d}_id{ipc_id:03d}{suffix}"


def write_class_folders(root: Path, images: dict[int, list[np.ndarray]], path=fadrm_release_path,
                        image_format: str = "PNG") -> Path:
    """``images`` (label -> arrays) as files at ``root / path(label, ipc_id)``."""
    from PIL import Image

    for label, arrays in images.items():
        for ipc_id, array in enumerate(arrays):
            target = Path(root) / path(label, ipc_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(target, format=image_format)
    return Path(root)


def zip_folder(folder: Path, archive: Path, top: str | None = None) -> Path:
    """A zip of ``folder``'s files, under one top folder ``top`` as SRe2L's release zips hold them."""
    import zipfile

    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                zipped.write(path, f"{top}/{name}" if top else name)
    return archive


def push_images_to_hub(repo_id: str, images: dict[int, list[np.ndarray]], image_column: str = "image",
                       label_column: str = "class_id") -> str:
    """``images`` as a Hub dataset with an image column and an integer label column (rethinkdc's parquet
    repos name them ``image`` and ``class_id``), rows class by class; returns ``hf:<repo_id>``."""
    import datasets
    from PIL import Image

    rows = [(Image.fromarray(array), label) for label, arrays in images.items() for array in arrays]
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.Value("int64")})
    data = datasets.Dataset.from_dict({image_column: [r[0] for r in rows], label_column: [r[1] for r in rows]},
                                      features=features)
    data.push_to_hub(repo_id, split="train")
    return f"hf:{repo_id}"
