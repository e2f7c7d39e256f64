"""Hostile and broken sources given to ``fadrm-build import``: each refused in one line, before anything is
written, leaving the build root as it was (no build, no hidden half-made folder)."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fadrm_datasets import layout
from tests.fakedata import write_class_folders, zip_folder
from tests.helpers import run_cli

IPC = 2


@pytest.fixture
def build_root(tmp_path) -> Path:
    root = tmp_path / "build"
    (root / "fashion-mnist").mkdir(parents=True)
    return root


@pytest.fixture
def good(tmp_path) -> Path:
    """A whole source of 10 classes x IPC images, in FADRM's release layout, for each test to break."""
    rng = np.random.default_rng(0)
    images = {label: [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(IPC)] for label in range(10)}
    return write_class_folders(tmp_path / "source", images)


def snapshot(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def refused(source, build_root: Path, capsys, *extra: str) -> str:
    """The one line ``fadrm-build import`` refuses ``source`` with; the build root is left as it was."""
    before = snapshot(build_root)
    code, err = run_cli(["import", str(source), "--dataset", "fashion-mnist", "--ipc", str(IPC), "--name", "theirs",
                         "--build-root", str(build_root), "--device", "cpu", *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fadrm-build: error:"), err
    assert snapshot(build_root) == before
    return lines[0]


def first_image(source: Path) -> Path:
    return sorted(source.rglob("*.png"))[0]


def test_a_zip_member_whose_path_escapes(good, build_root, tmp_path, capsys):
    archive = zip_folder(good, tmp_path / "release.zip")
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr("../../outside.png", b"x")
    assert "whose path leaves the archive" in refused(archive, build_root, capsys)
    assert not (tmp_path.parent / "outside.png").exists()


def test_a_zip_member_that_is_a_link(good, build_root, tmp_path, capsys):
    archive = zip_folder(good, tmp_path / "release.zip")
    link = zipfile.ZipInfo("new000/class000_id009.png")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr(link, "/etc/passwd")
    assert "a symbolic link" in refused(archive, build_root, capsys)


def test_a_symbolic_link_in_a_folder(good, build_root, capsys):
    target = first_image(good)
    target.unlink()
    target.symlink_to("/etc/passwd")
    assert "is a symbolic link" in refused(good, build_root, capsys)


def test_a_linked_class_folder(good, build_root, tmp_path, capsys):
    real = tmp_path / "elsewhere"
    (good / "new009").rename(real)
    (good / "new009").symlink_to(real, target_is_directory=True)
    assert "new009 is a symbolic link" in refused(good, build_root, capsys)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` grey pixels, its data a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_a_decompression_bomb(good, build_root, capsys):
    first_image(good).write_bytes(png_declaring(40_000, 40_000))
    assert "more pixels than PIL's limit" in refused(good, build_root, capsys)


def test_a_file_that_is_not_an_image(good, build_root, capsys):
    first_image(good).write_bytes(b"<html>not a picture</html>")
    assert "is not an image PIL can read" in refused(good, build_root, capsys)


def test_a_file_of_another_kind(good, build_root, capsys):
    (good / "new000" / "notes.txt").write_text("hello")
    assert "notes.txt is not an image file" in refused(good, build_root, capsys)


@pytest.mark.parametrize("name", ["batch_0.tar", "images.pt", "set.pth", "labels.pkl"])
def test_pickled_files_are_refused_with_how_to_convert_them(name, good, build_root, tmp_path, capsys):
    (good / "new000" / name).write_bytes(b"\x80\x04K\x01.")  # a pickle: never opened
    line = refused(good, build_root, capsys)
    assert "never unpickles" in line and "save each image as a PNG" in line
    (tmp_path / name).write_bytes(b"\x80\x04K\x01.")
    assert "never unpickles" in refused(tmp_path / name, build_root, capsys)


def test_an_empty_class(good, build_root, capsys):
    for path in (good / "new004").iterdir():
        path.unlink()
    assert "class 4 of fashion-mnist has no images, --ipc is 2" in refused(good, build_root, capsys)


def test_a_missing_class(good, build_root, capsys):
    for path in (good / "new007").iterdir():
        path.unlink()
    (good / "new007").rmdir()
    assert "class 7 of fashion-mnist has no images" in refused(good, build_root, capsys)


def test_a_folder_that_names_no_class(good, build_root, capsys):
    (good / "new003").rename(good / "new010")
    assert "class 'new010' is no class of fashion-mnist" in refused(good, build_root, capsys)


@pytest.mark.parametrize("change, message", [("more", "has 3 images, --ipc is 2"), ("fewer", "has 1 images, --ipc is 2")])
def test_more_or_fewer_images_than_ipc(change, message, good, build_root, capsys):
    image = first_image(good)
    if change == "more":
        (image.parent / "class000_id002.png").write_bytes(image.read_bytes())
    else:
        image.unlink()
    assert f"class 0 of fashion-mnist ('new000' in the source) {message}" in refused(good, build_root, capsys)


def test_images_of_another_size_are_refused_unless_a_filter_is_named(good, build_root, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(first_image(good))
    line = refused(good, build_root, capsys)
    assert "is 32x32, fashion-mnist images are 28x28" in line and "--resize FILTER" in line
    Image.fromarray(np.zeros((32, 30), dtype=np.uint8)).save(first_image(good))
    assert "not square" in refused(good, build_root, capsys, "--resize", "bicubic")


def test_a_colour_image_for_a_grayscale_set(good, build_root, capsys):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(first_image(good))
    assert "is a colour image; fashion-mnist is grayscale" in refused(good, build_root, capsys)


@pytest.mark.parametrize("name, message", [("rded", "is a method of this builder"), ("imported", "is a method"),
                                           ("../up", "use lower-case letters")])
def test_names_that_are_methods_or_paths(name, message, good, build_root, capsys):
    before = snapshot(build_root)
    code, err = run_cli(["import", str(good), "--dataset", "fashion-mnist", "--ipc", str(IPC), "--name", name,
                         "--build-root", str(build_root)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert snapshot(build_root) == before


def test_an_existing_build_is_never_touched(good, build_root, capsys):
    existing = layout.build_dir(build_root, "fashion-mnist", IPC, "theirs")
    existing.mkdir()
    (existing / "kept.txt").write_text("mine")
    assert "exists; remove it, or import under another --name" in refused(good, build_root, capsys)
    assert (existing / "kept.txt").read_text() == "mine"


def test_a_refusal_after_the_teacher_leaves_no_half_made_build(good, build_root, capsys):
    """The source is read whole before a folder is made; the staging folder a late failure leaves is
    removed (here: the teacher finds the noise near chance)."""
    from tests.reliability.conftest import TEACHER, with_tiny_teacher

    with_tiny_teacher(build_root)
    code, err = run_cli(["import", str(good), "--dataset", "fashion-mnist", "--ipc", str(IPC), "--name", "theirs",
                         "--build-root", str(build_root), "--device", "cpu", "--teacher", TEACHER], capsys)
    assert code == 2 and "near chance" in err and len(err.strip().splitlines()) == 1
    # Only the teacher cache, which every build of the dataset shares (and locks while it reads), is there.
    assert os.listdir(build_root / "fashion-mnist") == [layout.TEACHERS]
