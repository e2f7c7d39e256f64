"""Every extra declared in pyproject.toml works once installed: each package it names imports, and our code
that needs it imports and runs. `make test` installs every extra (the `test` extra pulls in the others), so
nothing here skips: a broken or incomplete extra fails the suite."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

from tests.project import declared_extras

# The module each package named by an extra is imported as (a distribution's name is not its module's).
IMPORT_NAMES = {"click": "click", "datasets": "datasets", "matplotlib": "matplotlib", "avalanche-lib": "avalanche",
                "continuum": "continuum", "six": "six", "pytest": "pytest", "import-linter": "importlinter",
                "scipy": "scipy"}


def import_every_builder_module() -> None:
    import builders

    for module in pkgutil.walk_packages(builders.__path__, "builders."):
        importlib.import_module(module.name)


class SmallSplit(torch.utils.data.Dataset):
    """Four uint8 images of two classes, as a torchvision dataset holds them."""

    targets = [0, 1, 0, 1]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return torch.full((3, 4, 4), index, dtype=torch.uint8), self.targets[index]


def build_both_adapters() -> None:
    from fadrm_datasets.continual import ClassIncrementalScenario, to_avalanche, to_continuum

    scenario = ClassIncrementalScenario.from_seed(num_classes=2, num_steps=2, seed=0)
    soft = torch.zeros(len(SmallSplit.targets), 2)
    benchmark = to_avalanche(SmallSplit(), SmallSplit(), scenario, soft)
    assert len(benchmark.train_stream) == 2 and len(benchmark.test_stream) == 2
    streams = to_continuum(SmallSplit(), SmallSplit(), scenario, soft)
    assert len(streams.train) == 2 and len(streams.train[0]) == 2
    assert {streams.train[0][i][1] for i in range(2)} == {0}  # the order's first class, renumbered 0


# What of ours each extra exists for, run beyond importing its packages.
OWN_USES = {"build": import_every_builder_module, "continual": build_both_adapters}


def test_every_package_an_extra_names_has_its_import_name():
    named = {package for packages in declared_extras().values() for package in packages}
    assert named <= set(IMPORT_NAMES), f"add the import names of {sorted(named - set(IMPORT_NAMES))} to IMPORT_NAMES"


@pytest.mark.parametrize("extra", sorted(declared_extras()))
def test_an_installed_extra_imports_and_runs(extra):
    for package in declared_extras()[extra]:
        importlib.import_module(IMPORT_NAMES[package])  # an ImportError fails the test: the extra is broken
    if extra in OWN_USES:
        OWN_USES[extra]()
