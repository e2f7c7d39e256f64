"""Every file and folder name of a build directory and a release is spelled in fadrm_datasets/layout.py
only: the code and the tests ask layout, so a renamed file cannot leave a stale spelling behind.

The check greps the sources' code (comments, docstrings and texts of several lines are prose, and
may name a file) for the spellings of those names as paths. A line that spells a name that is not
ours (a source dataset's own folders, the project's README) says so with the marker
``# not a set's name``.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

import pytest

from tests.project import ROOT

SCANNED = ("fadrm_datasets", "builders", "benchmarks", "tests")
OWNERS = ("fadrm_datasets/layout.py", "tests/test_layout_names.py")
# The loopback Hub and its tests speak the Hub's names (README.md as a card), and use nothing of ours.
HUB_STAND_IN = ("fadrm_datasets/testing/", "tests/testing/")
MARKER = "# not a set's name"

_FOLDERS = r"(images|soft_labels|teachers|\.checkpoints)"
SPELLINGS = {
    "a file of a set": re.compile(
        r"[\"'/}](manifest\.json|index\.json|grid\.png|README\.md|patches\.safetensors|\.fadrm-source\.json)"
        r"(?=[\"'/])"),
    "a folder of a set": re.compile(rf"/\s*[\"']{_FOLDERS}[\"'/]|[\"'/]{_FOLDERS}/|/{_FOLDERS}[\"']"),
    "an ipc<N> folder": re.compile(r"[\"'/]ipc(\d|\{)"),
    "an image's name": re.compile(r"(\d{5}|05d\})\.png"),
    "a parquet or soft-label shard": re.compile(r"[\"'/](train|epochs)-[\d{*]"),
    # A name computed in an f-string, or a file in a folder: a test's own weights file (w.safetensors) is not ours.
    "a teacher or checkpoint file": re.compile(r"(\}|/[\w.-]+)\.safetensors[\"']"),
    "a lock, receipt or partial download": re.compile(r"\.(lock|holder|sha256|part)[\"']"),
}


def _docstring_starts(tree: ast.AST) -> set[tuple[int, int]]:
    starts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                starts.add((first.lineno, first.col_offset))
    return starts


def code_lines(source: str) -> list[str]:
    """The source's lines with its comments, docstrings and texts of several lines (a command's help)
    blanked out."""
    lines = source.splitlines()
    docstrings = _docstring_starts(ast.parse(source))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        prose = token.type == tokenize.STRING and (token.start in docstrings or token.start[0] != token.end[0])
        if token.type == tokenize.COMMENT or prose:
            (row, col), (end_row, end_col) = token.start, token.end
            for number in range(row, end_row + 1):
                line = lines[number - 1]
                start, end = (col if number == row else 0), (end_col if number == end_row else len(line))
                lines[number - 1] = line[:start] + " " * (end - start) + line[end:]
    return lines


def spelled_names(source: str) -> list[tuple[int, str]]:
    """(line number, what) for each line of code that spells a name of a set as a path."""
    found = []
    for number, (line, code) in enumerate(zip(source.splitlines(), code_lines(source)), start=1):
        if MARKER not in line:
            found += [(number, what) for what, pattern in SPELLINGS.items() if pattern.search(code)][:1]
    return found


@pytest.mark.parametrize("code", [
    'path = build / "manifest.json"',
    "path = build / 'manifest.json'",
    'path = f"ipc{ipc}-{method}"',
    'path = root / dataset / f"ipc{ipc}"',
    'rel = "ipc10/grid.png"',
    'png = build / "images" / "00002" / "00003.png"',
    'png = f"{label:05d}/{ipc_id:05d}.png"',
    'folder = build / "soft_labels"',
    'rel = "soft_labels/index.json"',
    'teachers = root / "fashion-mnist" / "teachers"',
    'weights = teachers / f"{name}.safetensors"',
    'rel = "teachers/tiny-convnet.safetensors"',
    'shard = "epochs-00000-00001.safetensors"',
    'shard = f"train-{i:05d}-of-{n:05d}.parquet"',
    'lock = FileLock(str(dest) + ".lock")',
    'receipt = shard.with_name(f".{shard.name}.sha256")',
    'part = target.with_name(f".{target.name}.part")',
    'state = build / ".checkpoints"',
])
def test_the_grep_finds_a_name_spelled_as_a_path(code):
    assert [number for number, _ in spelled_names(f"x = 1\n{code}\n")] == [2]


@pytest.mark.parametrize("code", [
    'teachers = manifest["teachers"]',  # a manifest's keys are the schema's, not names of files
    'ipc = manifest["ipc"]',
    'weights = tmp_path / "w.safetensors"',  # a test's own file
    'raise ValueError(f"{repo_id} has no ipc={ipc}")',
    'label = f"{repo_id} {version} ipc{ipc}"',  # prose naming an IPC, not a path
    'path = build / layout.MANIFEST  # was "manifest.json"',
    'def f():\n    """Reads build/<dataset>/ipc10/manifest.json."""',
    'HELP = """Example:\n  fadrm-build evaluate build/fashion-mnist/ipc10\n"""',
    f'folder = base / "train" / wnid / "images"  {MARKER}: Tiny-ImageNet\'s own',
])
def test_the_grep_leaves_keys_prose_and_marked_lines_alone(code):
    assert spelled_names(f"{code}\n") == []


def test_every_name_of_a_set_is_spelled_in_layout_only():
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in OWNERS or rel.startswith(HUB_STAND_IN):
                continue
            found += [f"{rel}:{number}: {what}" for number, what in spelled_names(path.read_text())]
    assert not found, ("names of a set spelled outside fadrm_datasets/layout.py; ask layout for them (or mark a name "
                       f"that is not ours with {MARKER!r}):\n" + "\n".join(found))
