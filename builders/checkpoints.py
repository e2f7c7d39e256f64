"""A student run's state at its last check, so a killed evaluation resumes instead of starting over.

A ResNet-18 student on a CPU trains for over an hour; the state (weights and buffers, the optimizer's
moments, the schedule, the RNG, the checks so far) is written at every check as one safetensors file,
atomically. Its metadata holds the run's identity (the inputs' hashes and every setting that decides
the numbers) and a sha256 of the tensors: a file is resumed from only when both match, never because
it exists. A resumed run ends with the same numbers as one never stopped (``tests/builders/test_evaluate``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fadrm_datasets._io import atomic_write_bytes, read_safetensors_metadata, safetensors_bytes

log = logging.getLogger(__name__)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Progress:
    """Where a run stands after a check: the next epoch to train and what the checks measured."""

    epoch: int
    checks: list[dict]
    best: float | None
    seconds: float
    rng: dict[str, torch.Tensor] | None = None  # the generators' states, for students that draw (dropout)

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng["rng.cpu"])
        if "rng.cuda" in self.rng:
            torch.cuda.set_rng_state(self.rng["rng.cuda"])


@dataclass(frozen=True)
class StudentCheckpoint:
    """The file one student run keeps its state in; ``identity`` is everything that decides its numbers."""

    path: Path
    identity: dict

    @classmethod
    def in_directory(cls, directory: Path, identity: dict) -> "StudentCheckpoint":
        """A file named by the identity's hash, so runs with other settings keep their own."""
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return cls(Path(directory) / f"{identity.get('student', 'student')}-{key}.safetensors", identity)

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LRScheduler, progress: Progress) -> None:
        optimizer_state = optimizer.state_dict()
        tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
        for index, state in optimizer_state["state"].items():
            for name, value in state.items():
                if not torch.is_tensor(value):
                    raise TypeError(f"optimizer state {name!r} is not a tensor; this checkpoint keeps tensors only")
                tensors[f"optimizer.{index}.{name}"] = value
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        tensors = {name: value.detach().cpu() for name, value in tensors.items()}
        metadata = {"identity": self.identity, "epoch": progress.epoch, "checks": progress.checks,
                    "best": progress.best, "seconds": progress.seconds, "schedule": schedule.state_dict(),
                    "param_groups": optimizer_state["param_groups"], "tensors_sha256": tensors_digest(tensors)}
        atomic_write_bytes(self.path, safetensors_bytes(tensors, metadata))

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LRScheduler) -> Progress | None:
        """Restore the run's state and say where it stands, or ``None`` (nothing restored) when there
        is no file, or one that is damaged or was written by a run with another identity."""
        if not self.path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            metadata = read_safetensors_metadata(self.path)
            tensors = load_file(str(self.path))
        except Exception as error:  # a torn or foreign file: this run starts over and overwrites it
            log.warning("evaluate: not resuming from %s, it does not read (%s)", self.path, error)
            return None
        if metadata.get("identity") != json.loads(json.dumps(self.identity)):
            log.warning("evaluate: not resuming from %s, another run's settings or inputs wrote it", self.path)
            return None
        if metadata.get("tensors_sha256") != tensors_digest(tensors):
            log.warning("evaluate: not resuming from %s, its tensors changed since they were written", self.path)
            return None
        model.load_state_dict({name[len("model."):]: value for name, value in tensors.items()
                               if name.startswith("model.")})
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": metadata["param_groups"]})
        schedule.load_state_dict(metadata["schedule"])
        log.info("evaluate: resuming %s at epoch %d from %s", self.identity.get("student"), metadata["epoch"],
                 self.path)
        return Progress(metadata["epoch"], metadata["checks"], metadata["best"], metadata["seconds"],
                        {name: value for name, value in tensors.items() if name.startswith("rng.")})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


__all__ = ["Progress", "StudentCheckpoint", "tensors_digest"]
