"""Shared test set-up.

The Hugging Face clients read their settings (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_DISABLE_XET``, ...) when
they are first imported, so ``pytest_configure`` prepares a throw-away environment and starts the loopback Hub
before any test module is collected. Nothing here may import ``huggingface_hub`` or ``datasets``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fadrm_datasets.testing.hub import Account, HubServer


# The loopback Hub's accounts: the main user (HF_TOKEN), member of ORG, and an outsider.
USER, ORG, TOKEN = "alice", "fadrm-org", "hf_test_alice"
OTHER_USER, OTHER_TOKEN = "bob", "hf_test_bob"


@dataclass
class LoopbackHub:
    """What tests need to talk to the session's loopback Hub (the ``hub`` fixture)."""

    server: HubServer
    data_dir: Path
    token: str = TOKEN
    user: str = USER
    org: str = ORG
    other_token: str = OTHER_TOKEN
    other_user: str = OTHER_USER
    _counter: itertools.count = field(default_factory=itertools.count, repr=False)

    @property
    def url(self) -> str:
        return self.server.url

    def repo_id(self, stem: str = "repo", namespace: str | None = None) -> str:
        """A repo id no other test uses, in ``namespace`` (the user's by default)."""
        return f"{namespace or self.user}/{stem}-{os.getpid()}-{next(self._counter)}"


# Holds the loopback Hub, the temporary root and the HF_* variables to restore at exit.
_SESSION_KEY = pytest.StashKey[tuple[LoopbackHub, Path, dict]]()


def pytest_configure(config: pytest.Config) -> None:
    if "huggingface_hub" in sys.modules or "datasets" in sys.modules:
        raise pytest.UsageError("huggingface_hub/datasets were imported before tests/conftest.py set HF_* variables")
    root = Path(tempfile.mkdtemp(prefix="fadrm-tests-"))
    accounts = [Account(TOKEN, USER, (ORG,)), Account(OTHER_TOKEN, OTHER_USER)]
    hub = LoopbackHub(HubServer(root / "hub", accounts).start(), root / "hub")
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(root / "hf_home"),
        "HF_DATASETS_CACHE": str(root / "datasets_cache"),
        "HF_TOKEN": hub.token,
        # Xet storage needs a CAS service; the loopback Hub speaks the legacy LFS protocol instead.
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    config.stash[_SESSION_KEY] = (hub, root, {name: os.environ.get(name) for name in env})
    os.environ.update(env)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_KEY not in config.stash:
        return
    hub, root, saved_env = config.stash[_SESSION_KEY]
    hub.server.stop()
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def hub(pytestconfig: pytest.Config) -> LoopbackHub:
    return pytestconfig.stash[_SESSION_KEY][0]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the 2 shared cores stay usable for others)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
