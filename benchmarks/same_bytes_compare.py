"""Compare two runs of ``benchmarks/same_bytes.sh`` (before and after a change that must not change
what a build makes): for every method's build, the images and soft labels byte for byte, every
teacher's weights, and the evaluation records without the fields that tell runs apart (RUN_FIELDS).

    python benchmarks/same_bytes_compare.py BEFORE_ROOT AFTER_ROOT

Prints one line per build and exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
from pathlib import Path

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


def evaluations(build: Path, ignored: tuple[str, ...]) -> list[dict]:
    """The build's evaluation records (read through the manifest's schema), without ``ignored`` fields."""
    records = BuildDirectory(build).read_manifest().get("evaluations") or []
    return [{k: v for k, v in record.items() if k not in ignored} for record in records]


def compare(before: Path, after: Path, ignored: tuple[str, ...] = RUN_FIELDS) -> bool:
    same = True
    for method in METHODS:
        build, other = build_dir(before, DATASET, IPC, method), build_dir(after, DATASET, IPC, method)
        if not (build.is_dir() and other.is_dir()):
            print(f"{build.name}: MISSING from {'after' if build.is_dir() else 'before'}")
            same = False
            continue
        files = [f"{part}/{name}" for part in (IMAGES, SOFT_LABELS)
                 for name in differing_files(build / part, other / part)]
        records, others = evaluations(build, ignored), evaluations(other, ignored)
        print(f"{build.name}: {len(files)} differing image/soft-label files{': ' + ', '.join(files[:5]) if files else ''}; "
              f"evaluation records {'equal' if records == others and records else 'DIFFER'} ({len(records)} and "
              f"{len(others)})")
        same = same and not files and records == others and bool(records)
    teachers = differing_files(teachers_dir(before, DATASET), teachers_dir(after, DATASET))
    print(f"teachers: {len(teachers)} differing files{': ' + ', '.join(teachers) if teachers else ''}")
    return same and not teachers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", default=",".join(RUN_FIELDS),
                        help="comma-separated evaluation-record fields left out of the comparison")
    args = parser.parse_args()
    sys.exit(0 if compare(args.before, args.after, tuple(filter(None, args.ignore.split(",")))) else 1)


if __name__ == "__main__":
    main()
