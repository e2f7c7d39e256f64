"""The distilled sets as torchvision datasets.

``FADRMImageNet(ipc=10, download=True)`` fetches the pinned version of the set from the Hub (see
:mod:`fadrm_datasets.hub`) into the per-user cache (or under ``root``), checks it, and yields
``(PIL image, label)`` like any torchvision dataset. ``FADRMDataset(root, repo_id=...)`` does the
same for any repo in the published layout, and ``FADRMDataset.from_build(path)`` reads a local
build directory with no download at all, checking its files against the build's manifest.

Samples are always in the canonical order: sorted by (label, ipc_id). Published sets are read from
their parquet shards; build directories from their PNG files (:mod:`fadrm_datasets.layout`).
"""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

from PIL import Image
from torchvision.datasets import VisionDataset

from . import hub, layout
from .hub import (HubError, IntegrityError, IPCNotPublishedError, NotDownloadedError, OfflineError,
                  RepoNotFoundError, VersionNotFoundError)
from .registry import DEFAULT_ORG, ORG_ENV, SETS, SetInfo, find_by_repo, get_set, hub_org
from .schema import MAX_IMAGE_SIZE, MAX_IMAGES


class SetNotFoundError(HubError, FileNotFoundError):
    """A set is neither on disk nor asked to be downloaded."""


# An honest shard's footer takes a few hundred bytes a row group and names the classes twice over: far less
# than this. Parsing one takes many times its size in memory.
MAX_PARQUET_FOOTER = 8 << 20
_ROW_BYTES = 1024  # a row's label, ipc id and image name, and their offsets
_BATCH_BYTES = 64 << 20  # rows are read in batches of at most this many bytes of the largest PNGs
_SHARD_COLUMNS = "columns image{bytes}, label, ipc_id"
_BROKEN = "the published version is broken: report it, or pick another version="


def _read_parquet(paths: list[Path], most_rows: int = MAX_IMAGES,
                  side: int | None = None) -> list[tuple[int, int, bytes]]:
    """(label, ipc_id, PNG bytes) of every row, at most ``most_rows`` in all, of images ``side`` pixels
    wide (None: as wide as the first). A shard is refused, naming it, when it is of another schema or
    its footer holds more than a shard's, rows beyond ``most_rows`` or more data than PNGs of that size
    take: all read from the footer before anything is decompressed. The rows are then read in batches of
    bounded bytes, each image refused as it comes when its PNG header declares another size or it holds
    more bytes than a PNG of its size can, so a footer that understates its sizes is cut off in a batch."""
    import pyarrow as pa

    bound = side or MAX_IMAGE_SIZE
    rows, png_bytes = [], layout.max_png_bytes(bound)
    for path in paths:
        try:
            shard = _open_shard(path, most_rows - len(rows), bound)
            batches = shard.iter_batches(batch_size=max(1, _BATCH_BYTES // png_bytes), columns=["image", "label", "ipc_id"])
            for batch in batches:
                data = batch.column("image").field("bytes").to_pylist()
                labels, ipc_ids = batch.column("label").to_pylist(), batch.column("ipc_id").to_pylist()
                if not all(isinstance(v, int) for v in labels + ipc_ids) or not all(isinstance(b, bytes) for b in data):
                    raise IntegrityError(f"{path} holds labels, ipc ids or images of the wrong type")
                for image in data:
                    size = layout.png_size(image[:32])
                    side = side or (size[0] if size else None)
                    if len(image) > png_bytes or size is None or size != (side, side):
                        what = "not a PNG" if size is None else f"a {size[0]}x{size[1]} PNG of {len(image):,} bytes"
                        raise IntegrityError(f"{path} holds an image that is {what}, where the set's are {side}x{side}"
                                             f" PNGs; {_BROKEN}")
                rows += zip(labels, ipc_ids, data)
        except (pa.ArrowException, ValueError) as error:
            raise IntegrityError(f"{path} is not a shard of a FADRM set ({_SHARD_COLUMNS}): "
                                 f"{' '.join(str(error).split())}") from None
    return rows


def _open_shard(path: Path, most_rows: int, side: int):
    """The parquet file at ``path``, refused unless its footer is of a shard's size, its columns of a
    shard's types, and it declares at most ``most_rows`` rows and what PNGs of ``side`` x ``side`` take."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 8))
        tail = f.read(8)
    footer = int.from_bytes(tail[:4], "little") if tail[4:] == b"PAR1" else 0
    if footer > MAX_PARQUET_FOOTER:
        raise IntegrityError(f"{path} has a footer of {footer:,} bytes, more than a shard's may hold "
                             f"({MAX_PARQUET_FOOTER:,}); {_BROKEN}")
    shard = pq.ParquetFile(path)
    schema = shard.schema_arrow
    image = schema.field("image").type if "image" in schema.names else None
    if not (image is not None and pa.types.is_struct(image) and image.get_field_index("bytes") >= 0
            and all(name in schema.names for name in ("label", "ipc_id"))):
        raise IntegrityError(f"{path} is not a shard of a FADRM set ({_SHARD_COLUMNS})")
    if not (pa.types.is_binary(image.field("bytes").type)
            and all(pa.types.is_integer(schema.field(name).type) for name in ("label", "ipc_id"))):
        raise IntegrityError(f"{path} holds labels, ipc ids or images of the wrong type")
    meta = shard.metadata
    declared = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    room = meta.num_rows * (layout.max_png_bytes(side) + _ROW_BYTES)
    if meta.num_rows > most_rows:
        raise IntegrityError(f"{path} holds {meta.num_rows:,} images, more than its release records; {_BROKEN}")
    if declared > room:
        raise IntegrityError(f"{path} declares {declared:,} bytes for {meta.num_rows:,} images, more than PNGs of "
                             f"{side}x{side} can take ({room:,}); {_BROKEN}")
    return shard


class FADRMDataset(VisionDataset):
    """A FADRM-distilled image set: published on the Hub (``repo_id``) or a local build (``build_dir``).

    Args:
        root: where downloaded versions are kept (``<root>/<org>--<name>/<version>/``); None: the
            per-user cache, ``$FADRM_DATASETS_CACHE`` or ``~/.cache/fadrm_datasets``.
        repo_id: the Hub dataset repo; the flat subclasses (``FADRMCIFAR100``...) fill it in.
        ipc: images per class of the published set to use.
        version: a release tag such as ``"v1.0.0"``; None: the set's pinned default, or else the
            newest release on the Hub (the newest downloaded one with ``download=False``).
        transform, target_transform: applied to the PIL image and to the integer label.
        download: fetch the files when they are missing or corrupted.
        soft_labels: also open the soft-label store; see :meth:`soft_label_loader`.
        build_dir: read this build directory (``images/<class>/<ipc_id>.png`` + ``manifest.json``)
            instead of the Hub.
    """

    set_name: ClassVar[str | None] = None  # registry key of the flat subclasses

    def __init__(self, root: str | os.PathLike | None = None, repo_id: str | None = None, ipc: int = 10,
                 version: str | None = None, transform: Callable | None = None,
                 target_transform: Callable | None = None, download: bool = False, soft_labels: bool = False,
                 build_dir: str | os.PathLike | None = None) -> None:
        super().__init__(root, transform=transform, target_transform=target_transform)
        if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc <= 0:
            raise ValueError(f"ipc must be a positive integer, got {ipc!r}")
        self.info: SetInfo | None = get_set(self.set_name) if self.set_name else None
        self.ipc = ipc
        self.build_dir = Path(build_dir) if build_dir is not None else None
        self._with_soft_labels = soft_labels
        self.soft_label_store = None
        self._png: list[bytes] | None = None
        self._files: list[Path] | None = None
        if self.build_dir is not None:
            self.repo_id, self.version = repo_id, None
            self._open_build()
        else:
            self._open_hub(repo_id, version, download)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        if soft_labels:
            self._open_soft_labels()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_build(cls, path: str | os.PathLike, **kwargs: Any) -> "FADRMDataset":
        """The set in a local build directory (no Hub, no download); ``ipc`` comes from its manifest."""
        ipc = kwargs.pop("ipc", None)
        if ipc is None:
            ipc = layout.BuildDirectory(path).read_manifest().get("ipc")
        if cls.set_name is None:
            kwargs.setdefault("repo_id", None)
        return cls(ipc=ipc or 10, build_dir=path, **kwargs)

    def _open_hub(self, repo_id: str | None, version: str | None, download: bool) -> None:
        if repo_id is None:
            if self.info is None:
                raise ValueError("give repo_id= (a Hub dataset repo such as 'fadrm/fadrm-cifar100'), build_dir=, "
                                 "or use one of FADRMCIFAR100, FADRMTinyImageNet, FADRMImageNet, FADRMFashionMNIST")
            repo_id = self.info.repo_id
        if self.root is None:
            self.root = str(hub.default_root())
        hub.check_repo_id(repo_id)
        self.info = self.info or find_by_repo(repo_id)
        self.repo_id = repo_id
        pinned = self.info.default_version if self.info is not None else None
        parts = hub.PARTS if self._with_soft_labels else ("images",)  # an images-only load fetches no labels
        try:
            self.version = hub.resolve_version(repo_id, version, pinned, self.root, online=download)
            directory = hub.fetch(repo_id, self.ipc, self.version, self.root, download=download, parts=parts)
        except NotDownloadedError as error:
            raise SetNotFoundError(f"{error}. {self._how_to_get()}") from None
        except RepoNotFoundError:
            if self.info is None or self.info.versions or self.info.repo is not None or hub_org() != DEFAULT_ORG:
                raise  # a repo of the user's own: "not found, check the name or log in" is the right hint
            raise RepoNotFoundError(self._not_published()) from None
        self.data_dir = directory
        manifest = hub.read_manifest(directory)
        self.manifest = manifest
        self._verify_files = hub.ipc_files(manifest, self.ipc, parts)
        self._shards = sorted(p for p in self._verify_files if layout.is_parquet_shard(p, self.ipc))
        if not self._shards:
            raise IntegrityError(f"{repo_id} {self.version} lists no {layout.parquet_pattern(self.ipc)} in its "
                                 "manifest")
        record = manifest["ipcs"][str(self.ipc)]
        self._configure(manifest, record["preset"])
        self._load(expected=record["num_images"])

    def _not_published(self) -> str:
        info = self.info
        return (f"{info.display_name} has no published release yet ({info.repo_id} is not on {hub._endpoint()}): build "
                f"it with `fadrm-build {info.name} --ipc {self.ipc}` and open it with FADRMDataset.from_build(...), or "
                f"push your build to your own organisation and set {ORG_ENV}")

    def _how_to_get(self) -> str:
        name = self.info.name if self.info is not None else "<dataset>"
        return (f"Pass download=True to fetch it from the Hugging Face Hub, or build it locally with "
                f"`fadrm-build {name} --ipc {self.ipc}` and pass build_dir=<the build directory>.")

    def _open_build(self) -> None:
        build = layout.BuildDirectory(self.build_dir)
        if not build.manifest_path.is_file():
            raise SetNotFoundError(f"no build directory at {self.build_dir} (no {layout.MANIFEST}); "
                                   f"{self._how_to_get()}")
        manifest = build.read_manifest()
        self.manifest = manifest
        if manifest.get("ipc") is not None and int(manifest["ipc"]) != self.ipc:
            raise ValueError(f"{self.build_dir} holds ipc={manifest['ipc']}, not ipc={self.ipc}; pass "
                             f"ipc={manifest['ipc']} or use FADRMDataset.from_build(path)")
        if self.info is None and manifest.get("dataset"):
            try:
                self.info = get_set(manifest["dataset"])
            except KeyError:
                self.info = None
        self.data_dir = self.build_dir
        # The files the set is made of: its images, and its soft labels when asked for.
        wanted = (layout.IMAGES + "/", layout.SOFT_LABELS + "/") if self._with_soft_labels else (layout.IMAGES + "/",)
        self._verify_files = {p: h for p, h in manifest.get("files", {}).items() if p.startswith(wanted)}
        self._configure(manifest, manifest.get("preset", {}))
        # Checked before any image is opened: a recorded file replaced by a link (to a FIFO, or a file
        # elsewhere) is refused unread.
        if not self._check_integrity():
            raise IntegrityError(f"the files of {self.build_dir} do not match the sha256 in its {layout.MANIFEST}: "
                                 "rerun the stage that wrote them (`fadrm-build ...` resumes) before using the set")
        self._load()

    def _configure(self, manifest: dict, preset: dict) -> None:
        """The set's classes, geometry and normalisation: the manifest's, else the registry's."""
        info = self.info
        num_classes = preset.get("num_classes") or (info.num_classes if info else None)
        classes = manifest.get("classes") or (info.classes if info else None)
        if classes is None:
            if num_classes is None:
                raise IntegrityError("the manifest names neither the classes nor their number")
            classes = [str(i) for i in range(num_classes)]
        if info is not None and len(classes) != info.num_classes:
            raise IntegrityError(f"{self.build_dir or self.repo_id} holds {len(classes)} classes, not the "
                                 f"{info.num_classes} of {info.display_name}; open it with FADRMDataset instead")
        # A known set's geometry is the registry's: a release must not choose the bounds it is read within.
        differ = [f"{name} {preset[name]}" for name in ("num_classes", "channels", "image_size")
                  if info is not None and preset.get(name) not in (None, getattr(info, name))]
        if differ:
            raise IntegrityError(f"{self.build_dir or self.repo_id}: its preset says {', '.join(differ)}, not "
                                 f"{info.display_name}'s; open it with FADRMDataset instead")
        self._check_classes(classes, num_classes)
        self.classes = list(classes)
        self.channels = int(preset.get("channels") or (info.channels if info else 3))
        self.image_size = int(preset.get("image_size") or (info.image_size if info else 0)) or None
        self.mean = tuple(preset.get("mean") or (info.mean if info else (0.5,) * self.channels))
        self.std = tuple(preset.get("std") or (info.std if info else (0.5,) * self.channels))
        if self.channels not in (1, 3) or len(self.mean) != self.channels or len(self.std) != self.channels:
            raise IntegrityError(f"{self.build_dir or self.repo_id}: its preset declares {self.channels} channels "
                                 f"with mean {list(self.mean)} and std {list(self.std)}; a set has 1 or 3 channels, "
                                 "one mean and std each")

    def _check_classes(self, classes: list[str], num_classes: int | None) -> None:
        """Refuse a class list of another length than the preset's ``num_classes``, or naming a class twice."""
        where = self.data_dir / layout.MANIFEST
        if num_classes is not None and len(classes) != num_classes:
            raise IntegrityError(f"{where} names {len(classes):,} classes, its preset {num_classes:,}; download or "
                                 "rebuild the set")
        seen: set[str] = set()
        for name in classes:
            if name in seen:
                raise IntegrityError(f"{where} names the class {json.dumps(name)} twice; download or rebuild the set")
            seen.add(name)

    def _load(self, expected: int | None = None) -> None:
        """Read labels, ipc ids and the encoded images, sorted by (label, ipc_id), refusing any that do not
        belong to the set (:meth:`_check_rows`); a release must hold the ``expected`` number of images."""
        if self.build_dir is not None:
            entries = layout.scan_images(self.build_dir / layout.IMAGES)
            if not entries:
                raise SetNotFoundError(f"{self.build_dir / layout.IMAGES} holds no images; run the build "
                                       "(`fadrm-build ...`) first")
            unrecorded = [e.path for e in entries if e.path.relative_to(self.build_dir).as_posix() not in self._verify_files]
            if unrecorded:
                raise IntegrityError(f"{unrecorded[0]} is not recorded in {self.build_dir / layout.MANIFEST} (left by an "
                                     "interrupted recover, or copied in): run the build command again to finish it")
            rows = [(e.label, e.ipc_id, e.path) for e in entries]
            self._check_sizes(entries)
            self._check_rows(rows, self.build_dir / layout.IMAGES)
            self._files = [e.path for e in entries]
        else:
            rows = _read_parquet([self.data_dir / p for p in self._shards], expected or MAX_IMAGES, self.image_size)
            rows.sort(key=lambda r: (r[0], r[1]))
            where = self.data_dir / layout.ipc_dir(self.ipc)
            self._check_rows(rows, where)
            self.image_size = self.image_size or layout.png_size(rows[0][2][:32])[0]
            if expected is not None and len(rows) != expected:
                raise IntegrityError(f"{where} holds {len(rows)} images, its manifest records {expected}; download "
                                     "the set again, or pick another version=")
            self._png = [r[2] for r in rows]
        self.targets = [int(r[0]) for r in rows]
        self.ipc_ids = [int(r[1]) for r in rows]

    def _check_rows(self, rows: list[tuple[int, int, Any]], where) -> None:
        """Refuse an image whose label or ipc id lies outside the set, and a (label, ipc id) pair seen twice."""
        for label, ipc_id, _ in rows:
            if not (0 <= label < len(self.classes) and 0 <= ipc_id < self.ipc):
                raise IntegrityError(f"{where}: an image has label {label} and ipc id {ipc_id}, outside the set's "
                                     f"{len(self.classes)} classes of {self.ipc} images; download or rebuild the set")
        if len({(label, ipc_id) for label, ipc_id, _ in rows}) != len(rows):
            raise IntegrityError(f"{where}: an image (a label and ipc id) appears twice; download the set again")

    def _check_sizes(self, entries: list[layout.ImageEntry]) -> None:
        """Refuse a build's image whose PNG header declares another size than the set's, read before anything
        is decoded (PIL's decompression-bomb limit lets far larger images through)."""
        for entry in entries:
            size = layout.png_file_size(entry.path)
            self.image_size = self.image_size or (size[0] if size else None)
            if size is None or size != (self.image_size, self.image_size):
                raise IntegrityError(f"{entry.path} is {'not a PNG' if size is None else f'{size[0]}x{size[1]}'}, not "
                                     f"the set's {self.image_size}x{self.image_size}; rebuild the set")

    def _open_soft_labels(self) -> None:
        from .softlabels import SoftLabelStore

        if self.build_dir is not None:
            directory = self.build_dir / layout.SOFT_LABELS
        else:
            directory = self.data_dir / layout.repo_soft_labels(self.ipc)
        if not directory.is_dir():
            where = f"{self.repo_id} {self.version}" if self.build_dir is None else str(self.build_dir)
            raise SetNotFoundError(f"{where} ipc{self.ipc} has no soft labels ({directory} is missing); "
                                   "run the relabel stage, or use soft_labels=False")
        store = SoftLabelStore.open(directory)
        if store.num_samples != len(self) or store.num_classes != len(self.classes):
            raise IntegrityError(f"the soft labels in {directory} are for {store.num_samples} samples of "
                                 f"{store.num_classes} classes, the set has {len(self)} of {len(self.classes)}")
        if store.image_size != self.image_size:  # every replayed batch is made at the store's size
            size, side = store.image_size, self.image_size
            raise IntegrityError(f"the soft labels in {directory} are made for {size}x{size} images, the set's are "
                                 f"{side}x{side}; download or rebuild the set")
        self.soft_label_store = store

    # -- the Dataset protocol --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.targets)

    def _encoded(self, index: int):
        if self.build_dir is not None:
            return self._files[index]
        if self._png is None:  # dropped when pickled (see __getstate__): read the shards again
            self._load()
        return io.BytesIO(self._png[index])

    def _decoded(self, index: int, decode: Callable):
        """``decode`` applied to sample ``index``'s encoded image; one that does not decode is named."""
        try:
            return decode(self._encoded(index))
        except (OSError, ValueError, SyntaxError) as error:  # what PIL raises for a damaged image
            name = self._files[index] if self._files is not None else (
                f"{self.data_dir / layout.ipc_dir(self.ipc)}: the image of label {self.targets[index]}, ipc id "
                f"{self.ipc_ids[index]}")
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IntegrityError(f"{name} cannot be decoded ({reason}); download or rebuild the set") from None

    def _pil(self, encoded) -> Image.Image:
        with Image.open(encoded) as img:
            return img.convert(layout.image_mode(self.channels))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = self._decoded(index, self._pil)
        target = self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __getstate__(self) -> dict:
        # Workers re-read the (already verified) shards instead of receiving every image by pickle.
        state = self.__dict__.copy()
        state["_png"] = None
        state.pop("_uint8", None)
        return state

    def images_uint8(self):
        """Every image as one uint8 tensor (N, C, H, W) in the canonical order."""
        if getattr(self, "_uint8", None) is None:
            import torch

            decode = functools.partial(layout.decode_png, channels=self.channels)
            self._uint8 = torch.stack([self._decoded(i, decode) for i in range(len(self))])
        return self._uint8

    def soft_label_loader(self, epochs, num_workers: int = 0, **kwargs: Any):
        """A DataLoader replaying relabel epochs ``epochs`` (one, or several in order, e.g. ``range(300)``
        for a whole run, whose workers then start once): (normalised images, soft logits, labels) batches,
        exactly as the teacher saw them."""
        import torch

        from .softlabels import replay_loader

        if self.soft_label_store is None:
            raise RuntimeError("this dataset was opened without soft labels; pass soft_labels=True")
        labels = torch.tensor(self.targets, dtype=torch.long)
        return replay_loader(self.images_uint8(), labels, self.soft_label_store, epochs, self.mean, self.std,
                             num_workers=num_workers, **kwargs)

    @property
    def soft_label_epochs(self) -> int | None:
        """Epochs a student can train on the set's soft labels (None when opened without them); the
        store may hold fewer, reused in turn (``soft_label_store.epochs``)."""
        return self.soft_label_store.train_epochs if self.soft_label_store is not None else None

    def _check_integrity(self) -> bool:
        """Every file of this set matches the manifest's sha256 (hashed in full once per process; a
        manifest naming a path outside the set is refused with :class:`IntegrityError`)."""
        return not hub.verify_files(self.data_dir, self._verify_files)

    def extra_repr(self) -> str:
        lines = [f"IPC: {self.ipc}"]
        if self.build_dir is not None:
            lines.append(f"Version: local build at {self.build_dir}")
        else:
            lines.append(f"Repo: {self.repo_id}")
            lines.append(f"Version: {self.version}")
        epochs = self.soft_label_epochs
        lines.append(f"Soft-label epochs: {epochs if epochs is not None else 'not loaded'}")
        return "\n".join(lines)


class _RegisteredSet(FADRMDataset):
    """A set from the registry: torchvision's signature (``root`` first, optional), no repo id.

    Its constants (classes where known, channels, image size, mean, std) are class attributes taken
    from the set's declaration (:mod:`fadrm_datasets.catalog`), the one place they are written.
    """

    def __init_subclass__(cls, set_name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = get_set(set_name)
        cls.set_name = set_name
        cls.classes = info.classes  # None for Tiny-ImageNet: its WordNet ids come with the set
        cls.num_classes, cls.channels, cls.image_size = info.num_classes, info.channels, info.image_size
        cls.mean, cls.std = info.mean, info.std

    def __init__(self, root: str | os.PathLike | None = None, ipc: int = 10, version: str | None = None,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 download: bool = False, soft_labels: bool = False,
                 build_dir: str | os.PathLike | None = None) -> None:
        super().__init__(root, None, ipc, version, transform, target_transform, download, soft_labels, build_dir)


def _flat_class(info: SetInfo) -> type[FADRMDataset]:
    """``FADRMImageNet`` and its kind: the declared set's class, made from its declaration alone."""
    namespace = {"__doc__": info.description, "__module__": __name__, "__qualname__": info.class_name}
    return type(info.class_name, (_RegisteredSet,), namespace, set_name=info.name)


# The flat class of each declared set, by its registry name (the card's code sample names it). Each is
# also a name of this module, so a DataLoader's worker processes find it by name.
SET_CLASSES: dict[str, type[FADRMDataset]] = {info.name: _flat_class(info) for info in SETS.values() if info.class_name}
globals().update({cls.__name__: cls for cls in SET_CLASSES.values()})

__all__ = ["FADRMDataset", "HubError", "IPCNotPublishedError", "IntegrityError", "NotDownloadedError", "OfflineError",
           "RepoNotFoundError", "SET_CLASSES", "SetNotFoundError", "VersionNotFoundError",
           *(cls.__name__ for cls in SET_CLASSES.values())]
