"""Original (real) data for each preset, as datasets of ``(uint8 CxHxW tensor, label)``.

Every source returns :class:`LabeledImages`-like datasets with ``targets`` and ``classes`` so
the teacher trainer, the patch selector and the evaluator stay dataset-agnostic. Small sets live
in memory as one uint8 tensor; large ones decode files on demand.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fadrm_datasets._checks import one_of
from fadrm_datasets.layout import LayoutError, inside, partial_download
from fadrm_datasets.registry import get_set

from .presets import Preset


class DataNotFoundError(FileNotFoundError):
    """The original dataset is not where we looked; the message says what to do."""


class TensorImages(Dataset):
    """A whole split in memory: ``images`` uint8 (N, C, H, W), ``targets`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: list[str]):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        self.images = images
        self.targets = targets.long()
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


class FileImages(Dataset):
    """Images decoded from files on demand, resized to a square ``size``."""

    def __init__(self, files: list[str], targets: list[int], classes: list[str], size: int):
        self.files = files
        self.targets = torch.tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[index]) as img:
            img = _resize_center_crop(img.convert("RGB"), self.size)
            array = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1), int(self.targets[index])


def _resize_center_crop(img, size: int):
    from PIL import Image

    # The standard eval transform: shorter side to size/0.875, then a centre crop.
    short = round(size / 0.875) if min(img.size) > size else size
    scale = short / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                     Image.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST: Debian's dataset-fashion-mnist, a torchvision-style raw folder, or a download.

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): images (N, H, W) or labels (N,), uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2049:  # labels
        return np.frombuffer(data, dtype=np.uint8, count=count, offset=8)
    if magic == 2051:  # images
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, count=count * rows * cols, offset=16).reshape(
            count, rows, cols
        )
    raise ValueError(f"{path} is not an idx file (magic number {magic})")


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist_dirs(root: Path) -> list[Path]:
    return [root / "FashionMNIST" / "raw", root, DEBIAN_FASHION_MNIST]


def load_fashion_mnist(root: Path, split: str, download: bool) -> TensorImages:
    image_stem, label_stem = _FMNIST_FILES[split]
    for directory in fashion_mnist_dirs(root):
        images, labels = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
        if images and labels:
            break
    else:
        if not download:
            raise DataNotFoundError(
                f"Fashion-MNIST not found in {root}/FashionMNIST/raw or {DEBIAN_FASHION_MNIST}; "
                "install Debian's dataset-fashion-mnist package or pass --download"
            )
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=split == "train", download=True)
        return load_fashion_mnist(root, split, download=False)
    x = torch.from_numpy(read_idx(images).copy()).unsqueeze(1)
    y = torch.from_numpy(read_idx(labels).astype(np.int64))
    return TensorImages(x, y, get_set("fashion-mnist").classes)


# ---------------------------------------------------------------------------------------------
# CIFAR-100 through torchvision (its archive is a pickle made by the dataset's authors, the one
# format torchvision knows; we read it only from the official, checksummed download).

def load_cifar100(root: Path, split: str, download: bool) -> TensorImages:
    from torchvision.datasets import CIFAR100

    try:
        data = CIFAR100(str(root), train=split == "train", download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(
            f"CIFAR-100 not found under {root}; pass --download to fetch it ({error})"
        ) from None
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    return TensorImages(images, torch.tensor(data.targets), data.classes)


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet: the standard zip layout (tiny-imagenet-200/{wnids.txt,train,val}).

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def load_tiny_imagenet(root: Path, split: str, download: bool) -> FileImages:
    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file():
        archive = root / "tiny-imagenet-200.zip"
        if archive.is_file() or download:
            from torchvision.datasets.utils import download_and_extract_archive, extract_archive

            if archive.is_file():
                extract_archive(str(archive), str(root))
            else:
                download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5)
        else:
            raise DataNotFoundError(
                f"Tiny-ImageNet not found: put tiny-imagenet-200.zip or its extracted folder "
                f"tiny-imagenet-200/ in {root}, or pass --download"
            )
    wnids = (base / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    files, targets = [], []
    if split == "train":
        for wnid in wnids:
            folder = base / "train" / wnid / "images"  # not a set's name: Tiny-ImageNet's own
            for name in sorted(os.listdir(folder)):
                files.append(str(folder / name))
                targets.append(index[wnid])
    else:
        for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
            name, wnid = line.split("\t")[:2]
            files.append(str(base / "val" / "images" / name))  # not a set's name: as above
            targets.append(index[wnid])
    return FileImages(files, targets, wnids, size=64)


# ---------------------------------------------------------------------------------------------
# ImageNet-1K: an ImageFolder tree (root/train, root/val) or a Hugging Face dataset id.

def load_imagenet(root: Path | str, split: str, download: bool) -> Dataset:
    root_str = str(root)
    if root_str.startswith("hf:"):
        return HFImages(root_str[3:], "train" if split == "train" else "validation", size=224)
    folder = Path(root) / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise DataNotFoundError(
            f"ImageNet-1K not found: expected an ImageFolder tree at {folder} (one folder per "
            "wnid), or pass --data-root hf:<dataset id> to read it from the Hugging Face Hub"
        )
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    files, targets = [], []
    for label, wnid in enumerate(classes):
        for name in sorted(os.listdir(folder / wnid)):
            files.append(str(folder / wnid / name))
            targets.append(label)
    return FileImages(files, targets, classes, size=224)


# ---------------------------------------------------------------------------------------------
# ImageNet subsets (ImageNette, ImageWoof): fastai's released folders, or an ImageNet ImageFolder tree.

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def load_imagenet_subset(root: Path, split: str, download: bool, *, release: str, wnids: Sequence[str],
                         url: str | None = None) -> FileImages:
    """Some ImageNet classes, labelled in the order of ``wnids``, resized and centre-cropped to 224.

    Read from fastai's released layout ``root/<release>/{train,val}/<wnid>/*.JPEG`` (its archive
    ``root/<release>.tgz`` is extracted first, or fetched with ``download``), else from an ImageFolder tree
    ``root/{train,val}/<wnid>/`` such as ImageNet-1K's, of which only ``wnids`` are read. The two split the
    classes' images differently: the release's val folder is its own, ImageNet's holds 50 images a class.
    """
    root = Path(root)
    base = root / release
    if not base.is_dir() and not (root / "train").is_dir():
        _fetch_release(root, release, url, download)
    if not base.is_dir():
        base = root
    folder = base / ("train" if split == "train" else "val")
    files, targets = [], []
    for label, wnid in enumerate(wnids):
        images = _image_files(folder / wnid)
        if not images:
            raise DataNotFoundError(f"no images of class {wnid} in {folder / wnid}; point --data-root at the whole "
                                    f"{release} release or at an ImageNet ImageFolder tree")
        files += images
        targets += [label] * len(images)
    return FileImages(files, targets, list(wnids), size=224)


def _image_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [str(folder / name) for name in sorted(os.listdir(folder)) if name.lower().endswith(IMAGE_SUFFIXES)]


# torchvision's Imagenette downloads and checks (md5) fastai's ImageNette releases, named by size.
_TORCHVISION_IMAGENETTE_SIZES = {"imagenette2": "full", "imagenette2-320": "320px", "imagenette2-160": "160px"}


def _fetch_release(root: Path, release: str, url: str | None, download: bool) -> None:
    """Put ``root/<release>`` in place: extract ``root/<release>.tgz``, else download it."""
    archive = root / f"{release}.tgz"
    if archive.is_file():
        _extract_release(archive, root, release)
    elif download and release in _TORCHVISION_IMAGENETTE_SIZES:
        from torchvision.datasets import Imagenette

        Imagenette(str(root), size=_TORCHVISION_IMAGENETTE_SIZES[release], download=True)
    elif download and url:
        from torchvision.datasets.utils import download_url

        # No md5: fastai's checks.txt hashes an archive's first MiB only, and others' whole-file sums
        # differ between its uploads. Fetched under a partial name, so a cut download is never taken
        # for the archive (download_url trusts any file already there when it has no md5).
        partial = partial_download(archive)
        partial.unlink(missing_ok=True)
        download_url(url, str(root), partial.name)
        os.replace(partial, archive)
        _extract_release(archive, root, release)
    else:
        fetch = "pass --download to fetch it" if url or release in _TORCHVISION_IMAGENETTE_SIZES else \
            "no download is known for it"
        raise DataNotFoundError(f"{release} not found: looked for {root / release}/, {archive} and an ImageNet "
                                f"ImageFolder tree at {root}/train/; {fetch}")


def _extract_release(archive: Path, root: Path, release: str) -> None:
    """Extract ``archive`` whole into a temporary folder beside ``root/<release>``, then move its
    ``<release>/`` into place, so a broken or cut archive leaves nothing that passes for the release. Its
    bytes are not checksummed: only plain files and folders inside the folder are extracted."""
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.", dir=root))
    what_to_do = f"delete {archive} and pass --download to fetch it again"
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise DataNotFoundError(f"{archive} holds {member.name!r}, which is not a plain file or folder; "
                                            f"{what_to_do}")
                inside(staging, member.name)
            # Python's own member filter where it has one (3.10.12+, 3.11.4+); the check above either way.
            tar.extractall(staging, members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        if not (staging / release).is_dir():
            raise DataNotFoundError(f"{archive} holds no {release}/ folder; {what_to_do}")
        os.replace(staging / release, root / release)
    except (tarfile.TarError, EOFError, zlib.error, LayoutError) as error:
        raise DataNotFoundError(f"{archive} cannot be extracted ({' '.join(str(error).split())}); {what_to_do}") \
            from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class HFImages(Dataset):
    """A Hugging Face image-classification dataset (``image``, ``label`` columns)."""

    def __init__(self, repo_id: str, split: str, size: int):
        import datasets

        self.data = datasets.load_dataset(repo_id, split=split)
        self.targets = torch.tensor(self.data["label"], dtype=torch.long)
        self.classes = self.data.features["label"].names
        self.size = size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.data[int(index)]
        img = _resize_center_crop(row["image"].convert("RGB"), self.size)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1), row["label"]


# A reader: (root, split, download, **the preset's source_options) -> the split's images.
Loader = Callable[..., Dataset]
SOURCES: dict[str, Loader] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar100": load_cifar100,
    "tiny-imagenet": load_tiny_imagenet,
    "imagenet": load_imagenet,
    "imagenet-subset": load_imagenet_subset,
}


class SplitView(Dataset):
    """Some of a dataset's samples, keeping ``targets`` and ``classes``."""

    def __init__(self, base: Dataset, indices: torch.Tensor):
        self.base = base
        self.indices = indices
        self.targets = torch.as_tensor(base.targets)[indices]
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[int(self.indices[index])]


VALIDATION_SEED = 20250630  # fixed: the held-out images never change between runs


def validation_indices(num_train: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    return torch.randperm(num_train, generator=generator)[:size].sort().values


SPLITS = ("train", "test", "val", "distill")
EVAL_SPLITS = ("test", "val")  # what a student is measured on: the real test split, or the held-out validation


def load_split(preset: Preset, root: Path | str, split: str, download: bool = False) -> Dataset:
    """A split of the preset's original dataset.

    ``train`` and ``test`` are the dataset's own; ``val`` is ``preset.validation_size`` training
    images held out for choosing settings, and ``distill`` the training images without them (the
    pool that patches and random-real subsets are drawn from).
    """
    one_of("split", split, SPLITS)
    if split == "val" and preset.validation_size <= 0:
        raise ValueError(f"the {preset.name} preset holds out no validation split; use the test split")
    root = root if str(root).startswith("hf:") else Path(root)
    data = SOURCES[preset.source](root, "test" if split == "test" else "train", download, **preset.source_options)
    if len(data.classes) != preset.num_classes:
        raise DataNotFoundError(f"the {preset.display_name} data at {root} holds {len(data.classes)} classes, not "
                                f"{preset.num_classes}; point --data-root at the whole dataset")
    if split in ("train", "test") or preset.validation_size <= 0:
        return data
    held_out = validation_indices(len(data), min(preset.validation_size, len(data) // 2))
    if split == "val":
        return SplitView(data, held_out)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[held_out] = False
    return SplitView(data, torch.nonzero(keep).flatten())


__all__ = ["DataNotFoundError", "EVAL_SPLITS", "FileImages", "HFImages", "SOURCES", "SPLITS", "SplitView", "TensorImages",
           "load_imagenet_subset", "load_split", "read_idx", "validation_indices"]
