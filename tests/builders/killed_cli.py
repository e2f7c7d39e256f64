"""``fadrm-build ARGS`` that dies right after its N-th student checkpoint is written, as a SIGKILL at that
moment would leave it (writes are atomic): ``python killed_cli.py N ARGS``, run by torchrun in the
two-process resume test."""

import os
import sys

from builders.checkpoints import StudentCheckpoint
from builders.cli import main


def die_after_saves(count: int) -> None:
    original, saves = StudentCheckpoint.save, []

    def save(self, *args):
        original(self, *args)
        saves.append(1)
        if len(saves) == count:
            os._exit(137)  # no cleanup, no exception handlers: as a kill
    StudentCheckpoint.save = save


if __name__ == "__main__":
    die_after_saves(int(sys.argv[1]))
    main(sys.argv[2:])
