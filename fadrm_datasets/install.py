"""How fadrm-datasets is installed, said in one place: the dataset cards and the library's messages read it
from here, and a test checks that the README says the same.

The package is not on PyPI: it installs with pip from a checkout of its repository.
"""

from __future__ import annotations

WHERE = "in a checkout of the fadrm-datasets repository (it is not on PyPI)"


def pip_install(extra: str | None = None) -> str:
    """The pip command, run in a checkout, that installs the package with ``extra`` (or alone)."""
    return f"pip install '.[{extra}]'" if extra else "pip install ."


def install_hint(extra: str | None = None) -> str:
    """The command and where to run it, as a message or a card says it."""
    return f"`{pip_install(extra)}` {WHERE}"


__all__ = ["WHERE", "install_hint", "pip_install"]
