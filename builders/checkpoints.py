"""A student run's state at its last check, so a killed evaluation resumes instead of starting over.

A student run on a CPU is long (a ResNet-18's run time: BENCHMARKS.md, "Other students"); the state
(weights and buffers, the optimizer's moments, the schedule, every rank's random generators, the checks
so far) is written at every check as one safetensors file, atomically. Its metadata holds the run's
identity (the inputs' hashes and every setting that decides the numbers) and a sha256 over the tensors
and the rest of the metadata: a file is resumed from only when both match, never because it exists. A
resumed run ends with the same numbers as one never stopped (``tests/reliability/test_evaluate_resume.py``).
``.checkpoints/`` may be deleted at any time; the next run then starts from epoch 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fadrm_datasets._io import atomic_write_bytes, fingerprint_of, read_safetensors_metadata, safetensors_bytes
from fadrm_datasets.layout import CHECKPOINT_GLOB, CHECKPOINT_TEMPORARY_GLOB, checkpoint_file

log = logging.getLogger(__name__)

def state_digest(tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """sha256 over the tensors (names, dtypes, shapes, bytes) and the metadata's canonical JSON."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's generators that a student can draw from (dropout): the CPU one, and the GPU's."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


@dataclass
class Progress:
    """Where a run stands after a check: the next epoch to train and what the checks measured."""

    epoch: int
    checks: list[dict]
    best: float | None
    seconds: float
    rng: dict[str, torch.Tensor] | None = None  # this rank's generators, as :func:`rng_state` took them

    def restore_rng(self, device: torch.device) -> None:
        torch.set_rng_state(self.rng["cpu"])
        if "cuda" in self.rng:
            torch.cuda.set_rng_state(self.rng["cuda"], device)


@dataclass(frozen=True)
class StudentCheckpoint:
    """The file one student run keeps its state in; ``identity`` is everything that decides its numbers."""

    path: Path
    identity: dict

    @classmethod
    def in_directory(cls, directory: Path, identity: dict) -> "StudentCheckpoint":
        """A file named by the identity's hash, so runs with other settings keep their own."""
        key = fingerprint_of(identity)[:16]
        return cls(Path(directory) / checkpoint_file(identity.get("student", "student"), key), identity)

    def with_identity(self, **more) -> "StudentCheckpoint":
        """The same file, with settings only the training loop knows (device, processes) in its identity."""
        return replace(self, identity={**self.identity, **more})

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LRScheduler, progress: Progress,
             rng_by_rank: list[dict[str, torch.Tensor]]) -> None:
        optimizer_state = optimizer.state_dict()
        tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
        for index, state in optimizer_state["state"].items():
            for name, value in state.items():
                if not torch.is_tensor(value):
                    raise TypeError(f"optimizer state {name!r} is not a tensor; this checkpoint keeps tensors only")
                tensors[f"optimizer.{index}.{name}"] = value
        for rank, states in enumerate(rng_by_rank):
            tensors.update({f"rng.{kind}.{rank}": state for kind, state in states.items()})
        tensors = {name: value.detach().cpu() for name, value in tensors.items()}
        metadata = {"identity": self.identity, "epoch": progress.epoch, "checks": progress.checks,
                    "best": progress.best, "seconds": progress.seconds, "schedule": schedule.state_dict(),
                    "param_groups": optimizer_state["param_groups"]}
        metadata = json.loads(json.dumps(metadata))  # as it will read back (tuples become lists)
        metadata["sha256"] = state_digest(tensors, metadata)
        atomic_write_bytes(self.path, safetensors_bytes(tensors, metadata))

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LRScheduler, rank: int = 0) -> Progress | None:
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
        recorded = metadata.pop("sha256", None)
        if recorded != state_digest(tensors, metadata):
            log.warning("evaluate: not resuming from %s, it changed since it was written", self.path)
            return None
        ours, theirs = json.loads(json.dumps(self.identity)), metadata.get("identity") or {}
        if ours != theirs:
            differences = ", ".join(f"{key}: {ours.get(key)!r} here, {theirs.get(key)!r} in the file"
                                    for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key))
            log.warning("evaluate: not resuming from %s, a run with other settings or inputs wrote it (%s); "
                        "starting over", self.path, differences)
            return None
        model.load_state_dict({name[len("model."):]: value for name, value in tensors.items()
                               if name.startswith("model.")})
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": metadata["param_groups"]})
        for parameter, moments in optimizer.state.items():  # the parameters' layout (channels_last), as before
            for key, value in moments.items():
                if value.shape == parameter.shape:
                    moments[key] = torch.empty_like(parameter).copy_(value)
        schedule.load_state_dict(metadata["schedule"])
        log.info("evaluate: resuming %s at epoch %d from %s", self.identity.get("student"), metadata["epoch"],
                 self.path)
        rng = {name.split(".")[1]: value for name, value in tensors.items()
               if name.startswith("rng.") and name.endswith(f".{rank}")}
        return Progress(metadata["epoch"], metadata["checks"], metadata["best"], metadata["seconds"], rng)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def prune(directory: Path, inputs: str) -> list[Path]:
    """Delete what no run can resume from: checkpoints of other inputs (the set was built again) and the
    temporary files of writes a kill cut short. Call it while holding the build directory."""
    directory = Path(directory)
    gone = list(directory.glob(CHECKPOINT_TEMPORARY_GLOB))
    for path in directory.glob(CHECKPOINT_GLOB):
        try:
            written_for = (read_safetensors_metadata(path).get("identity") or {}).get("inputs")
        except Exception:  # unreadable: nothing can resume from it
            written_for = None
        if written_for != inputs:
            gone.append(path)
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


__all__ = ["Progress", "StudentCheckpoint", "prune", "rng_state", "state_digest"]
