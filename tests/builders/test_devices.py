"""What a build records and restores per device: the environment that decides its bits, and a checkpoint's
random generators. The CUDA cases run where PyTorch sees a GPU (``benchmarks/gpu_check.sh``)."""

from __future__ import annotations

import pytest
import torch

from builders.checkpoints import Progress, rng_state
from builders.context import device_name, environment
from tests.devices import DEVICES


@pytest.mark.parametrize("device", DEVICES)
def test_the_environment_names_the_device(device):
    device = torch.device(device)
    env = environment(device)
    assert (env["device"], env["torch"], env["threads"]) == (device.type, torch.__version__, torch.get_num_threads())
    if device.type == "cuda":
        assert env["gpu"] == device_name(device) == torch.cuda.get_device_name(device)
        assert (env["cuda"], env["cudnn"]) == (torch.version.cuda, torch.backends.cudnn.version())
    else:
        assert not {"gpu", "cuda", "cudnn"} & set(env)


def test_the_cpu_is_named_with_its_threads(monkeypatch):
    for threads, name in ((1, "cpu (1 thread)"), (4, "cpu (4 threads)")):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        assert device_name(torch.device("cpu")) == name


@pytest.mark.parametrize("device", DEVICES)
def test_restored_generators_draw_the_same_numbers_again(device):
    """A resumed student draws the same dropout masks: the CPU's generator and, on a GPU, the GPU's."""
    device = torch.device(device)
    progress = Progress(epoch=1, checks=[], best=None, seconds=0.0, rng=rng_state(device))
    assert set(progress.rng) == ({"cpu", "cuda"} if device.type == "cuda" else {"cpu"})
    first = torch.rand(4), torch.rand(4, device=device)
    progress.restore_rng(device)
    again = torch.rand(4), torch.rand(4, device=device)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
