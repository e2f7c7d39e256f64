"""Two builders, one directory: the second is refused at once with one line naming the first."""

from __future__ import annotations

import signal
import time

from fadrm_datasets import layout
from tests.helpers import run_cli
from tests.reliability.conftest import build_args, cli_process, cli_run, files_of


def test_a_second_builder_is_refused_naming_the_holder(build_root, fake_data, tmp_path, capsys):
    build_dir = tmp_path / "shared"
    slow = build_args(build_root, fake_data, build_dir, ipc=3)
    slow[slow.index("--iterations") + 1] = "300,300,300,300"
    first = cli_process(slow)
    holder = build_dir / layout.BUILD_LOCK_HOLDER
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not holder.is_file():
        time.sleep(0.05)
    try:
        assert holder.is_file(), first.stderr.read() if first.poll() is not None else "the first builder never started"
        code, err = run_cli(build_args(build_root, fake_data, build_dir, "--seed", "1", ipc=3), capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert f"is being built by process {first.pid}" in err and "use another --build-dir" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The lock dies with its holder (SIGKILL included): the next builder takes the directory.
    result = cli_run(build_args(build_root, fake_data, build_dir, ipc=3))
    assert result.returncode == 0, result.stderr
    assert len(files_of(build_dir / layout.IMAGES)) == 30
