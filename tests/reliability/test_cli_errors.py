"""Bad input on the command line: one line, exit status 2, never a traceback, for every argument and for
every file the CLI reads."""

from __future__ import annotations

import json
import shutil

import pytest

from fadrm_datasets import layout
from tests.helpers import run_cli
from tests.reliability.conftest import TEACHER, build_args


@pytest.fixture
def built(build_root, fake_data, tmp_path):
    build_dir = tmp_path / "built"
    assert run_cli(build_args(build_root, fake_data, build_dir))[0] == 0
    return build_dir


def _rewrite_json(path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


SOFT_INDEX = f"{layout.SOFT_LABELS}/{layout.SOFT_LABEL_INDEX}"

# (what is damaged, how, the command, what the line must say)
CASES = {
    "manifest is a JSON list (build)": (layout.MANIFEST, lambda m: ["a", "list"], "build", "holds a JSON list, not an object"),
    "manifest has wrong types (build)": (layout.MANIFEST, lambda m: {**m, "ipc": "two"}, "build", "is malformed: ipc"),
    "manifest is a JSON list (push)": (layout.MANIFEST, lambda m: ["a", "list"], "push", "holds a JSON list"),
    "manifest has wrong types (push)": (layout.MANIFEST, lambda m: {**m, "files": ["x"]}, "push", "is malformed: files"),
    "manifest is not JSON (evaluate)": (layout.MANIFEST, None, "evaluate", f"{layout.MANIFEST} is not valid JSON"),
    "index has wrong types (evaluate)": (SOFT_INDEX, lambda i: {**i, "epochs": "2"}, "evaluate",
                                         f"{layout.SOFT_LABEL_INDEX} is malformed: epochs"),
    "index names a shard outside (evaluate)": (
        SOFT_INDEX,
        lambda i: {**i, "shards": [{**i["shards"][0], "file": "../../x.safetensors"}]}, "evaluate",  # not a set's name
        "is not a shard name"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_file_read_by_the_cli_gets_one_line_and_status_2(case, built, build_root, fake_data, hub, capsys):
    relative, change, command, message = CASES[case]
    path = built / relative
    if change is None:
        path.write_text("{ not json")
    else:
        _rewrite_json(path, change)
    if relative != layout.MANIFEST:  # as if a stage had written it so: the manifest's hash agrees
        from fadrm_datasets._io import sha256_file

        _rewrite_json(built / layout.MANIFEST, lambda m: {**m, "files": {**m["files"], relative: sha256_file(path)}})
    args = {"build": build_args(build_root, fake_data, built),
            "push": ["push", str(built), "--repo", hub.repo_id("bad"), "--version", "v1.0.0"],
            "evaluate": ["evaluate", str(built), "--epochs", "1", "--device", "cpu", "--data-root", str(fake_data)]}
    code, err = run_cli(args[command], capsys)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("fadrm-build: error:")


def test_a_teacher_of_another_class_count_gets_one_line_and_status_2(built, build_root, fake_data, tmp_path, capsys):
    from safetensors.torch import save_file

    from builders.models import build_model

    weights = tmp_path / "hundred.safetensors"
    save_file(build_model(TEACHER, 100, 1, 28).state_dict(), str(weights))
    code, err = run_cli(build_args(build_root, fake_data, tmp_path / "other", "--teacher-weights", str(weights)), capsys)
    assert code == 2 and "weights do not fit 'convnet-bn-w8-d2'" in err and len(err.strip().splitlines()) == 1


def test_a_damaged_cached_teacher_gets_one_line(built, build_root, fake_data, tmp_path, capsys):
    cached = layout.teachers_dir(build_root, "fashion-mnist") / layout.teacher_file(TEACHER)
    cached.write_bytes(b"\x00" * 40)
    code, err = run_cli(build_args(build_root, fake_data, tmp_path / "again"), capsys)
    assert code == 2 and "cannot read the teacher weights" in err and "--retrain" in err


def test_epochs_beyond_those_stored_get_one_line_and_status_2(built, capsys):
    code, err = run_cli(["evaluate", str(built), "--epochs", "9", "--device", "cpu"], capsys)
    assert code == 2 and "made for only 2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "device 'tpu' is not supported"),
    (["--ipc", "0"], "must be a positive integer"),
    (["--method", "dc"], "'dc' is not one of"),
    (["--iterations", "x,y"], "give one number per stage"),
    (["--patch-scale", "2,3"], "need 0 < MIN <= MAX <= 1"),
    (["--label-cycle", "0"], "must be a positive integer"),
    (["--label-dtype", "int4"], "'int4' is not one of"),
])
def test_every_bad_argument_gets_one_line_and_status_2(args, message, build_root, fake_data, tmp_path, capsys):
    code, err = run_cli([*build_args(build_root, fake_data, tmp_path / "x"), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_push_with_the_hub_unreachable_gets_one_line(built, monkeypatch, capsys):
    import socket

    import huggingface_hub.constants

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", dead)
    code, err = run_cli(["push", str(built), "--repo", "alice/x", "--version", "v1.0.0"], capsys)
    assert code == 1 and "cannot reach the Hub" in err and "check the connection" in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_build_directory_gets_one_line(tmp_path, capsys):
    shutil.rmtree(tmp_path, ignore_errors=True)
    code, err = run_cli(["evaluate", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "does not exist" in err


def test_a_full_disk_during_push_is_reported_as_itself(built, hub, monkeypatch, capsys):
    import errno

    from builders import publish

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/staging/" + layout.parquet_shard(2, 0, 1))

    monkeypatch.setattr(publish, "write_parquet", full)
    repo = hub.repo_id("full")
    code, err = run_cli(["push", str(built), "--repo", repo, "--version", "v1.0.0"], capsys)
    assert code == 1 and "no space left on the device" in err and "cannot reach" not in err
