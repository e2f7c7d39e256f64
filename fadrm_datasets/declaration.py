"""What one dataset is, declared once: :class:`SetInfo`.

A declaration holds what the library needs (classes, geometry, normalisation, Hub repo, pinned
version), what a dataset card needs (license fields, source datasets, gating; the prose and the
citation are in ``cards/<name>.md``) and, as plain data, what the builder adds (``build``: its preset's
settings, its source reader and that reader's options). The library reads the first two and never
interprets ``build``; the builder turns it into a typed, validated ``builders.presets.Preset``.

The declarations themselves are the modules of :mod:`fadrm_datasets.catalog`, one per dataset.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_ORG = "fadrm"
ORG_ENV = "FADRM_HUB_ORG"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_CLASS_NAME = re.compile(r"^FADRM[A-Za-z0-9]+$")


def hub_org() -> str:
    """The organisation that holds the published sets (``FADRM_HUB_ORG`` overrides the default)."""
    return os.environ.get(ORG_ENV) or DEFAULT_ORG


def parse_version(version: str) -> tuple[int, int, int] | None:
    """``"v1.2.3"`` -> ``(1, 2, 3)``; None for anything that is not a ``vX.Y.Z`` tag."""
    match = _SEMVER.match(version)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def unique_names(names) -> tuple[str, ...]:
    """Class names made unique (``datasets.ClassLabel`` refuses duplicates): later copies get `` (2)``..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        name = str(name)
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append(name if count == 1 else f"{name} ({count})")
    return tuple(out)


@dataclass(frozen=True)
class SetInfo:
    """One dataset: what the library knows before downloading anything, and what its builder adds."""

    name: str  # the dataset's name everywhere: CLI, registry, cards/<name>.md, build/<name>/
    display_name: str
    repo_name: str  # the repo under the organisation: "<org>/<repo_name>"
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_name: str | None = None  # the flat class, e.g. "FADRMImageNet"; None: FADRMDataset only
    # What the dataset card says of the source data (the prose is in cards/<name>.md):
    license: str = "unknown"  # a Hub license id
    license_name: str | None = None  # with license "other": an id for the source's own terms
    license_link: str | None = None  # with license "other": where those terms are
    source_datasets: tuple[str, ...] = ()  # the Hub ids of the source data the images were made from
    gated: bool = False  # the source's terms bind every user, so a release asks each to accept them first
    ipcs: tuple[int, ...] = (1, 10, 50)  # the IPCs a release is expected to hold
    versions: tuple[str, ...] = ()  # published versions, oldest first
    default_version: str | None = None  # pinned; None: the newest tag on the Hub
    class_names: tuple[str, ...] | None = None  # None: read from the downloaded manifest
    repo: str | None = None  # full repo id; None: "<hub_org()>/<repo_name>"
    # The builder's preset settings as plain data (builders.presets.Preset's fields beyond the facts
    # above); empty for a set the builder cannot make (a mirror, a private set).
    build: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for version in (*self.versions, *((self.default_version,) if self.default_version else ())):
            if parse_version(version) is None:
                raise ValueError(f"set {self.name!r}: version {version!r} is not of the form vX.Y.Z")
        if self.license == "other" and not (self.license_name and self.license_link):
            raise ValueError(f"set {self.name!r}: license 'other' needs a license_name and a license_link")
        if self.gated and not self.license_link:
            raise ValueError(f"set {self.name!r}: a gated set needs a license_link, the terms its users accept")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"set {self.name!r}: {len(self.class_names)} class names for {self.num_classes} classes")
        if self.class_name is not None and not _CLASS_NAME.match(self.class_name):
            raise ValueError(f"set {self.name!r}: its flat class {self.class_name!r} should read FADRM<Name>")

    @property
    def repo_id(self) -> str:
        return self.repo or f"{hub_org()}/{self.repo_name}"

    @property
    def classes(self) -> list[str] | None:
        return list(self.class_names) if self.class_names is not None else None

    @property
    def description(self) -> str:
        """One line a flat class's docstring and a listing show."""
        colour = "grayscale" if self.channels == 1 else "RGB"
        return (f"FADRM-distilled {self.display_name}: {self.num_classes} classes of "
                f"{self.image_size}x{self.image_size} {colour} images.")

    def replace(self, **changes) -> "SetInfo":
        return dataclasses.replace(self, **changes)


__all__ = ["DEFAULT_ORG", "IMAGENET_MEAN", "ORG_ENV", "hub_org", "IMAGENET_STD", "SetInfo", "parse_version",
           "unique_names"]
