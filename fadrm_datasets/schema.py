"""The JSON files a set is made of, read with bounds and checked against typed schemas.

Three files are read from builds and from downloads, all through :func:`read`:

- a build's ``manifest.json`` (:data:`BUILD_MANIFEST`), written by ``builders``;
- a published repo's top-level ``manifest.json`` (:data:`REPO_MANIFEST`): the sha256 and size of every
  file of the release, and one record per IPC (:data:`IPC_RECORD`);
- a soft-label store's ``index.json`` (:data:`SOFT_LABEL_INDEX`).

A downloaded file is hostile until checked. Its size is checked against the file kind's limit before
it is read, the parser's allocation is bounded by that size, nesting deeper than :data:`MAX_DEPTH` is
refused, and every field this project reads must have its declared type and lie within its bounds
(counts, sizes, epochs), so no later arithmetic or allocation trusts an unchecked number. Fields the
schemas do not name are kept as they are. A refusal is one :class:`LayoutError` line naming the file
and the field.

The manifests' writers fill the same schemas: :func:`check_written` refuses, before anything is written,
a field of the wrong type or one no schema declares. Every reader checks ``format_version`` first
(:func:`check_format`): a file of a newer format is refused in the same line whoever reads it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LayoutError(ValueError):
    """A file of a set is malformed or names a path it may not; the message names the file."""


# --- the bounds ------------------------------------------------------------------------------------

KiB, MiB = 1 << 10, 1 << 20
MAX_DEPTH = 32  # our files nest 5 levels deep; JSON's own parser gives up far deeper, after recursing
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_IPC = 10_000
MAX_IMAGES = 10_000_000
MAX_IMAGE_SIZE = 4096
MAX_EPOCHS = 100_000  # the paper's longest schedule is 1,000
MAX_BATCH = 65_536
MAX_FILE_BYTES = 50 * 10**9  # huggingface_hub's MAX_HTTP_DOWNLOAD_SIZE: nothing larger over plain HTTP
MAX_REPO_FILES = 100_000  # the Hub advises fewer files per repo than this
MAX_NAME = 1024  # characters in a name or a path


@dataclass(frozen=True)
class FileKind:
    """What a JSON file is: how large it may be, its schema (``older_spec`` for the formats before the
    newest, where they differ) and the ``format_version`` range this library reads (files older than the
    field are format 1), and what to do when it is wrong."""

    name: str
    max_bytes: int
    remedy: str
    spec: "Spec | None" = None
    formats: tuple[int, int] | None = None  # (oldest, newest) format_version read
    older_spec: "Spec | None" = None
    # Written on this machine by the builder: NaN and infinity, which earlier versions wrote for a
    # diverged loss, are read as null. A downloaded file holding them is refused.
    local: bool = False


# --- reading ---------------------------------------------------------------------------------------

def read(path: str | os.PathLike, kind: FileKind) -> dict:
    """The JSON object in ``path``, read within ``kind``'s bounds and checked against its schema."""
    path = Path(path)
    value = parse(_read_bounded(path, kind), path, kind)
    if not isinstance(value, dict):
        raise LayoutError(f"{path} holds a JSON {type(value).__name__}, not an object; {kind.remedy}")
    if kind.formats is not None:  # first: a file of another format may lack what this schema requires
        check_format(value, path, kind)
    if kind.spec is not None:
        older = kind.older_spec is not None and value.get("format_version", 1) < kind.formats[1]
        check(value, kind.older_spec if older else kind.spec, path, kind)
    return value


class NewerFormatError(LayoutError):
    """A file written by a later fadrm-datasets, in a format this one cannot read."""


def check_format(value: dict, path: str | os.PathLike, kind: FileKind) -> None:
    """Refuse ``value`` (read from ``path``) unless ``kind`` reads its ``format_version`` (absent: 1). Every
    reader of a manifest or index goes through here, so a newer file is refused in the same words."""
    version = value.get("format_version", 1)
    check({"format_version": version}, Record({"format_version": Int(1)}), path, kind)
    oldest, newest = kind.formats
    if version > newest:
        raise NewerFormatError(f"{path} is of format {version}; upgrade fadrm-datasets to read this set")
    if version < oldest:
        raise LayoutError(f"{path} is a {kind.name} of format {version}, older than this fadrm-datasets reads "
                          f"({oldest} to {newest}); {kind.remedy}")


def _read_bounded(path: Path, kind: FileKind) -> bytes:
    # Opened without blocking and read only if a regular file: a FIFO put in its place must not stall us.
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        status = os.fstat(f.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise LayoutError(f"{path} is not a regular file; {kind.remedy}")
        size = status.st_size
        data = f.read(kind.max_bytes + 1) if size <= kind.max_bytes else b""
    if size > kind.max_bytes or len(data) > kind.max_bytes:
        raise LayoutError(f"{path} is {max(size, len(data)):,} bytes, more than a {kind.name} may hold "
                          f"({kind.max_bytes:,}); {kind.remedy}")
    return data


def parse(data: bytes, path: str | os.PathLike, kind: FileKind) -> Any:
    """JSON text of at most ``kind.max_bytes`` (checked by the caller) -> value, nesting bounded."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_as_null if kind.local else _refuse_constant)
    except RecursionError:
        raise LayoutError(f"{path} nests deeper than {MAX_DEPTH} levels; {kind.remedy}") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise LayoutError(f"{path} is not valid JSON ({error}); {kind.remedy}") from None
    if _depth(value) > MAX_DEPTH:
        raise LayoutError(f"{path} nests deeper than {MAX_DEPTH} levels; {kind.remedy}")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _as_null(name: str) -> None:
    return None


def _depth(value: Any) -> int:
    """How deep lists and objects nest (iteratively: a deep value must not exhaust the stack)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# --- typed schemas ---------------------------------------------------------------------------------

_MISSING = object()  # the value of a required field that is not there


class _Mismatch(Exception):
    def __init__(self, where: tuple, expected: str, value: Any):
        super().__init__(where)
        self.where, self.expected, self.value = where, expected, value


def _location(where: tuple) -> str:
    """A field's place, spelled only when it is refused: its steps are field names, list positions,
    ("item", key) for an entry of an object and ("key", key) for its key."""
    steps = []
    for step in where:
        if isinstance(step, int):
            steps.append(f"[{step}]")
        elif isinstance(step, tuple):
            steps.append(f"[{json.dumps(step[1])}]" if step[0] == "item" else f" key {_shown(step[1])}")
        else:
            steps.append(f".{step}")
    return "".join(steps).lstrip(".")


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else f"a JSON {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


class Spec:
    """What a JSON value must be; :meth:`check` raises :class:`_Mismatch` naming where it is not."""

    expected = "a value"

    def check(self, value: Any, where: tuple) -> None:
        raise NotImplementedError

    def fail(self, value: Any, where: tuple):
        raise _Mismatch(where, self.expected, value)


@dataclass(frozen=True)
class Int(Spec):
    low: int | None = None
    high: int | None = None

    @property
    def expected(self) -> str:
        if self.low is not None and self.high is not None:
            return f"an integer from {self.low:,} to {self.high:,}"
        return "an integer" + (f" of at least {self.low:,}" if self.low is not None else "")

    def check(self, value: Any, where: tuple) -> None:
        if (not isinstance(value, int) or isinstance(value, bool) or (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high)):
            self.fail(value, where)


@dataclass(frozen=True)
class Number(Spec):
    positive: bool = False

    @property
    def expected(self) -> str:
        return "a positive number" if self.positive else "a number"

    def check(self, value: Any, where: tuple) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not _finite(value) \
                or (self.positive and value <= 0):
            self.fail(value, where)


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer too large for a float
        return False


@dataclass(frozen=True)
class Str(Spec):
    pattern: str | None = None
    what: str = "a string"

    @property
    def expected(self) -> str:
        return self.what

    def check(self, value: Any, where: tuple) -> None:
        if (not isinstance(value, str) or len(value) > MAX_NAME
                or (self.pattern is not None and not re.fullmatch(self.pattern, value))):
            self.fail(value, where)


@dataclass(frozen=True)
class Bool(Spec):
    expected = "true or false"

    def check(self, value: Any, where: tuple) -> None:
        if not isinstance(value, bool):
            self.fail(value, where)


@dataclass(frozen=True)
class Optional(Spec):
    inner: Spec

    @property
    def expected(self) -> str:
        return f"{self.inner.expected} or null"

    def check(self, value: Any, where: tuple) -> None:
        if value is not None:
            self.inner.check(value, where)


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max_items: int

    @property
    def expected(self) -> str:
        return f"a list of at most {self.max_items:,} items"

    def check(self, value: Any, where: tuple) -> None:
        if not isinstance(value, list) or len(value) > self.max_items:
            self.fail(value, where)
        for i, item in enumerate(value):
            self.item.check(item, (*where, i))


@dataclass(frozen=True)
class MapOf(Spec):
    key: Str
    value: Spec
    max_items: int

    @property
    def expected(self) -> str:
        return f"an object of at most {self.max_items:,} entries"

    def check(self, value: Any, where: tuple) -> None:
        if not isinstance(value, dict) or len(value) > self.max_items:
            self.fail(value, where)
        for key, item in value.items():
            self.key.check(key, (*where, ("key", key)))
            self.value.check(item, (*where, ("item", key)))


@dataclass(frozen=True)
class Record(Spec):
    """An object whose named fields have their specs. A file read may hold other fields too (kept as they
    are); a writer (:func:`check_written`) may write no other field unless the record is ``open``."""

    fields: dict[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    open: bool = False
    expected = "an object"

    def check(self, value: Any, where: tuple) -> None:
        if not isinstance(value, dict):
            self.fail(value, where)
        for name in self.required:
            if name not in value:
                raise _Mismatch((*where, name), "present", _MISSING)
        for name, spec in self.fields.items():
            if name in value:
                spec.check(value[name], (*where, name))


def check(value: Any, spec: Spec, path: str | os.PathLike, kind: FileKind) -> None:
    """Refuse ``value`` (read from ``path``) unless it meets ``spec``, in one line naming the field."""
    try:
        spec.check(value, ())
    except _Mismatch as wrong:
        raise LayoutError(f"{path} is malformed: {_described(wrong)}; {kind.remedy}") from None


def _described(wrong: _Mismatch) -> str:
    if wrong.value is _MISSING:
        return f"{_location(wrong.where) or 'the whole file'}, it is missing"
    return f"{_location(wrong.where) or 'the whole file'} should be {wrong.expected}, got {_shown(wrong.value)}"


def _undeclared(value: Any, spec: Spec, where: tuple = ()) -> tuple | None:
    """Where ``value`` (already checked against ``spec``) holds the first field its closed records do not
    declare; None when it holds none."""
    if isinstance(spec, Optional):
        return None if value is None else _undeclared(value, spec.inner, where)
    if isinstance(spec, ListOf):
        children = [(item, spec.item, (*where, i)) for i, item in enumerate(value)]
    elif isinstance(spec, MapOf):
        children = [(item, spec.value, (*where, ("item", key))) for key, item in value.items()]
    elif isinstance(spec, Record) and not spec.open:
        extra = next((name for name in value if name not in spec.fields), None)
        if extra is not None:
            return (*where, extra)
        children = [(value[name], inner, (*where, name)) for name, inner in spec.fields.items() if name in value]
    else:
        return None
    return next((found for found in (_undeclared(*child) for child in children) if found), None)


def check_written(value: dict, path: str | os.PathLike, kind: FileKind) -> dict:
    """``value``, which a writer is about to write to ``path`` whole or merge into it, refused unless it meets
    ``kind``'s schema, declares every field it holds and is of the newest format: a writer cannot write
    what the readers do not know. The refusal is one ValueError line naming the field."""
    spec, newest = kind.spec, kind.formats[1]
    shaped = json.loads(json.dumps(value), parse_constant=_as_null)  # as written: tuples as lists, NaN as null
    try:
        spec.check(shaped, ())
        if shaped.get("format_version", newest) != newest:
            raise _Mismatch(("format_version",), f"{newest}, the format this fadrm-datasets writes",
                            shaped["format_version"])
    except _Mismatch as wrong:
        raise ValueError(f"refusing to write {path}: {_described(wrong)}") from None
    extra = _undeclared(shaped, spec)
    if extra:
        raise ValueError(f"refusing to write {path}: {_location(extra)} is no field of a {kind.name}; "
                         "declare it in fadrm_datasets/schema.py, where its readers find it")
    return value


# --- the schemas -----------------------------------------------------------------------------------

SHA256 = Str(r"[0-9a-f]{64}", "a sha256 (64 hex digits)")
PATH = Str(r"[^\x00\\]+", "a relative path")  # layout.inside() refuses the ways out when it is used
NAME = Str(r".+", "a name")
VERSION = Str(r"v\d+\.\d+\.\d+", "a version like v1.0.0")
IPC_KEY = Str(r"[1-9]\d{0,4}", "an IPC")
ANY_OBJECT = Record(open=True)

# The preset fields the library and `fadrm-build evaluate` read; the builder's preset has many more.
PRESET = Record({
    "name": NAME, "display_name": NAME, "num_classes": Int(1, MAX_CLASSES), "channels": Int(1, 4),
    "image_size": Int(1, MAX_IMAGE_SIZE), "mean": ListOf(Number(), 4), "std": ListOf(Number(positive=True), 4),
    "student": NAME, "eval_epochs": Int(1, MAX_EPOCHS), "eval_lr": Number(positive=True),
    "eval_weight_decay": Number(), "eval_batch_size": Int(1, MAX_BATCH), "eval_grad_accumulation": Int(1, MAX_BATCH),
    "temperature": Number(positive=True),
}, open=True)

# What every stage records of its run; each stage adds its own fields.
STAGE_RECORD = Record({"seconds": Number(), "complete": Bool(), "settings": ANY_OBJECT, "environment": ANY_OBJECT},
                      open=True)

# Where an imported build's images came from (`fadrm-build import`, builders/importer.py says how each
# field is made): the source (a Hub id, or a local folder's or zip's name), its revision (a Hub commit),
# one sha256 over what was read and what it was taken over, the class map applied, the license as the
# importer stated it, the resize, and the teacher's check of the class order.
PROVENANCE = Record({
    "name": NAME, "source": NAME, "kind": Str(r"folder|zip|hub", "folder, zip or hub"), "revision": Optional(NAME),
    "sha256": SHA256, "sha256_of": NAME, "images": Int(1, MAX_IMAGES),
    "class_map": MapOf(Str(r"\d{1,6}", "a class index"), Int(0, MAX_CLASSES - 1), MAX_CLASSES),
    "license": Optional(NAME),
    "resize": Optional(Record({"filter": NAME, "images": Int(1, MAX_IMAGES), "to": Int(1, MAX_IMAGE_SIZE)})),
    "order_check": Record({"teacher": NAME, "top1_given": Number(), "top1_best": Number(),
                           "near_chance_below": Number()}),
})

# Every field of a build's manifest: the stages write no other (`layout.BuildDirectory.update_manifest`).
BUILD_MANIFEST = Record({
    "format_version": Int(1), "dataset": NAME, "ipc": Int(1, MAX_IPC), "method": NAME, "seed": Int(),
    "preset": PRESET, "options": ANY_OBJECT, "code_version": ANY_OBJECT, "environment": ANY_OBJECT,
    "files": MapOf(PATH, SHA256, MAX_IMAGES + MAX_REPO_FILES),
    "stages": Record({"patches": STAGE_RECORD, "recover": STAGE_RECORD, "relabel": STAGE_RECORD,
                      "import": STAGE_RECORD}),
    "evaluations": ListOf(ANY_OBJECT, 100_000), "timings": MapOf(NAME, Number(), 100),
    "teachers": MapOf(NAME, ANY_OBJECT, 100), "teachers_dir": Str(what="a folder"),
    "classes": ListOf(Str(what="a class name"), MAX_CLASSES), "provenance": PROVENANCE,
})

IPC_RECORD = Record({
    "version": VERSION, "num_images": Int(1, MAX_IMAGES), "shards": ListOf(PATH, MAX_REPO_FILES),
    "method": Optional(NAME), "seed": Optional(Int()), "preset": PRESET, "options": ANY_OBJECT,
    "teachers": MapOf(NAME, ANY_OBJECT, 100), "evaluations": Optional(ListOf(ANY_OBJECT, 100_000)),
    "soft_label_epochs": Optional(Int(1, MAX_EPOCHS)), "code_version": Optional(ANY_OBJECT),
    "environment": Optional(ANY_OBJECT), "provenance": PROVENANCE,
    # How the labels were made smaller and every byte of them (builders/publish.label_summary).
    "soft_labels": Record({"stored_epochs": Int(1, MAX_EPOCHS), "topk": Optional(Int(1, MAX_CLASSES)),
                           "logit_dtype": Str(r"float16|int8", "float16 or int8"), "bytes": Int(0)}),
}, required=("num_images", "preset"))

REPO_MANIFEST = Record({
    "format_version": Int(1), "repo": NAME, "dataset": NAME, "display_name": NAME, "version": VERSION,
    "classes": ListOf(Str(what="a class name"), MAX_CLASSES), "ipcs": MapOf(IPC_KEY, IPC_RECORD, 1000),
    "files": MapOf(PATH, SHA256, MAX_REPO_FILES), "sizes": MapOf(PATH, Int(0, MAX_FILE_BYTES), MAX_REPO_FILES),
}, required=("format_version", "classes", "ipcs", "files", "sizes"))
# Format 1 recorded no sizes: readers migrate it with the Hub's (`hub.read_manifest`).
REPO_MANIFEST_1 = Record({name: spec for name, spec in REPO_MANIFEST.fields.items() if name != "sizes"},
                         required=("classes", "ipcs", "files"))

SOFT_LABEL_SHARD = Record({
    "file": NAME,  # softlabels checks it is the shard name of its epochs
    "first_epoch": Int(0, MAX_EPOCHS - 1), "last_epoch": Int(0, MAX_EPOCHS - 1),
    "sha256": SHA256, "bytes": Int(0, MAX_FILE_BYTES),
}, required=("file", "first_epoch", "last_epoch"))

SOFT_LABEL_INDEX = Record({
    "format": Str(r"fadrm-soft-labels", "fadrm-soft-labels"), "format_version": Int(1),
    "epochs": Int(1, MAX_EPOCHS), "num_classes": Int(1, MAX_CLASSES), "num_samples": Int(1, MAX_IMAGES),
    "batch_size": Int(1, MAX_BATCH), "image_size": Int(1, MAX_IMAGE_SIZE), "topk": Optional(Int(1, MAX_CLASSES)),
    # Format 2: a student trains ``train_epochs`` epochs over the ``epochs`` stored ones, cycled (absent: the
    # same); the kept logits are float16, or int8 with a per-row scale.
    "train_epochs": Int(1, MAX_EPOCHS), "logit_dtype": Str(r"float16|int8", "float16 or int8"),
    "complete": Bool(), "shards": ListOf(SOFT_LABEL_SHARD, MAX_EPOCHS), "teachers": ListOf(NAME, 100),
}, required=("format", "format_version", "epochs", "num_classes", "num_samples", "batch_size", "image_size",
             "shards"))


def release_manifest(*, repo: str, dataset: str, display_name: str, version: str, classes: list[str],
                     ipcs: dict[str, dict], files: dict[str, str], sizes: dict[str, int]) -> dict:
    """A release's top-level manifest (:data:`REPO_MANIFEST`) in the format this code writes; its writer
    passes it through :func:`check_written` before it is written."""
    return {"format_version": REPO_FORMAT_VERSION, "repo": repo, "dataset": dataset, "display_name": display_name,
            "version": version, "classes": classes, "ipcs": ipcs, "files": files, "sizes": sizes}


# Format versions. Build manifest 1. Release manifest 1: the sha256 of every file; 2: and its size,
# enforced before and during a download. Soft-label index 1; 2: stored epochs cycled over more training
# epochs, and int8 logits (format 1 reads as 2 with neither).
BUILD_FORMAT_VERSION = 1
REPO_FORMAT_VERSION = 2
SOFT_LABEL_FORMAT_VERSION = 2

BUILD_MANIFEST_FILE = FileKind(
    "build manifest", 64 * MiB,  # a line per image (ImageNet-1K's size: RELIABILITY.md, "What we bound")
    "rebuild the stage that wrote it, or download the set again", BUILD_MANIFEST, (1, BUILD_FORMAT_VERSION),
    local=True)
REPO_MANIFEST_FILE = FileKind(
    "release manifest", 4 * MiB,  # a line per parquet or soft-label shard, a record per IPC
    "download the set again, or pick another version=", REPO_MANIFEST, (1, REPO_FORMAT_VERSION),
    older_spec=REPO_MANIFEST_1)
SOFT_LABEL_INDEX_FILE = FileKind(
    "soft-label index", 1 * MiB,  # a line per shard of up to 100 epochs
    "relabel again (`fadrm-build relabel ...`) or download the set again", SOFT_LABEL_INDEX,
    (1, SOFT_LABEL_FORMAT_VERSION))
RECORD_FILE = FileKind("record", 64 * KiB, "delete it: it is made again", local=True)


__all__ = ["BUILD_FORMAT_VERSION", "BUILD_MANIFEST", "BUILD_MANIFEST_FILE", "FileKind", "IPC_RECORD", "LayoutError",
           "MAX_CLASSES", "MAX_DEPTH", "MAX_EPOCHS", "MAX_FILE_BYTES", "MAX_IMAGE_SIZE", "MAX_IMAGES", "MAX_IPC",
           "MAX_REPO_FILES", "RECORD_FILE", "REPO_FORMAT_VERSION", "REPO_MANIFEST", "REPO_MANIFEST_FILE",
           "NewerFormatError", "PROVENANCE", "SOFT_LABEL_FORMAT_VERSION", "SOFT_LABEL_INDEX", "SOFT_LABEL_INDEX_FILE", "STAGE_RECORD",
           "Spec", "check", "check_format", "check_written", "parse", "read", "release_manifest"]
