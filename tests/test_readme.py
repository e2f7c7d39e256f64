"""What the README promises a new user agrees with the code: how to install, and which sets are published."""

from __future__ import annotations

from fadrm_datasets.install import WHERE, pip_install
from tests.project import README, declared_extras


def readme_text() -> str:
    return " ".join(README.read_text().split())  # line breaks in prose do not matter


def test_the_readme_says_how_to_install_as_the_cards_and_messages_do():
    readme = readme_text()
    assert WHERE in readme
    for extra in (None, *declared_extras()):
        assert pip_install(extra) in readme, f"the README does not show `{pip_install(extra)}`"
    assert "pip install 'fadrm-datasets" not in readme  # not on PyPI: no command may suggest it is
