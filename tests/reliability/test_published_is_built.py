"""A push publishes exactly what the build recorded, read from regular files of the build: nothing put
beside it, and no symbolic link followed, by the push or by a rerun of the build."""

from __future__ import annotations

import json

import pytest

from fadrm_datasets import layout
from tests.helpers import run_cli
from tests.reliability.conftest import build_args


@pytest.fixture
def host(tmp_path):
    """What a user keeps next to a build: a secret file and a private folder, outside the build."""
    secret = tmp_path / "secret.txt"
    secret.write_text("canary: never publish me")
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "key.pem").write_text("canary: never publish me either")
    return secret, folder


PLANTS = {
    "a plain file": lambda soft, secret, folder: (soft / "notes.txt").write_text("canary"),
    "a link to a file": lambda soft, secret, folder: (soft / "linked.txt").symlink_to(secret),
    "a link to a folder": lambda soft, secret, folder: (soft / "linked").symlink_to(folder, target_is_directory=True),
    "a link in place of a shard": lambda soft, secret, folder: _replace_a_shard_by_link(soft, secret),
}


def _replace_a_shard_by_link(soft, target):
    path = soft / json.loads((soft / layout.SOFT_LABEL_INDEX).read_text())["shards"][0]["file"]
    path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_push_refuses_what_the_build_did_not_record_and_publishes_nothing(clean_build, hub, host, plant, capsys):
    from huggingface_hub import HfApi

    PLANTS[plant](clean_build / layout.SOFT_LABELS, *host)
    repo = hub.repo_id("leak")
    code, err = run_cli(["push", str(clean_build), "--repo", repo, "--version", "v1.0.0"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not record" in err or "no longer a regular file" in err
    assert not HfApi().repo_exists(repo, repo_type="dataset")


def test_a_rerun_of_the_build_records_nothing_it_did_not_write(clean_build, build_root, fake_data, host, tmp_path):
    from fadrm_datasets._io import sha256_file

    secret, _ = host
    soft, image = clean_build / layout.SOFT_LABELS, clean_build / layout.image_relpath(0, 1)
    (soft / "linked.txt").symlink_to(secret)
    (soft / "notes.txt").write_text("canary")
    # An image replaced by a link to another valid image outside the build: made again, never followed.
    original, outside = image.read_bytes(), tmp_path / "outside.png"
    outside.write_bytes((clean_build / layout.image_relpath(1, 0)).read_bytes())
    image.unlink()
    image.symlink_to(outside)

    code, _ = run_cli(build_args(build_root, fake_data, clean_build))
    assert code == 0
    recorded = json.loads((clean_build / layout.MANIFEST).read_text())["files"]
    assert f"{layout.SOFT_LABELS}/linked.txt" not in recorded and f"{layout.SOFT_LABELS}/notes.txt" not in recorded
    assert sha256_file(secret) not in recorded.values()
    assert not image.is_symlink() and image.read_bytes() == original
    assert recorded[layout.image_relpath(0, 1)] == sha256_file(image)
