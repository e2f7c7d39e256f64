"""The two on-disk layouts of a distilled set, named, read and written here and nowhere else.

A build directory, written by ``builders`` and read by the library (``FADRMDataset.from_build``)::

    build/<dataset>/ipc<N>[-<method>]/
      manifest.json                    # settings, seeds, code version, timings, evaluations, sha256 of every file
      patches.safetensors              # the real patches the images started from
      images/<label:05d>/<ipc_id:05d>.png
      soft_labels/                     # the soft-label store (fadrm_datasets.softlabels)

A published repo, one Hugging Face dataset repo per source dataset, a release per git tag::

    README.md                          # the dataset card; its `configs:` name every IPC
    manifest.json                      # sha256 of every file in the repo, classes, one record per IPC
    ipc<N>/train-<i:05d>-of-<n:05d>.parquet
    ipc<N>/grid.png, ipc<N>/manifest.json, ipc<N>/soft_labels/...
    teachers/<name>.safetensors

Beside the builds, ``build/<dataset>/teachers/`` caches the dataset's trained teachers, which all its
builds share. Every file and folder name of either layout, the hidden ones (locks, shard receipts,
checkpoints, partial downloads) included, is spelled here; ``tests/test_layout_names.py`` keeps it so.

Samples are always in the canonical order: sorted by (label, ipc_id). Paths that come from a
manifest or an index are resolved with :func:`inside` before anything is read or deleted.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ._io import atomic_write_json, cached_sha256
from .schema import BUILD_FORMAT_VERSION, BUILD_MANIFEST_FILE, LayoutError, check_written, read

MANIFEST = "manifest.json"
IMAGES = "images"
PATCHES = "patches.safetensors"
SOFT_LABELS = "soft_labels"
SOFT_LABEL_INDEX = "index.json"  # in the soft-label store's folder
CHECKPOINTS = ".checkpoints"  # hidden: a killed evaluation's state, never in the manifest or a push
PROTOCOL_SOFT_LABELS = f".{SOFT_LABELS}-"  # + a protocol's name: hidden, its own labels, never in the manifest or a push
README = "README.md"
GRID = "grid.png"
TEACHERS = "teachers"
SAFETENSORS = ".safetensors"
LOCK_SUFFIX = ".lock"
BUILD_LOCK = LOCK_SUFFIX  # in a build directory: held by its one builder
BUILD_LOCK_HOLDER = ".lock.holder"  # who holds it, for the message that refuses a second builder
DOWNLOAD_SOURCE = ".fadrm-source.json"  # in a local copy of a release: the commit it was downloaded from
PARTIAL_SUFFIX = ".part"  # a file of a release while it downloads
IMPORT_STAGING_SUFFIX = ".importing"  # a build being imported, beside its place until it is whole
DEFAULT_METHOD = "fadrm"  # the method whose builds take the plain ipc<N> name

_DIGITS = re.compile(r"^\d+$")


class BuildLockedError(RuntimeError):
    """Another builder holds the build directory; the message names it."""


# --- paths --------------------------------------------------------------------------------------

MAX_PATH_NAMES = 8  # the deepest path of a set, ipc<N>/soft_labels/<shard>, has 3


def _lexical(directory: str | os.PathLike, relative: str) -> tuple[Path, Path]:
    """(the resolved ``directory``, ``relative`` joined to it as written), refused unless ``relative`` is
    a relative path that, as written, stays inside the directory, in its one spelling: at most
    :data:`MAX_PATH_NAMES` names, none empty, ``.`` or ``..`` (another spelling could name a file as
    another kind, ``soft_labels/../patches.safetensors``, and a deep one costs a system call a name)."""
    base = Path(directory).resolve()
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or "\\" in relative:
        raise LayoutError(f"refusing the path {relative!r}: not a relative path inside {base}")
    shown = repr(relative) if len(relative) <= 80 else repr(relative[:77] + "...")
    lexical = Path(os.path.normpath(base / relative))
    if lexical == base or base not in lexical.parents:
        raise LayoutError(f"refusing the path {shown}: it leaves {base}")
    names = relative.split("/")
    if len(names) > MAX_PATH_NAMES or any(name in ("", ".", "..") for name in names):
        raise LayoutError(f"refusing the path {shown}: a path of a set has at most {MAX_PATH_NAMES} names, "
                          "none of them empty, '.' or '..'")
    return base, lexical


def inside(directory: str | os.PathLike, relative: str) -> Path:
    """``directory / relative``, refused unless it resolves to a path inside ``directory``.

    Every path read from a manifest, an index or a request goes through here: a published repo
    must never make us read or delete ``../../somewhere``.
    """
    base, lexical = _lexical(directory, relative)
    target = lexical.resolve()
    if target == base or base not in target.parents:
        raise LayoutError(f"refusing the path {relative!r}: it leaves {base}")
    return target


def own_file(directory: str | os.PathLike, relative: str) -> Path | None:
    """``directory / relative`` when it is a regular file reached through no symbolic link below
    ``directory`` (the directory's own path may hold links); None otherwise, and refused as
    :func:`inside` refuses a path that leaves. What a build records and publishes is only ever such a
    file: a link planted in a build must not carry a host's files out."""
    _, lexical = _lexical(directory, relative)
    return lexical if lexical.resolve() == lexical and lexical.is_file() else None


# --- images -------------------------------------------------------------------------------------

def image_name(label: int, ipc_id: int) -> str:
    """``<label>/<ipc_id>.png``: an image's name in the set (its path under ``images/``, and in parquet)."""
    return f"{label:05d}/{ipc_id:05d}.png"


def image_relpath(label: int, ipc_id: int) -> str:
    return f"{IMAGES}/{image_name(label, ipc_id)}"


def image_mode(channels: int) -> str:
    """The PIL mode of a set's images."""
    return "L" if channels == 1 else "RGB"


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) -> PNG bytes (grayscale for one channel)."""
    from PIL import Image

    array = image.permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


_PNG_HEADER = struct.Struct(">8sI4sII")  # signature, IHDR length, "IHDR", width, height


def png_size(header: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG declares in its first 24 bytes, read without decoding it; None for
    anything that does not start as a PNG does."""
    if len(header) < _PNG_HEADER.size:
        return None
    signature, _, chunk, width, height = _PNG_HEADER.unpack_from(header)
    return (width, height) if signature == b"\x89PNG\r\n\x1a\n" and chunk == b"IHDR" else None


def max_png_bytes(size: int) -> int:
    """The most bytes a PNG of ``size`` x ``size`` pixels takes, whatever its colour type: 16-bit RGBA
    stored without compression, a filter byte a row, and room for the chunks around it."""
    raw = size * (size * 8 + 1)
    return raw + raw // 64 + (64 << 10)


def png_file_size(path: str | os.PathLike) -> tuple[int, int] | None:
    with open(path, "rb") as f:
        return png_size(f.read(_PNG_HEADER.size))


def decode_png(source: str | os.PathLike | bytes, channels: int) -> torch.Tensor:
    """A PNG file or its bytes -> uint8 (C, H, W)."""
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        array = np.asarray(img.convert(image_mode(channels)), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@dataclass(frozen=True)
class ImageEntry:
    label: int
    ipc_id: int
    path: Path


def scan_images(images_dir: str | os.PathLike) -> list[ImageEntry]:
    """Every ``<label>/<ipc_id>.png`` under ``images_dir``, in canonical order."""
    images_dir = Path(images_dir)
    entries = []
    if images_dir.is_dir():
        for class_dir in images_dir.iterdir():
            if class_dir.is_dir() and _DIGITS.match(class_dir.name):
                entries += [ImageEntry(int(class_dir.name), int(png.stem), png)
                            for png in class_dir.glob("*.png") if _DIGITS.match(png.stem)]
    return sorted(entries, key=lambda e: (e.label, e.ipc_id))


def stack_images(sources, channels: int) -> torch.Tensor:
    """PNG files or bytes -> one uint8 tensor (N, C, H, W), in the given order."""
    return torch.stack([decode_png(source, channels) for source in sources])


# --- the build directory -----------------------------------------------------------------------

class BuildDirectory:
    """Paths and manifest of one build (``build/<dataset>/ipc<N>``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.images = self.root / IMAGES
        self.soft_labels = self.root / SOFT_LABELS
        self.patches = self.root / PATCHES
        self.manifest_path = self.root / MANIFEST
        self.checkpoints = self.root / CHECKPOINTS

    def image_path(self, label: int, ipc_id: int) -> Path:
        return self.root / image_relpath(label, ipc_id)

    def protocol_soft_labels(self, protocol: str) -> Path:
        """The soft-label store of an evaluation protocol whose labels are not the build's own."""
        return self.root / f"{PROTOCOL_SOFT_LABELS}{protocol}"

    def scan_images(self) -> list[ImageEntry]:
        return scan_images(self.images)

    def load_images(self, channels: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """The images in canonical order: uint8 (N, C, H, W), labels int64 (N,), (label, ipc_id) ids."""
        entries = self.scan_images()
        if not entries:
            raise FileNotFoundError(f"no images in {self.images}; run the recover stage first")
        images = stack_images([e.path for e in entries], channels)
        labels = torch.tensor([e.label for e in entries], dtype=torch.long)
        return images, labels, [(e.label, e.ipc_id) for e in entries]

    def read_manifest(self) -> dict:
        """The manifest, or ``{}`` before the first stage wrote one."""
        if not self.manifest_path.is_file():
            return {}
        return read(self.manifest_path, BUILD_MANIFEST_FILE)

    def start_manifest(self, *, dataset: str, ipc: int, method: str, seed: int, preset: dict, options: dict,
                       code_version: dict, environment: dict) -> dict:
        """Record what the build is and how it is made, in the format this code writes."""
        return self.update_manifest(dataset=dataset, ipc=ipc, method=method, seed=seed, preset=preset, options=options,
                                    code_version=code_version, environment=environment,
                                    format_version=BUILD_FORMAT_VERSION)

    def update_manifest(self, written: Iterable[str] = (), **sections) -> dict:
        """Merge ``sections`` into the manifest and record the sha256 of the files ``written``.

        ``sections`` are fields of :data:`schema.BUILD_MANIFEST`, checked against it before anything is
        written: a field it does not declare, or of another type, is refused (a ValueError).

        ``written`` names (relative to the build) what the calling stage just wrote or checked, and
        only those are hashed, as regular files inside the build (a symbolic link is refused, never
        followed): a file no stage named, such as one copied or linked into the build, is never
        recorded, so never published. Every other file keeps the hash recorded when its own stage wrote
        it, so a file changed behind a stage's back keeps failing its check instead of being blessed.
        Recorded files that are gone are dropped.
        """
        check_written(sections, self.manifest_path, BUILD_MANIFEST_FILE)
        manifest = self.read_manifest()
        manifest.update(sections)
        files = {rel: sha for rel, sha in manifest.get("files", {}).items() if os.path.lexists(self.root / rel)}
        for rel in written:
            path = own_file(self.root, rel)
            if path is None:
                raise LayoutError(f"{self.root / rel} is not a regular file of the build (a symbolic link, or "
                                  "gone); the build never writes one: remove it and run the stage again")
            files[rel] = cached_sha256(path)
        manifest["files"] = dict(sorted(files.items()))
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def record_stage(self, stage: str, record: dict, written: Iterable[str] = ()) -> dict:
        stages = self.read_manifest().get("stages", {})
        stages[stage] = record
        return self.update_manifest(written, stages=stages)

    def image_files(self, num_classes: int, ipc: int) -> list[str]:
        """The images a set of ``num_classes x ipc`` is made of that are on disk (relative paths)."""
        names = [image_relpath(label, ipc_id) for label in range(num_classes) for ipc_id in range(ipc)]
        return [rel for rel in names if os.path.lexists(self.root / rel)]

    def damaged(self, prefixes: tuple[str, ...]) -> list[str]:
        """Files under ``prefixes`` that the manifest records but that are missing, changed since, or no
        longer regular files of the build (a symbolic link put in their place)."""
        recorded = self.read_manifest().get("files", {})
        bad = []
        for rel, expected in sorted(recorded.items()):
            if rel.startswith(prefixes):
                path = own_file(self.root, rel)
                if path is None or cached_sha256(path) != expected:
                    bad.append(rel)
        return bad

    @contextlib.contextmanager
    def lock(self):
        """Hold the directory for one builder: a second one is refused at once, naming the holder."""
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        holder = self.root / BUILD_LOCK_HOLDER
        lock = FileLock(str(self.root / BUILD_LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                who = json.loads(holder.read_text())
                who = f"process {who['pid']} on {who['host']} since {who['since']} ({who['command']})"
            except (OSError, ValueError, KeyError, TypeError):
                who = "another process"
            raise BuildLockedError(f"{self.root} is being built by {who}; wait for it to finish, or use another "
                                   "--build-dir") from None
        try:
            atomic_write_json(holder, {"pid": os.getpid(), "host": socket.gethostname(),
                                       "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)})
            yield self
        finally:
            holder.unlink(missing_ok=True)
            lock.release()


# --- the published repo -------------------------------------------------------------------------

def ipc_dir(ipc: int) -> str:
    return f"ipc{ipc}"


def ipc_prefix(ipc: int) -> str:
    return f"ipc{ipc}/"


def parquet_shard(ipc: int, index: int, count: int) -> str:
    return f"{ipc_prefix(ipc)}train-{index:05d}-of-{count:05d}.parquet"


def parquet_pattern(ipc: int) -> str:
    """The glob of an IPC's parquet shards, as the card's ``configs:`` declares it."""
    return f"{ipc_prefix(ipc)}train-*.parquet"


def is_parquet_shard(relative: str, ipc: int) -> bool:
    return relative.startswith(f"{ipc_prefix(ipc)}train-") and relative.endswith(".parquet")


def repo_soft_labels(ipc: int) -> str:
    return ipc_prefix(ipc) + SOFT_LABELS


def repo_teacher(name: str) -> str:
    return f"{TEACHERS}/{teacher_file(name)}"


def parse_ipc_dir(name: str) -> int | None:
    """``"ipc10"`` -> 10; None for any other name."""
    return int(name[3:]) if name.startswith("ipc") and _DIGITS.match(name[3:]) else None


def ipc_of(relative: str) -> int | None:
    """The IPC whose folder holds ``relative`` (``ipc10/...`` -> 10), None for other files."""
    head, _, rest = relative.partition("/")
    return parse_ipc_dir(head) if rest else None


# --- the build root, and the hidden files beside a set's ---------------------------------------

def build_dir_name(ipc: int, method: str = DEFAULT_METHOD) -> str:
    """``ipc<N>`` for a FADRM build, ``ipc<N>-<method>`` for another method's."""
    return ipc_dir(ipc) if method == DEFAULT_METHOD else f"{ipc_dir(ipc)}-{method}"


def build_dir(build_root: str | os.PathLike, dataset: str, ipc: int, method: str = DEFAULT_METHOD) -> Path:
    """Where a build lands unless told otherwise: ``<build_root>/<dataset>/ipc<N>[-<method>]``."""
    return Path(build_root) / dataset / build_dir_name(ipc, method)


def teachers_dir(build_root: str | os.PathLike, dataset: str) -> Path:
    """The dataset's teacher cache, shared by every build of it: a teacher is trained once, not once per IPC."""
    return Path(build_root) / dataset / TEACHERS


def teacher_file(name: str, epochs: int | None = None) -> str:
    """A teacher's weights file; ``epochs`` names one trained longer than its preset's default recipe
    (for larger sets), which sits beside the default one as ``<name>-<epochs>ep``."""
    return f"{name}-{epochs}ep{SAFETENSORS}" if epochs is not None else f"{name}{SAFETENSORS}"


def hidden_lock(path: str | os.PathLike) -> Path:
    """``.<name>.lock`` beside ``path``: held by whoever writes ``path`` (a shared teacher cache)."""
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def sibling_lock(folder: str | os.PathLike) -> Path:
    """``<folder>.lock`` beside ``folder``: held while the folder is written (a local copy of a release)."""
    return Path(f"{folder}{LOCK_SUFFIX}")


_SOFT_LABEL_SHARD = re.compile(r"^epochs-\d{5}-\d{5}\.safetensors$")


def shard_name(first_epoch: int, last_epoch: int) -> str:
    """A soft-label shard's file name in the store's folder."""
    return f"epochs-{first_epoch:05d}-{last_epoch:05d}{SAFETENSORS}"


def is_shard_name(name: str) -> bool:
    return bool(_SOFT_LABEL_SHARD.match(name))


def receipt_name(shard: str) -> str:
    """The hidden file beside a soft-label shard holding its sha256, written once the shard is whole."""
    return f".{shard}.sha256"


CHECKPOINT_GLOB = f"*{SAFETENSORS}"  # a student checkpoint in ``.checkpoints/``
CHECKPOINT_TEMPORARY_GLOB = f".*{SAFETENSORS}.*.tmp"  # what a killed atomic write of one leaves (_io)


def checkpoint_file(student: str, key: str) -> str:
    """A student run's checkpoint in ``.checkpoints/``: ``key`` tells runs of other settings apart."""
    return f"{student}-{key}{SAFETENSORS}"


def import_staging_prefix(target: str | os.PathLike) -> str:
    """The name a hidden folder beside ``target`` starts with while an import writes the build it
    becomes (``tempfile.mkdtemp`` adds a unique end): never taken for a build."""
    return f".{Path(target).name}{IMPORT_STAGING_SUFFIX}-"


def partial_download(target: str | os.PathLike) -> Path:
    """The hidden file a download of ``target`` streams into: never taken for a file of the set."""
    target = Path(target)
    return target.with_name(f".{target.name}{PARTIAL_SUFFIX}")


__all__ = ["BUILD_LOCK", "BUILD_LOCK_HOLDER", "BuildDirectory", "BuildLockedError", "CHECKPOINTS", "CHECKPOINT_GLOB",
           "CHECKPOINT_TEMPORARY_GLOB", "DEFAULT_METHOD", "DOWNLOAD_SOURCE", "GRID", "IMAGES", "ImageEntry",
           "IMPORT_STAGING_SUFFIX", "LOCK_SUFFIX", "LayoutError", "MANIFEST", "PARTIAL_SUFFIX", "PATCHES",
           "PROTOCOL_SOFT_LABELS", "README", "SAFETENSORS",
           "SOFT_LABELS", "SOFT_LABEL_INDEX", "TEACHERS", "build_dir", "build_dir_name", "checkpoint_file",
           "decode_png", "encode_png", "hidden_lock", "image_mode", "import_staging_prefix", "image_name", "image_relpath", "inside",
           "ipc_dir", "ipc_of", "ipc_prefix", "is_parquet_shard", "is_shard_name", "max_png_bytes", "own_file",
           "parquet_pattern", "parquet_shard", "parse_ipc_dir", "partial_download", "png_file_size", "png_size",
           "receipt_name", "repo_soft_labels", "repo_teacher", "scan_images", "shard_name", "sibling_lock",
           "stack_images", "teacher_file", "teachers_dir"]
