"""The published sets: dataset name -> Hub repo, classes, image geometry, normalisation, versions.

One frozen :class:`SetInfo` per source dataset. The Hub organisation is named in one place,
:data:`DEFAULT_ORG`, and can be overridden with the ``FADRM_HUB_ORG`` environment variable (read
each time a repo id is asked for, so tests and mirrors can point elsewhere).

``versions`` lists the versions known to be published when this release of the library was made;
``default_version`` is the one a plain ``FADRMCIFAR100(root, download=True)`` gets. A set whose
``default_version`` is None gets the newest semver tag found on its repo. The README's table of
published sets says the same, and a test holds the two together.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

DEFAULT_ORG = "fadrm"
ORG_ENV = "FADRM_HUB_ORG"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")

CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
    "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
    "willow_tree wolf woman worm".split()
)


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


def hub_org() -> str:
    """The organisation that holds the published sets (``FADRM_HUB_ORG`` overrides the default)."""
    return os.environ.get(ORG_ENV) or DEFAULT_ORG


def parse_version(version: str) -> tuple[int, int, int] | None:
    """``"v1.2.3"`` -> ``(1, 2, 3)``; None for anything that is not a ``vX.Y.Z`` tag."""
    match = _SEMVER.match(version)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def newest_version(versions) -> str | None:
    """The highest ``vX.Y.Z`` among ``versions`` (other names are ignored); None if there is none."""
    tagged = [(parse_version(v), v) for v in versions if parse_version(v) is not None]
    return max(tagged)[1] if tagged else None


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


def _imagenet_classes() -> tuple[str, ...]:
    # torchvision ships the 1000 category names in the standard (sorted wnid) order; two names
    # ("crane", "maillot") occur twice, so they are made unique.
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return unique_names(_IMAGENET_CATEGORIES)


@dataclass(frozen=True)
class SetInfo:
    """What the library knows about one published set before downloading anything."""

    name: str  # the builders' preset name, e.g. "cifar100"
    display_name: str
    repo_name: str  # the repo under the organisation: "<org>/<repo_name>"
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
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

    @property
    def repo_id(self) -> str:
        return self.repo or f"{hub_org()}/{self.repo_name}"

    @property
    def classes(self) -> list[str] | None:
        return list(self.class_names) if self.class_names is not None else None

    def replace(self, **changes) -> "SetInfo":
        return dataclasses.replace(self, **changes)


# ImageNet's terms of access (non-commercial research and education only) bind images derived from it.
_IMAGENET_TERMS = {"license": "other", "license_name": "imagenet", "license_link": "https://image-net.org/download.php",
                   "gated": True}

CIFAR100 = SetInfo(
    # Its authors state no license; the Hub's own CIFAR-100 card says "unknown".
    name="cifar100", display_name="CIFAR-100", repo_name="fadrm-cifar100", num_classes=100, channels=3,
    image_size=32, mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761), class_names=CIFAR100_CLASSES,
    license="unknown", source_datasets=("uoft-cs/cifar100",),
)
TINY_IMAGENET = SetInfo(
    # The classes are WordNet ids in the order of the source's wnids.txt: taken from the manifest.
    # Stanford has no copy on the Hub; zh-plus/tiny-imagenet is the one users load. Its images are ImageNet's.
    name="tiny-imagenet", display_name="Tiny-ImageNet", repo_name="fadrm-tiny-imagenet", num_classes=200,
    channels=3, image_size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    source_datasets=("zh-plus/tiny-imagenet",), **_IMAGENET_TERMS,
)
IMAGENET = SetInfo(
    name="imagenet", display_name="ImageNet-1K", repo_name="fadrm-imagenet", num_classes=1000, channels=3,
    image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=_imagenet_classes(),
    source_datasets=("ILSVRC/imagenet-1k",), **_IMAGENET_TERMS,
)
FASHION_MNIST = SetInfo(
    name="fashion-mnist", display_name="Fashion-MNIST", repo_name="fadrm-fashion-mnist", num_classes=10,
    channels=1, image_size=28, mean=(0.2860,), std=(0.3530,), class_names=FASHION_MNIST_CLASSES,
    license="mit", source_datasets=("zalando-datasets/fashion_mnist",),
)

SETS: dict[str, SetInfo] = {s.name: s for s in (CIFAR100, TINY_IMAGENET, IMAGENET, FASHION_MNIST)}


class UnknownSetError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def get_set(name: str) -> SetInfo:
    try:
        return SETS[name]
    except KeyError:
        raise UnknownSetError(f"unknown set {name!r}; published sets: {', '.join(sorted(SETS))}") from None


def find_by_repo(repo_id: str) -> SetInfo | None:
    """The registered set published at ``repo_id`` (under the current organisation), if any."""
    for info in SETS.values():
        if info.repo_id == repo_id:
            return info
    return None


def register(info: SetInfo) -> SetInfo | None:
    """Add or replace a set (for mirrors, private sets and tests); returns the entry it replaced, if any."""
    previous = SETS.get(info.name)
    SETS[info.name] = info
    return previous


__all__ = ["CIFAR100_CLASSES", "DEFAULT_ORG", "FASHION_MNIST_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "ORG_ENV", "SETS", "SetInfo", "UnknownSetError", "find_by_repo", "get_set", "hub_org",
           "newest_version", "parse_version", "register", "unique_names", "CIFAR100", "TINY_IMAGENET",
           "IMAGENET", "FASHION_MNIST"]
