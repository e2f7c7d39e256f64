"""Running a build under ``torchrun``: one process per rank, the same files as one process.

``torchrun --nproc-per-node N -m builders.cli ...`` starts N copies of the command with ``RANK`` and
``WORLD_SIZE`` set; each joins the process group (gloo on the CPU, NCCL on CUDA), takes its share of the
work (recover units, relabel shards, student batches) and rank 0 alone writes what the ranks share (the
manifest, the soft-label index, the patches). Without torchrun every helper here is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun, even as its only process (or by a launcher that sets ``WORLD_SIZE`` above 1)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or world_size() > 1


def joined() -> bool:
    """In a process group: the helpers below then wait for, and gather from, the other ranks."""
    return dist.is_available() and dist.is_initialized()


def backend(device: torch.device) -> str:
    """The collectives' library: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA rank uses the GPU of its ``LOCAL_RANK``."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration (once; nested uses share it). One process under
    torchrun joins a group of one, so a single GPU runs the same NCCL path as several."""
    if not launched() or joined():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend(device))
    log.info("rank %d of %d joined the process group (%s)", rank(), world_size(), dist.get_backend())
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if joined():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it may write: train a teacher, select patches); the others wait for it,
    then run the block themselves (and find its files)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def main_only(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Rank 0 runs ``write`` (a file the ranks share, such as the manifest) and the others wait until it
    has, so no rank reads it half-updated; returns its result on rank 0, None on the others."""
    with main_first():
        return write(*args, **kwargs) if is_main() else None


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (a one-item list without torchrun)."""
    if not joined():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


__all__ = ["backend", "barrier", "gather", "is_main", "joined", "launched", "local_device", "main_first", "main_only",
           "process_group", "rank", "world_size"]
