"""The devices a test runs on: the CPU always, CUDA where PyTorch sees one. Parametrised tests carry the
device in their id, so ``benchmarks/gpu_check.sh`` runs the CUDA ones with ``pytest -k cuda``."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]
