"""``fadrm-build import``: someone else's distilled images made into a build directory of ours.

The build directory is ``<build-root>/<dataset>/ipc<N>-<NAME>`` (``layout.build_dir``), holding the images
at the dataset's size and channels and a manifest whose method is ``imported`` and whose ``provenance``
says where they came from; relabel, evaluate, the scores, the card and push then treat it as any build.

Sources, and the layouts assumed for them (the releases cannot be reached from here; the tests fake each):

- A folder of class folders, one image file (PNG or JPEG) per image. A class folder is named by its
  index (``3``, ``00003``: our own ``images/`` layout), by ``new<index>`` (FADRM's and CV-DD's releases,
  ``new{cls:03d}/class{cls:03d}_id{ipc:03d}.png``, as issue 23 describes them; SRe2L's recover code
  writes the same layout with ``.jpg`` files: VILA-Lab/SRe2L, ``SRe2L/recover/data_synthesis.py``,
  ``save_images``), by the class's name (compared with case, spaces and punctuation ignored, so
  ``T-shirt_top`` is Fashion-MNIST's ``T-shirt/top``) or by its WordNet id (the dataset's declared wnids,
  else its source's class list read from ``--data-root``). A single folder wrapping the class folders
  is stepped into. Within a class, an image's ipc id is the last number in its file name
  (``class003_id007`` -> 7, ``00007`` -> 7) when those numbers differ, else its place in name order;
  the ids are then numbered 0..ipc-1 in that order.
- A ``.zip`` of such a folder: SRe2L's releases (``sre2l_in1k_rn18_4k_ipc50.zip`` and the others in
  VILA-Lab/SRe2L's ``SRe2L/README.md``, "Download"). Members are read into memory, never extracted; a
  member whose name leaves the archive, a link, or one declaring more than :data:`MAX_FILE_BYTES` is refused.
- ``hf:<id>``: a Hub dataset read with ``datasets.load_dataset`` at the commit the Hub names (split
  ``--split``, default ``train``), with an image column (``image``) and an integer label column
  (``label``, or ``class_id`` as rethinkdc's parquet repos of SRe2L, CDA, G-VBSM, LPLD, RDED and DWA
  name it; ``--image-column`` / ``--label-column`` for others). A row's ipc id is its place among its
  class's rows.

Pickled files (``.pt``, ``.pth``, ``.pkl``, ``.pickle``, and ``.tar``, the form of FKD's soft-label
batches) are refused with a line saying how to convert them: nothing imported is ever unpickled.

What is recorded (``provenance`` in the manifest, published with the set): the source (a local folder
or zip by its name only, since the manifest is published; a Hub source by its id), its revision (the
Hub commit; none for a folder or a zip), one sha256 over what was read (``sha256_of`` says of what: a
folder's ``sha256sum`` lines of every file, ``<hex>  <path>``, sorted by path, so that
``find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum`` in the
folder gives it; a zip's own bytes; a Hub dataset's ``sha256sum`` lines of each row's image bytes,
named by row), the class map, the license as the user stated it, and the resize.

Images of another size are refused unless ``--resize FILTER`` names a PIL filter: resizing changes the
pixels the method chose, so the user decides it knowingly and the record says which filter made how
many of them. A colour image for a grayscale dataset is taken only when its three channels are equal.

The class order is checked, never assumed (:func:`check_class_order`): the build's teacher predicts
every image, and the import stops when the given order is near chance, or when the best one-to-one
relabelling of the classes (an assignment on the teacher's confusion matrix) fits clearly better.

Nothing is written until the source has been read and checked whole; the build is then written to a
hidden folder beside its place and renamed into it at the end, so a refusal or a kill leaves no
half-made build, and an existing build of that name is never touched.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch

from fadrm_datasets import layout
from fadrm_datasets._io import sha256_file
from fadrm_datasets.layout import BuildDirectory

from .build import code_version
from .context import environment
from .imaging import normalize
from .methods import METHODS
from .options import BuildOptions
from .presets import Preset
from .sources import load_split
from .teachers import TeacherSet, resolve_teachers

log = logging.getLogger(__name__)

IMPORTED = "imported"  # the method an imported build records
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".tar")
MAX_FILE_BYTES = 64 << 20  # one image file, or a zip member as declared and as read
RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")  # PIL's, by name
NAME = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")

# The class-order check. Near chance: the teacher's top-1 under the best relabelling of the classes is
# below three times chance (30 % for 10 classes), or no higher than the best of SHUFFLES random shufflings
# of the labels reach under their own best relabelling (what images unrelated to their labels get, for
# these predictions and class sizes: with few images a class the best relabelling of noise reaches far
# above chance). Distilled images of the right classes score far above both on the dataset's teacher
# (they are made from it, or from real images it classifies well); noise, another dataset's images or
# another dataset's teacher do not. Clearly better: the classes the best relabelling moves gain at least
# half of their images and at least two, so a pair of classes the teacher confuses a little never moves
# while two swapped classes (gaining nearly all their images) always do.
NEAR_CHANCE_FACTOR = 3.0
SHUFFLES = 100
MOVED_GAIN_FRACTION = 0.5
MIN_GAIN_IMAGES = 2


class ImportRefused(ValueError):
    """The source cannot be imported as asked; one line says why and what to do."""


# --- reading a source ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceImage:
    given: str | int  # its class as the source gives it: a folder's name, or a label column's value
    where: str  # where it is in the source, for messages
    order: str | int  # orders it among its class's images (file name or row)
    data: bytes


def sha256sum_digest(named) -> str:
    """The sha256 of ``sha256sum``'s lines (``<hex>  <name>``) for these (name, bytes) pairs, in their order."""
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in named)
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass
class Source:
    kind: str  # "folder", "zip" or "hub"
    name: str  # what the manifest records as the source
    revision: str | None
    sha256: str
    sha256_of: str
    images: list[SourceImage]


def _pickle_line(name: str) -> str:
    kind = "FKD's soft-label batches" if name.lower().endswith(".tar") else "a pickle"
    return (f"{name} is {kind} (torch.save/pickle): fadrm-build never unpickles downloaded files; load it "
            "yourself where you trust it, save each image as a PNG into one folder per class "
            "(torchvision.utils.save_image), and import that folder (a .tar of image folders: extract it first)")


def _check_file_name(where: str) -> None:
    """Refuse a file that is no image by its name: a pickle, or any other kind of file."""
    suffix = PurePosixPath(where).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ImportRefused(_pickle_line(where))
    if suffix not in IMAGE_SUFFIXES:
        raise ImportRefused(f"{where} is not an image file ({', '.join(IMAGE_SUFFIXES)}); a source holds only "
                            "class folders of images: move it out")


def _arrange(files: list[tuple[tuple[str, ...], str, Callable[[], bytes]]]) -> list[SourceImage]:
    """(path parts, where, reader) of every file -> the images, each in its class folder; one folder
    wrapping all the class folders is stepped into."""
    while files and all(len(parts) > 2 for parts, _, _ in files) and len({parts[0] for parts, _, _ in files}) == 1:
        files = [(parts[1:], where, read) for parts, where, read in files]
    images = []
    for parts, where, read in files:
        _check_file_name(where)
        if len(parts) != 2:
            raise ImportRefused(f"{where} is not in a class folder (a source is <class folder>/<image>, "
                                "or one folder holding those)")
        images.append(SourceImage(parts[0], where, parts[1], read()))
    return images


def _bounded(read: Callable[[int], bytes], where: str) -> bytes:
    data = read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImportRefused(f"{where} is larger than an image file may be ({MAX_FILE_BYTES:,} bytes)")
    return data


def _read_file(path: Path, where: str) -> Callable[[], bytes]:
    def read() -> bytes:
        # Not following a link, and reading only a regular file: a FIFO must not stall the import.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ImportRefused(f"{where} is not a regular file; a source holds only image files")
            return _bounded(f.read, where)
    return read


def read_folder(root: Path) -> Source:
    """A folder of class folders; every link in it refused, never followed."""
    files = []
    for folder, dirs, names in os.walk(root):
        for name in sorted(dirs + names):
            path = Path(folder, name)
            where = f"{root.name}/{path.relative_to(root).as_posix()}"
            if path.is_symlink():
                raise ImportRefused(f"{where} is a symbolic link; a source's files are read only where they lie: "
                                    "copy the file itself in")
            if name in names:
                files.append((path.relative_to(root).parts, where, _read_file(path, where)))
    images = _arrange(files)
    digest = sha256sum_digest(sorted(((image.where.split("/", 1)[1], image.data) for image in images),
                                     key=lambda named: named[0].encode()))
    return Source("folder", root.name, None, digest, "the sha256sum lines of its files, sorted by path", images)


def _member_mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16


def _check_member(info: zipfile.ZipInfo, archive: str) -> None:
    name = info.filename
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or "\\" in name or re.match(r"[A-Za-z]:", name) or any(p in ("", ".", "..") for p in parts):
        raise ImportRefused(f"{archive} holds the member {name!r}, whose path leaves the archive; refusing the "
                            "whole archive")
    if stat.S_ISLNK(_member_mode(info)):
        raise ImportRefused(f"{archive} holds {name!r}, a symbolic link; an archive of images holds only files")
    if info.file_size > MAX_FILE_BYTES:
        raise ImportRefused(f"{archive} member {name!r} declares {info.file_size:,} bytes, more than an image file "
                            f"may be ({MAX_FILE_BYTES:,}): a zip bomb?")


def read_zip(path: Path) -> Source:
    """A zip of a folder of class folders, read member by member into memory (nothing is extracted)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ImportRefused(f"{path.name} is not a readable zip archive ({error})") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        for info in archive.infolist():
            _check_member(info, path.name)

        def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
            def read() -> bytes:
                with archive.open(info) as member:
                    return _bounded(member.read, f"{path.name}:{info.filename}")
            return read

        images = _arrange([(tuple(info.filename.split("/")), f"{path.name}:{info.filename}", reader(info))
                           for info in infos])
    return Source("zip", path.name, None, sha256_file(path), "the zip file", images)


def _column(data, wanted: str | None, choices: tuple[str, ...], what: str, option: str, repo: str) -> str:
    found = [wanted] if wanted else [name for name in choices if name in data.column_names]
    if not found or found[0] not in data.column_names:
        raise ImportRefused(f"hf:{repo} has no {what} column {wanted or ' or '.join(choices)} (its columns: "
                            f"{', '.join(data.column_names)}); name it with {option}")
    return found[0]


def read_hub(repo: str, split: str, image_column: str | None, label_column: str | None) -> Source:
    """A Hub dataset at the commit the Hub names now, its image bytes read undecoded."""
    import datasets
    from huggingface_hub import HfApi

    revision = HfApi().dataset_info(repo).sha
    data = datasets.load_dataset(repo, split=split, revision=revision)
    image_column = _column(data, image_column, ("image",), "image", "--image-column", repo)
    label_column = _column(data, label_column, ("label", "class_id"), "label", "--label-column", repo)
    data = data.cast_column(image_column, datasets.Image(decode=False))
    images = []
    for row, (image, label) in enumerate(zip(data[image_column], data[label_column])):
        payload = image.get("bytes") if isinstance(image, dict) else None
        if payload is None:
            raise ImportRefused(f"hf:{repo} row {row} holds no image bytes (a path only); only images stored in "
                                "the dataset are imported")
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise ImportRefused(f"hf:{repo} row {row}: the label {label!r} is neither a class index nor a name")
        images.append(SourceImage(label, f"hf:{repo} row {row}", row, payload))
    digest = sha256sum_digest((str(image.order), image.data) for image in images)
    return Source("hub", f"hf:{repo}", revision, digest, "the sha256sum lines of each row's image bytes, named by "
                  "row", images)


def read_source(source: str, split: str = "train", image_column: str | None = None,
                label_column: str | None = None) -> Source:
    if source.startswith("hf:"):
        return read_hub(source[3:], split, image_column, label_column)
    path = Path(source)
    if path.is_symlink():
        raise ImportRefused(f"{source} is a symbolic link; name the folder or the zip itself")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ImportRefused(_pickle_line(path.name))
    if path.is_dir():
        return read_folder(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        return read_zip(path)
    if not path.exists():
        raise ImportRefused(f"{source} does not exist; give a folder of class folders, a .zip of one, or hf:<id>")
    raise ImportRefused(f"{source} is neither a folder of class folders, a .zip of one, nor hf:<dataset id>")


# --- classes ---------------------------------------------------------------------------------------

_INDEX = re.compile(r"(?:new|class)?(\d+)")
_WNID = re.compile(r"n\d{8}")


def _plain(name: str) -> str:
    """A class name as compared: lower case, every run of other characters than letters and digits one ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


class ClassNames:
    """What a source's class (a folder name, or a label value) is among the dataset's labels."""

    def __init__(self, preset: Preset, data_root: str):
        self.preset, self.data_root = preset, data_root
        self.names = {_plain(name): label for label, name in enumerate(preset.class_names or ())}
        self._wnids: dict[str, int] | None = None

    def wnids(self) -> dict[str, int]:
        """The dataset's WordNet ids: declared (ImageNet subsets), else its source's classes (read once)."""
        if self._wnids is None:
            declared = self.preset.source_options.get("wnids")
            wnids = declared or load_split(self.preset, self.data_root, "test").classes
            self._wnids = {wnid: label for label, wnid in enumerate(wnids)}
        return self._wnids

    def label(self, given: str | int) -> int:
        count = self.preset.num_classes
        if isinstance(given, int):
            found = given
        elif _INDEX.fullmatch(given):
            found = int(_INDEX.fullmatch(given).group(1))
        elif _WNID.fullmatch(given):
            found = self.wnids().get(given)
        else:
            found = self.names.get(_plain(given))
        if found is None or not 0 <= found < count:
            raise ImportRefused(f"the source's class {given!r} is no class of {self.preset.name} (name classes by "
                                f"index 0..{count - 1}, new<index>, class name or WordNet id)")
        return found


def parse_class_map(text: str | None, num_classes: int) -> dict[int, int]:
    """``A=B,C=D``: images the source gives as class A are of class B; classes not named keep their
    label. The whole must be one-to-one."""
    if not text:
        return {}
    mapping = {}
    for pair in text.split(","):
        try:
            given, label = (int(v) for v in pair.split("="))
        except ValueError:
            raise ImportRefused(f"--class-map {text!r}: write pairs SOURCE=LABEL of class indices separated by "
                                "commas, e.g. 0=3,3=0") from None
        if not (0 <= given < num_classes and 0 <= label < num_classes) or given in mapping:
            raise ImportRefused(f"--class-map {text!r}: {pair} names a class twice or outside 0..{num_classes - 1}")
        mapping[given] = label
    labels = [mapping.get(c, c) for c in range(num_classes)]
    if len(set(labels)) != num_classes:
        raise ImportRefused(f"--class-map {text!r} sends two classes to one label; map the classes one to one")
    return {given: label for given, label in mapping.items() if given != label}


def format_class_map(mapping: dict[int, int]) -> str:
    return ",".join(f"{given}={label}" for given, label in sorted(mapping.items()))


# --- the images --------------------------------------------------------------------------------------

def _decoded(image: SourceImage):
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            picture = Image.open(io.BytesIO(image.data))
            picture.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImportRefused(f"{image.where} declares more pixels than PIL's limit "
                                f"({Image.MAX_IMAGE_PIXELS:,}): a decompression bomb; remove it") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise ImportRefused(f"{image.where} is not an image PIL can read (damaged, or another kind of file); "
                                "remove or replace it") from None
    return picture


def to_pixels(image: SourceImage, preset: Preset, resize: str | None) -> tuple[torch.Tensor, bool]:
    """One image as the dataset's uint8 (C, S, S), and whether it was resized."""
    from PIL import Image

    picture = _decoded(image)
    if picture.mode not in ("L", "RGB", "P"):
        raise ImportRefused(f"{image.where} is a {picture.mode} image; save it as 8-bit grayscale or RGB "
                            "(no alpha, no 16-bit)")
    picture = picture.convert("RGB") if picture.mode == "P" else picture
    size = preset.image_size
    resized = picture.size != (size, size)
    if resized:
        if resize is None:
            raise ImportRefused(f"{image.where} is {picture.size[0]}x{picture.size[1]}, {preset.name} images are "
                                f"{size}x{size}: resize them yourself, or pass --resize FILTER "
                                f"({', '.join(RESIZE_FILTERS)}) to have them resized and the filter recorded")
        if picture.size[0] != picture.size[1]:
            raise ImportRefused(f"{image.where} is {picture.size[0]}x{picture.size[1]}, not square; crop it to a "
                                "square first (a resize would stretch it)")
        picture = picture.resize((size, size), getattr(Image.Resampling, resize.upper()))
    array = np.asarray(picture, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    if preset.channels == 1 and array.shape[2] == 3:
        if not (np.array_equal(array[:, :, 0], array[:, :, 1]) and np.array_equal(array[:, :, 0], array[:, :, 2])):
            raise ImportRefused(f"{image.where} is a colour image; {preset.name} is grayscale: convert the images "
                                "yourself if that is what you mean")
        array = array[:, :, :1]
    if preset.channels == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return torch.from_numpy(array.copy()).permute(2, 0, 1), resized


def _ipc_ids(orders: list) -> list[int]:
    """Each image's ipc id among its class's, from their file names (or rows): by the last number in
    the name when those differ, else by name; numbered 0..n-1 in that order."""
    numbers = [re.findall(r"\d+", PurePosixPath(str(o)).stem) for o in orders]
    keys = [int(n[-1]) for n in numbers] if all(numbers) and len({n[-1] for n in numbers}) == len(orders) \
        and len({int(n[-1]) for n in numbers}) == len(orders) else list(orders)
    ranked = sorted(range(len(orders)), key=lambda i: keys[i])
    ids = [0] * len(orders)
    for rank, i in enumerate(ranked):
        ids[i] = rank
    return ids


@dataclass
class ImportedSet:
    images: torch.Tensor  # uint8 (N, C, S, S), sorted by (given label, ipc id)
    given: torch.Tensor  # int64 (N,): the class each image has under the source's order
    ipc_ids: list[int]
    resized: int  # how many were resized


def gather_images(source: Source, preset: Preset, ipc: int, names: ClassNames, resize: str | None) -> ImportedSet:
    """Every class with exactly ``ipc`` images, each decoded to the dataset's size and channels."""
    by_class: dict[int, list[SourceImage]] = {}
    folders: dict[int, str | int] = {}
    for image in source.images:
        label = names.label(image.given)
        if folders.setdefault(label, image.given) != image.given:
            raise ImportRefused(f"the source's classes {folders[label]!r} and {image.given!r} are both class "
                                f"{label} of {preset.name}; keep one folder (or label) per class")
        by_class.setdefault(label, []).append(image)
    for label in range(preset.num_classes):
        found = len(by_class.get(label, []))
        if found != ipc:
            what = "has no images" if not found else f"has {found} images"
            named = f" ({folders[label]!r} in the source)" if label in folders else ""
            raise ImportRefused(f"class {label} of {preset.name}{named} {what}, --ipc is {ipc}: every class needs "
                                "exactly --ipc images")
    pixels, given, ids, resized = [], [], [], 0
    for label in range(preset.num_classes):
        images = by_class[label]
        order = sorted(zip(_ipc_ids([image.order for image in images]), images), key=lambda pair: pair[0])
        for ipc_id, image in order:
            tensor, was_resized = to_pixels(image, preset, resize)
            pixels.append(tensor)
            given.append(label)
            ids.append(ipc_id)
            resized += was_resized
    return ImportedSet(torch.stack(pixels), torch.tensor(given), ids, resized)


# --- the class order ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderCheck:
    teacher: str
    top1_given: float  # percent of the images the teacher puts in their given class
    top1_best: float  # the same under the best one-to-one relabelling
    best: dict[int, int]  # that relabelling: given label -> label, the classes it moves

    def record(self, num_classes: int) -> dict:
        return {"teacher": self.teacher, "top1_given": round(self.top1_given, 2), "top1_best": round(self.top1_best, 2),
                "near_chance_below": round(NEAR_CHANCE_FACTOR * 100 / num_classes, 2)}


@torch.no_grad()
def teacher_predictions(teachers: TeacherSet, images: torch.Tensor, preset: Preset, batch: int = 256) -> torch.Tensor:
    """The first teacher's top-1 class of each image, in eval mode (per image, whatever the batch)."""
    model = teachers.modules()[0]
    was_training = model.training
    model.eval()
    predicted = [model(normalize(images[i:i + batch].to(teachers.device), preset)).argmax(1).cpu()
                 for i in range(0, len(images), batch)]
    model.train(was_training)
    return torch.cat(predicted)


def best_relabelling(given: np.ndarray, predicted: np.ndarray, num_classes: int) -> tuple[dict[int, int], int]:
    """The one-to-one relabelling of the classes under which the teacher agrees with the most images
    (an assignment on its confusion matrix), as given label -> label for the classes it moves, and
    the images it then agrees with."""
    from scipy.optimize import linear_sum_assignment

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (given, predicted), 1)
    rows, columns = linear_sum_assignment(confusion, maximize=True)
    agreed = int(confusion[rows, columns].sum())
    if agreed == int(np.trace(confusion)):  # the given order is as good: it is kept
        return {}, agreed
    return {int(r): int(c) for r, c in zip(rows, columns) if r != c}, agreed


def shuffled_ceiling(given: np.ndarray, predicted: np.ndarray, num_classes: int) -> int:
    """The most images the teacher agrees with, under their best relabelling, over :data:`SHUFFLES`
    shufflings of the labels (fixed: the check gives the same answer every time)."""
    generator = np.random.default_rng(0)
    return max(best_relabelling(generator.permutation(given), predicted, num_classes)[1] for _ in range(SHUFFLES))


def check_class_order(teachers: TeacherSet, imported: ImportedSet, preset: Preset,
                      user_map: dict[int, int] | None = None) -> OrderCheck:
    """Refuse the import (one line) when the teacher finds the images near chance under any order, or
    when the best relabelling of the classes fits clearly better than the given one (naming it as the
    ``--class-map`` to pass: the user's own map, ``user_map``, with the relabelling applied after it)."""
    predicted = teacher_predictions(teachers, imported.images, preset).numpy()
    given, count, num_classes = imported.given.numpy(), len(predicted), preset.num_classes
    agreed_given = int((predicted == given).sum())
    best, agreed_best = best_relabelling(given, predicted, num_classes)
    check = OrderCheck(teachers.names[0], 100 * agreed_given / count, 100 * agreed_best / count, best)
    chance = 100 / num_classes
    if check.top1_best < NEAR_CHANCE_FACTOR * chance or agreed_best <= shuffled_ceiling(given, predicted, num_classes):
        raise ImportRefused(f"the teacher {check.teacher} puts {check.top1_given:.1f} % of the images in their given "
                            f"class and at most {check.top1_best:.1f} % under any relabelling of the classes, near "
                            f"chance ({chance:.1f} %): these are not {preset.display_name} images as its teacher "
                            "knows them; nothing was imported")
    moved_images = int(np.isin(given, list(best)).sum())
    gain = agreed_best - agreed_given
    if best and gain >= max(MIN_GAIN_IMAGES, MOVED_GAIN_FRACTION * moved_images):
        fits = format_class_map(compose(user_map or {}, best, num_classes))
        again = f"with --class-map {fits}" if fits else "without --class-map"
        raise ImportRefused(f"the class order does not fit: the teacher {check.teacher} puts {check.top1_given:.1f} "
                            f"% of the images in their given class, {check.top1_best:.1f} % under the relabelling "
                            f"{format_class_map(best)} (class=label); if the source is in that order, run the "
                            f"import again {again}")
    return check


def compose(user_map: dict[int, int], check_map: dict[int, int], num_classes: int) -> dict[int, int]:
    """The map from the source's classes that applies ``user_map`` and then ``check_map``."""
    both = {c: check_map.get(user_map.get(c, c), user_map.get(c, c)) for c in range(num_classes)}
    return {c: label for c, label in both.items() if c != label}


# --- the build directory -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportRequest:
    source: str
    ipc: int
    name: str
    class_map: str | None = None
    license: str | None = None
    split: str = "train"
    image_column: str | None = None
    label_column: str | None = None
    resize: str | None = None

    def check(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ImportRefused(f"--name {self.name!r}: use lower-case letters, digits, '.', '_', '+' or '-' "
                                "(it names the build directory)")
        if self.name in METHODS or self.name == IMPORTED:
            raise ImportRefused(f"--name {self.name} is a method of this builder; name the imported set after where "
                                f"it comes from (e.g. {self.name}-release)")
        if self.resize is not None and self.resize not in RESIZE_FILTERS:
            raise ImportRefused(f"--resize {self.resize}: choose one of {', '.join(RESIZE_FILTERS)}")


def _provenance(request: ImportRequest, source: Source, class_map: dict[int, int], imported: ImportedSet,
                check: OrderCheck, preset: Preset) -> dict:
    return {"name": request.name, "source": source.name, "kind": source.kind, "revision": source.revision,
            "sha256": source.sha256, "sha256_of": source.sha256_of, "images": len(imported.images),
            "class_map": {str(given): label for given, label in sorted(class_map.items())},
            "license": request.license,
            "resize": ({"filter": request.resize, "images": imported.resized, "to": preset.image_size}
                       if imported.resized else None),
            "order_check": check.record(preset.num_classes)}


def _write_images(directory: BuildDirectory, images: torch.Tensor, labels: list[int], ipc_ids: list[int]) -> list[str]:
    written = []
    for image, label, ipc_id in zip(images, labels, ipc_ids):
        path = directory.image_path(label, ipc_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(layout.encode_png(image))
        written.append(layout.image_relpath(label, ipc_id))
    return written


def _staging(target: Path) -> Path:
    """A hidden folder beside ``target``, renamed into it once the build is whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=layout.import_staging_prefix(target), dir=target.parent))


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        os.rename(staging, target)  # refused when another import filled the target meanwhile
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ImportRefused(f"{target} was made by someone else while this import ran; nothing of it was "
                                "changed") from None
        raise


def run_import(preset: Preset, options: BuildOptions, request: ImportRequest) -> tuple[BuildDirectory, OrderCheck]:
    """Read and check the source whole, check the class order with the build's teacher, then write the
    build directory at once (a hidden folder renamed into place)."""
    start = time.perf_counter()
    request.check()
    target = options.directory
    if target.exists():
        raise ImportRefused(f"{target} exists; remove it, or import under another --name")
    user_map = parse_class_map(request.class_map, preset.num_classes)
    source = read_source(request.source, request.split, request.image_column, request.label_column)
    imported = gather_images(source, preset, options.ipc, ClassNames(preset, options.data_root), request.resize)
    imported.given = imported.given.apply_(lambda c: user_map.get(c, c))
    device = torch.device(options.device)
    teachers = resolve_teachers(preset, options, device)
    check = check_class_order(teachers, imported, preset, user_map)
    order = sorted(range(len(imported.given)), key=lambda i: (int(imported.given[i]), imported.ipc_ids[i]))
    staging = _staging(target)
    try:
        directory = BuildDirectory(staging)
        written = _write_images(directory, imported.images[order], [int(imported.given[i]) for i in order],
                                [imported.ipc_ids[i] for i in order])
        directory.start_manifest(dataset=preset.name, ipc=options.ipc, method=IMPORTED, seed=options.seed,
                                 preset=preset.to_dict(), options=_import_options(options, request),
                                 code_version=code_version(), environment=environment(device))
        directory.update_manifest(teachers=teachers.records(), teachers_dir=str(options.teachers_dir.resolve()),
                                  provenance=_provenance(request, source, user_map, imported, check, preset))
        directory.record_stage("import", {"complete": True, "seconds": round(time.perf_counter() - start, 2),
                                          "images": len(written)}, written=written)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("import: %d images from %s -> %s", len(order), source.name, target)
    return BuildDirectory(target), check


def _import_options(options: BuildOptions, request: ImportRequest) -> dict:
    """What the user chose, as a build's options are recorded (the folders are dropped on publishing)."""
    kept = ("dataset", "ipc", "seed", "build_root", "build_dir", "data_root", "device", "teacher", "teacher_weights")
    chosen = {name: getattr(options, name) for name in kept}
    return {**chosen, **{k: v for k, v in dataclasses.asdict(request).items() if k not in ("source", "ipc")}}
