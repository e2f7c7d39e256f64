"""``fadrm-build ARGS`` with a student that draws dropout masks, optionally dying right after its N-th
checkpoint is written, as a kill at that moment would leave it (writes are atomic):
``python -m tests.builders.dropout_cli N ARGS`` (N = 0: it never dies). The two-process resume test runs
it under torchrun; it is ``test_evaluate_resume.py``'s kill, made in a process that torchrun started."""

import os
import sys

import builders.evaluate
from builders.checkpoints import StudentCheckpoint
from builders.cli import main
from tests.reliability.conftest import dropout_student


def die_after_saves(count: int) -> None:
    original, saves = StudentCheckpoint.save, []

    def save(self, *args, **kwargs):
        original(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == count:
            os._exit(137)  # no cleanup, no exception handlers: as a kill
    StudentCheckpoint.save = save


if __name__ == "__main__":
    builders.evaluate.build_model = dropout_student
    die_after_saves(int(sys.argv[1]))
    main(sys.argv[2:])
