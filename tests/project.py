"""The checkout's own files that tests read: pyproject.toml and README.md."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"  # not a set's name: the project's own


def declared_extras() -> dict[str, list[str]]:
    """pyproject's extras: name -> the packages it requires, leaving out our own extras it includes."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    own = canonicalize_name(project["name"])
    return {extra: [name for name in (canonicalize_name(Requirement(r).name) for r in requirements) if name != own]
            for extra, requirements in project["optional-dependencies"].items()}
