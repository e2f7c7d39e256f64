"""The devices a test runs on: the CPU always, and CUDA in the cases marked ``cuda``. The default run
(``make test``) deselects those (pyproject's addopts), so a machine without a GPU shows no skips;
``benchmarks/gpu_check.sh`` runs them with ``pytest -m cuda``, where a missing GPU fails them."""

from __future__ import annotations

import pytest

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
