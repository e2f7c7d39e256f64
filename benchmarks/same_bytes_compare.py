"""Compare two runs of ``benchmarks/same_bytes.sh`` (before and after a change that must not change
what a build makes): for every method's build, the images and soft labels byte for byte, every
teacher's weights, and the evaluation records without the fields that tell runs apart (RUN_FIELDS).

    python benchmarks/same_bytes_compare.py BEFORE_ROOT AFTER_ROOT

Prints one line per build and exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import filecmp
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fadrm_datasets.layout import IMAGES, SOFT_LABELS, BuildDirectory, build_dir, teachers_dir  # noqa: E402

DATASET, IPC = "fashion-mnist", 10
METHODS = ("fadrm", "fadrm+", "sre2l", "random-real")  # what same_bytes.sh builds
# The fields of an evaluation record that differ between two runs of the same build: when it ran, how
# long it took, and the command (which names each run's own build root).
RUN_FIELDS = ("seconds", "time", "command")


def differing_files(before: Path, after: Path) -> list[str]:
    """Relative paths under ``before`` or ``after`` that are missing from one or differ in bytes."""
    names = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    names |= {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    return sorted(str(n) for n in names if not ((before / n).is_file() and (after / n).is_file()
                                                  and filecmp.cmp(before / n, after / n, shallow=False)))


# Builds made before teacher files stopped recording their training time differ in that time and in
# every hash taken over a teacher file: the teachers' ids in soft labels and records (and a record's run
# id), the store's fingerprint and its shards' hashes. --timed-teachers compares all else: tensors and
# the other fields.
TEACHER_TIME = ("seconds",)
TEACHER_HASHED = ("fingerprint", "sha256", "teachers")


def _without(value, keys: tuple[str, ...]):
    """``value`` (JSON, with JSON held in strings parsed too) without ``keys`` at any depth."""
    if isinstance(value, str) and value[:1] in "[{":
        value = json.loads(value)
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def same_content(a: Path, b: Path, keys: tuple[str, ...]) -> bool:
    """A safetensors file's tensors and metadata, or a JSON file, equal but for ``keys``."""
    if a.suffix == ".json":
        return _without(json.loads(a.read_text()), keys) == _without(json.loads(b.read_text()), keys)
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = [load_file(str(path)) for path in (a, b)]
    metadata = []
    for path in (a, b):
        with safe_open(str(path), "pt") as file:
            metadata.append(_without(file.metadata() or {}, keys))
    return metadata[0] == metadata[1] and tensors[0].keys() == tensors[1].keys() and \
        all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


def differing_content(before: Path, after: Path, keys: tuple[str, ...]) -> list[str]:
    """Like differing_files, hidden files (receipts, locks: hashes of the rest) aside, comparing content
    but for ``keys``."""
    return [name for name in differing_files(before, after) if not name.startswith(".")
            and not ((before / name).is_file() and (after / name).is_file()
                     and same_content(before / name, after / name, keys))]


def evaluations(build: Path, ignored: tuple[str, ...]) -> list[dict]:
    """The build's evaluation records (read through the manifest's schema), without ``ignored`` fields."""
    records = BuildDirectory(build).read_manifest().get("evaluations") or []
    return [{k: v for k, v in record.items() if k not in ignored} for record in records]


def compare(before: Path, after: Path, ignored: tuple[str, ...] = RUN_FIELDS, timed_teachers: bool = False) -> bool:
    same = True
    if timed_teachers:
        ignored = (*ignored, "teachers", "run")  # the run id hashes the teachers' ids
    for method in METHODS:
        build, other = build_dir(before, DATASET, IPC, method), build_dir(after, DATASET, IPC, method)
        if not (build.is_dir() and other.is_dir()):
            print(f"{build.name}: MISSING from {'after' if build.is_dir() else 'before'}")
            same = False
            continue
        files = [f"{IMAGES}/{name}" for name in differing_files(build / IMAGES, other / IMAGES)]
        labels = differing_content(build / SOFT_LABELS, other / SOFT_LABELS, TEACHER_HASHED) if timed_teachers \
            else differing_files(build / SOFT_LABELS, other / SOFT_LABELS)
        files += [f"{SOFT_LABELS}/{name}" for name in labels]
        records, others = evaluations(build, ignored), evaluations(other, ignored)
        print(f"{build.name}: {len(files)} differing image/soft-label files{': ' + ', '.join(files[:5]) if files else ''}; "
              f"evaluation records {'equal' if records == others and records else 'DIFFER'} ({len(records)} and "
              f"{len(others)})")
        same = same and not files and records == others and bool(records)
    teachers = differing_content(teachers_dir(before, DATASET), teachers_dir(after, DATASET), TEACHER_TIME) \
        if timed_teachers else differing_files(teachers_dir(before, DATASET), teachers_dir(after, DATASET))
    print(f"teachers: {len(teachers)} differing files{': ' + ', '.join(teachers) if teachers else ''}")
    return same and not teachers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", default=",".join(RUN_FIELDS),
                        help="comma-separated evaluation-record fields left out of the comparison")
    parser.add_argument("--timed-teachers", action="store_true",
                        help="BEFORE's teachers record their training time: set it, and the hashes over it, aside")
    args = parser.parse_args()
    ignored = tuple(filter(None, args.ignore.split(",")))
    sys.exit(0 if compare(args.before, args.after, ignored, args.timed_teachers) else 1)


if __name__ == "__main__":
    main()
