"""Kills, damage and failures during a build: a rerun trusts only what it verifies, and ends with the
same bytes as a build that never failed."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import time

import pytest
import torch

from fadrm_datasets import layout
from fadrm_datasets.layout import BuildDirectory
from tests.helpers import run_cli, shard_files
from tests.reliability.conftest import build_args, cli_process, cli_run, files_of


def _wait_for(predicate, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None and not predicate():
        time.sleep(0.02)


def test_sigkill_during_recover_resumes_to_the_same_images(build_root, fake_data, tmp_path):
    args = build_args(build_root, fake_data, tmp_path / "killed", ipc=3)
    args[args.index("--iterations") + 1] = "40,40,40,40"
    reference = tmp_path / "whole"
    assert run_cli([*args[:args.index("--build-dir") + 1], str(reference), *args[args.index("--build-dir") + 2:]])[0] == 0
    process = cli_process(args)
    images = tmp_path / "killed" / layout.IMAGES
    _wait_for(lambda: len(list(images.glob("*/*.png"))) >= 10, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(images.glob("*/*.png")))
    assert 10 <= finished < 30, "the kill should land after the first unit and before the last"
    kept = {p.name + p.parent.name: p.stat().st_ino for p in images.glob("*/*.png")}
    result = cli_run(args)
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stderr
    survivors = {p.name + p.parent.name: p.stat().st_ino for p in images.glob("*/*.png")}
    complete_units = [k for k in kept if sum(other[:9] == k[:9] for other in kept) == 10]
    assert all(survivors[k] == kept[k] for k in complete_units)  # finished units were not made again
    assert files_of(images) == files_of(reference / layout.IMAGES)


def _relabel_args(build_root, fake_data, build_dir, epochs: int = 240, per_shard: int = 4,
                  every_epoch: bool = False) -> list[str]:
    stored = ["--label-cycle", str(epochs)] if every_epoch else []  # else the preset's reuse
    return ["relabel", "fashion-mnist", "--ipc", "2", "--epochs", str(epochs), "--epochs-per-shard", str(per_shard),
            "--data-root", str(fake_data), "--build-root", str(build_root), "--build-dir", str(build_dir),
            "--teacher", "convnet-bn-w8-d2", "--device", "cpu", *stored]


def test_sigkill_during_relabel_resumes_to_the_same_shards(build_root, fake_data, clean_build, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(clean_build, killed)
    assert run_cli(_relabel_args(build_root, fake_data, clean_build, every_epoch=True))[0] == 0
    process = cli_process(_relabel_args(build_root, fake_data, killed, every_epoch=True))
    shards = killed / layout.SOFT_LABELS
    _wait_for(lambda: len(shard_files(shards)) >= 4, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(shard_files(shards))
    assert 4 <= written < 60, "the kill should land after some shards and before the last"
    assert json.loads((shards / layout.SOFT_LABEL_INDEX).read_text())["complete"] is False
    assert run_cli(_relabel_args(build_root, fake_data, killed, every_epoch=True))[0] == 0
    assert files_of(shards) == files_of(clean_build / layout.SOFT_LABELS)


def test_a_torn_shard_write_is_not_trusted(build_root, fake_data, clean_build, tmp_path, caplog):
    """A kill between a shard's rename and its receipt, and one inside its temporary file: both are
    made again, and the store ends identical."""
    store = clean_build / layout.SOFT_LABELS
    reference = files_of(store)
    shard = shard_files(store)[0]
    (store / layout.receipt_name(shard.name)).unlink()  # killed before the receipt was written
    shard.write_bytes(shard.read_bytes()[:-100] + bytes(100))
    (store / f".{shard.name}.abc123.tmp").write_bytes(b"half a shard")  # killed inside the temporary file
    assert run_cli(_relabel_args(build_root, fake_data, clean_build, epochs=2, per_shard=100))[0] == 0
    assert files_of(store) == reference


def test_a_flipped_byte_in_the_logits_is_caught_and_made_again(build_root, fake_data, clean_build, capsys):
    store = clean_build / layout.SOFT_LABELS
    reference = files_of(store)
    recorded = BuildDirectory(clean_build).read_manifest()["files"]
    shard = shard_files(store)[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor: the header still parses
    shard.write_bytes(bytes(data))
    code, err = run_cli(["evaluate", str(clean_build), "--epochs", "1", "--device", "cpu"], capsys)
    assert code == 2 and "changed since their stage wrote them" in err and len(err.strip().splitlines()) == 1
    assert run_cli(build_args(build_root, fake_data, clean_build))[0] == 0
    assert files_of(store) == reference
    assert BuildDirectory(clean_build).read_manifest()["files"] == recorded


def test_a_garbage_png_is_made_again_and_never_published(build_root, fake_data, clean_build, tmp_path, hub, capsys):
    images = clean_build / layout.IMAGES
    reference = files_of(images)
    png = images / layout.image_name(3, 1)
    png.write_bytes(b"garbage, not a PNG")
    repo = hub.repo_id("never")
    code, err = run_cli(["push", str(clean_build), "--repo", repo, "--version", "v1.0.0"], capsys)
    assert code == 2 and "changed after the manifest was written" in err
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):  # refused before any write to the Hub
        HfApi().repo_info(repo, repo_type="dataset")
    assert run_cli(build_args(build_root, fake_data, clean_build))[0] == 0
    assert files_of(images) == reference


def test_a_png_written_by_a_killed_run_is_checked_by_decoding(build_root, fake_data, clean_build):
    """Images written after the last manifest update have no recorded hash: they must decode."""
    manifest_path = clean_build / layout.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"][layout.image_relpath(7, 0)]
    manifest_path.write_text(json.dumps(manifest))
    png = clean_build / layout.image_relpath(7, 0)
    reference = png.read_bytes()
    png.write_bytes(reference[: len(reference) // 2])
    assert run_cli(build_args(build_root, fake_data, clean_build))[0] == 0
    assert png.read_bytes() == reference


def test_a_refused_rerun_leaves_the_record_as_it_was(build_root, fake_data, clean_build, capsys):
    before = (clean_build / layout.MANIFEST).read_bytes()
    code, err = run_cli(build_args(build_root, fake_data, clean_build, "--seed", "1"), capsys)
    assert code == 2 and "was selected with another seed" in err  # the patches are checked first
    assert (clean_build / layout.MANIFEST).read_bytes() == before


@pytest.mark.parametrize("method, change, message", [
    ("fadrm", ["--difficulty", "hard"], "another difficulty"),
    ("random-real", ["--seed", "1"], "another seed"),
])
def test_a_rerun_choosing_its_patches_otherwise_is_refused(method, change, message, build_root, fake_data,
                                                            tmp_path, capsys):
    build_dir = tmp_path / method
    assert run_cli(build_args(build_root, fake_data, build_dir, "--method", method))[0] == 0
    before = (build_dir / layout.MANIFEST).read_bytes()
    code, err = run_cli(build_args(build_root, fake_data, build_dir, "--method", method, *change), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert (build_dir / layout.MANIFEST).read_bytes() == before


class NaNTeacher(torch.nn.Module):
    """Wraps a teacher whose outputs turn NaN: what a diverging optimisation does to a unit."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, x):
        return self.teacher(x) * float("nan")


def test_a_unit_whose_loss_turns_nan_fails_alone(build_root, fake_data, clean_build, tmp_path, monkeypatch, capsys):
    from builders import recover

    real = recover.recover_unit
    calls = []

    def second_unit_diverges(teachers, *args, **kwargs):
        calls.append(1)
        return real([NaNTeacher(teachers[0])] if len(calls) == 2 else teachers, *args, **kwargs)

    monkeypatch.setattr(recover, "recover_unit", second_unit_diverges)
    build_dir = tmp_path / "nan"
    code, err = run_cli(build_args(build_root, fake_data, build_dir), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "1 unit(s) failed (ipc_id/block 1/0)" in err and "NaN or inf" in err and "run the same command" in err
    written = files_of(build_dir / layout.IMAGES)
    firsts = {layout.image_name(label, 0) for label in range(10)}
    assert sorted(written) == sorted(k for k in files_of(clean_build / layout.IMAGES) if k in firsts)
    assert not (build_dir / layout.SOFT_LABELS).exists()  # the build stopped before relabelling
    monkeypatch.setattr(recover, "recover_unit", real)
    assert run_cli(build_args(build_root, fake_data, build_dir))[0] == 0
    assert files_of(build_dir / layout.IMAGES) == files_of(clean_build / layout.IMAGES)


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request, tmp_path, monkeypatch):
    """A folder whose disk fills up: a real 64 KiB tmpfs where the test may mount one (root), and always a
    write error injected into the atomic writer after a few files."""
    folder = tmp_path / "small"
    folder.mkdir()
    if request.param == "tmpfs":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                 capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the injected case runs")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "--lazy", str(folder)], check=False)
        return
    from fadrm_datasets import _io

    real, writes = _io.os.fdopen, []

    class FillingFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, data):
            writes.append(len(data))
            if len(writes) > 12:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(_io.os, "fdopen", lambda fd, *a, **k: FillingFile(real(fd, *a, **k)))
    yield folder


def test_a_full_disk_stops_with_one_line_and_nothing_half_written_is_trusted(
        clean_build, build_root, fake_data, small_disk, tmp_path, monkeypatch, capsys):
    code, err = run_cli(build_args(build_root, fake_data, small_disk / layout.ipc_dir(2)), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no space left on the device" in err
    assert "Traceback" not in err
    monkeypatch.undo()  # the disk has room again (the injected writer is gone)
    moved = tmp_path / "moved"
    shutil.copytree(small_disk / layout.ipc_dir(2), moved)  # what was written, half-written files included
    assert run_cli(build_args(build_root, fake_data, moved))[0] == 0
    for part in ("images", "soft_labels"):
        assert files_of(moved / part) == files_of(clean_build / part)
    assert (moved / layout.PATCHES).read_bytes() == (clean_build / layout.PATCHES).read_bytes()


def test_the_manifest_records_what_decides_the_bits_and_a_resume_under_another_says_so(
        build_root, fake_data, clean_build, caplog):
    import torch

    manifest = json.loads((clean_build / layout.MANIFEST).read_text())
    env = manifest["stages"]["recover"]["environment"]
    assert env == {"torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
                   "machine": env["machine"]} and manifest["environment"] == env
    manifest["stages"]["recover"]["environment"] = {**env, "threads": env["threads"] + 7}
    (clean_build / layout.MANIFEST).write_text(json.dumps(manifest))
    (clean_build / layout.image_relpath(2, 1)).unlink()
    with caplog.at_level("WARNING", logger="builders"):
        assert run_cli(build_args(build_root, fake_data, clean_build))[0] == 0
    assert "will not be bit-identical" in caplog.text
