"""The datasets by name: dataset name -> its declaration (:class:`SetInfo`), and the Hub organisation.

The declarations are the modules of :mod:`fadrm_datasets.catalog`; :data:`SETS` holds them all, and
everything that lists datasets (the flat classes, the builder's presets and CLI choices, error
messages, the tests' parametrisation) derives from it. The Hub organisation is named in one place,
:data:`DEFAULT_ORG`, and can be overridden with the ``FADRM_HUB_ORG`` environment variable (read each
time a repo id is asked for, so tests and mirrors can point elsewhere).

A declaration's ``versions`` lists the versions known to be published when this release of the
library was made; ``default_version`` is the one a plain ``FADRMCIFAR100(root, download=True)`` gets.
A set whose ``default_version`` is None gets the newest semver tag found on its repo. The README's
table of published sets says the same, and a test holds the two together.
"""

from __future__ import annotations

from .catalog import declarations
from .declaration import (DEFAULT_ORG, IMAGENET_MEAN, IMAGENET_STD, ORG_ENV, SetInfo, hub_org, parse_version,
                          unique_names)

SETS: dict[str, SetInfo] = {info.name: info for info in declarations()}


def newest_version(versions) -> str | None:
    """The highest ``vX.Y.Z`` among ``versions`` (other names are ignored); None if there is none."""
    tagged = [(parse_version(v), v) for v in versions if parse_version(v) is not None]
    return max(tagged)[1] if tagged else None


class UnknownSetError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def get_set(name: str) -> SetInfo:
    try:
        return SETS[name]
    except KeyError:
        raise UnknownSetError(f"unknown set {name!r}; the datasets are {', '.join(sorted(SETS))}") from None


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


__all__ = ["DEFAULT_ORG", "IMAGENET_MEAN", "IMAGENET_STD", "ORG_ENV", "SETS", "SetInfo", "UnknownSetError", "find_by_repo",
           "get_set", "hub_org", "newest_version", "parse_version", "register", "unique_names"]
