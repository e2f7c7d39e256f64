"""What the library's integrity check costs: every file of a set hashed in full on a process's first open.

Measures, in one run: sha256 over a warm file of ``--mb`` MiB (the throughput every estimate uses), and
the first and the second ``verify_files`` of a real build directory's images and soft labels (the same
function checks downloaded sets). ImageNet-1K at IPC 50 is then estimated from its bytes: 50,000 PNGs of
``--png-kb`` KiB and the top-100 soft-label store of 300 epochs (the storage benchmark's layout).

    python benchmarks/verify_cost.py build/fashion-mnist/ipc10
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import append_record  # noqa: E402
from builders.relabel import RelabelConfig, store_bytes  # noqa: E402
from fadrm_datasets import hub  # noqa: E402
from fadrm_datasets._io import sha256_file  # noqa: E402
from fadrm_datasets.layout import IMAGES, SOFT_LABELS, BuildDirectory  # noqa: E402


def hash_throughput(megabytes: int) -> float:
    """Bytes per second of sha256 over a file in the page cache."""
    with tempfile.NamedTemporaryFile(dir=ROOT / "build", delete=False) as f:
        f.write(os.urandom(megabytes << 20))
        path = Path(f.name)
    try:
        sha256_file(path)  # warm the page cache
        start = time.perf_counter()
        sha256_file(path)
        return (megabytes << 20) / (time.perf_counter() - start)
    finally:
        path.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", help="a finished build directory (images and soft labels)")
    parser.add_argument("--mb", type=int, default=512, help="MiB hashed to measure the throughput")
    parser.add_argument("--png-kb", type=float, default=110.0,
                        help="assumed mean size of one 224 px ImageNet PNG, KiB")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "verify.json"))
    args = parser.parse_args(argv)
    (ROOT / "build").mkdir(exist_ok=True)

    build = BuildDirectory(args.build)
    files = {rel: sha for rel, sha in build.read_manifest()["files"].items()
             if rel.startswith((IMAGES + "/", SOFT_LABELS + "/"))}
    total = sum((build.root / rel).stat().st_size for rel in files)
    start = time.perf_counter()
    assert not hub.verify_files(build.root, files)
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert not hub.verify_files(build.root, files)
    again = time.perf_counter() - start

    throughput = hash_throughput(args.mb)
    images = 50 * 1000
    soft = store_bytes(images, 1000, RelabelConfig(epochs=300, batch_size=16, crop_scale=(0.08, 1.0), topk=100))
    png = images * args.png_kb * 1024
    record = {
        "what": "verify", "build": str(build.root.name), "files": len(files), "bytes": total,
        "first_open_s": round(first, 4), "later_open_s": round(again, 4),
        "sha256_bytes_per_s": round(throughput), "imagenet_ipc50_bytes": int(png + soft),
        "imagenet_ipc50_first_open_s_estimated": round((png + soft) / throughput, 1),
        "assumed_png_kb": args.png_kb, "command": "python benchmarks/verify_cost.py " + " ".join(sys.argv[1:]),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    append_record(Path(args.output), record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
