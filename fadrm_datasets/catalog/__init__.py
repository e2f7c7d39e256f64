"""The datasets, one declaration each: every module here not starting with ``_`` defines
``DECLARATION``, a :class:`fadrm_datasets.declaration.SetInfo`. Adding a dataset is adding a module
(and its card text, ``cards/<name>.md``); everything that lists datasets derives from these."""

from __future__ import annotations

import importlib
import pkgutil

from ..declaration import SetInfo


def declarations() -> list[SetInfo]:
    """Every declared dataset, in the order of their names."""
    found = []
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            found.append(importlib.import_module(f"{__name__}.{module.name}").DECLARATION)
    return sorted(found, key=lambda info: info.name)


__all__ = ["declarations"]
