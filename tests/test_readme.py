"""What the README promises a new user agrees with the code: how to install, and which sets are published."""

from __future__ import annotations

import re

from fadrm_datasets.install import WHERE, pip_install
from fadrm_datasets.registry import SETS
from fadrm_datasets.sets import SET_CLASSES
from tests.project import README, declared_extras


def readme_text() -> str:
    return " ".join(README.read_text().split())  # line breaks in prose do not matter


def test_the_readme_says_how_to_install_as_the_cards_and_messages_do():
    readme = readme_text()
    assert WHERE in readme
    for extra in (None, *declared_extras()):
        assert pip_install(extra) in readme, f"the README does not show `{pip_install(extra)}`"
    assert "pip install 'fadrm-datasets" not in readme  # not on PyPI: no command may suggest it is


def published_sets_table() -> dict[str, dict[str, str]]:
    """The README's table of published sets: the set's name -> its row, by column title."""
    lines = README.read_text().split("## Published sets\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
    header, body = rows[0], rows[2:]  # rows[1] is the |---| line
    return {row[header.index("name")].strip("`"): dict(zip(header, row)) for row in body}


def listed(cell: str) -> tuple[str, ...]:
    return () if cell == "none yet" else tuple(version.strip() for version in cell.split(","))


def test_the_readme_names_every_dataset_the_builder_builds():
    from builders.presets import PRESETS

    line = next(line for line in README.read_text().splitlines() if line.startswith("Datasets: "))
    assert re.findall(r"`([a-z0-9-]+)`", line) == sorted(PRESETS), "the README's list of datasets is not the declarations'"


def test_the_readme_lists_the_released_versions_the_registry_pins():
    table = published_sets_table()
    assert sorted(table) == sorted(SETS), "the README's table and the registry name different sets"
    for name, info in SETS.items():
        row = table[name]
        assert row["class"] == f"`{SET_CLASSES[name].__name__}`"
        assert row["IPCs of a release"] == ", ".join(str(ipc) for ipc in info.ipcs)
        assert listed(row["released versions"]) == info.versions, name
        assert row["default version"] == (info.default_version or "the newest tag"), name
