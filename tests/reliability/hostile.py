"""A hostile publisher and a bounded victim, for the tests of what a downloaded set may do to its user.

``publish_tiny`` pushes a real tiny build to the loopback Hub. ``republish`` then changes files of the
release as whoever controls the repo could: new bytes for some files (the release manifest's sha256 and
size updated to match, unless told otherwise), or a new manifest altogether, in one commit the tag is
moved to. ``open_bounded`` opens the set in a process of its own under an address-space limit and a time
limit, so an unbounded allocation shows as a failure of the test, not as a slow machine; ``within`` stops
a call in this process that blocks (on a FIFO, say) instead of letting the test hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

from fadrm_datasets import layout
from tests.fakebuild import make_build
from tests.reliability.conftest import REPO

VERSION = "v1.0.0"
PARQUET = layout.parquet_shard(10, 0, 1)
SOFT_INDEX = f"{layout.repo_soft_labels(10)}/{layout.SOFT_LABEL_INDEX}"
SHARD = f"{layout.repo_soft_labels(10)}/{layout.shard_name(0, 1)}"


def publish_tiny(hub, tmp_path: Path, stem: str, soft_labels: bool = True) -> str:
    from builders.publish import push

    repo = hub.repo_id(stem)
    build = make_build(tmp_path / stem / layout.build_dir_name(10), seed=3, soft_labels=soft_labels, teacher=False)
    push(build, repo, VERSION)
    return repo


def released(repo: str, path: str) -> bytes:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, path, repo_type="dataset", revision=VERSION)).read_bytes()


def republish(repo: str, files: dict[str, bytes], tmp_path: Path, manifest: Callable[[dict], dict] | None = None,
              raw_manifest: bytes | None = None, keep_sizes: bool = False) -> None:
    """Replace ``files`` of the release and move its tag: the manifest's hashes (and sizes, unless
    ``keep_sizes``) follow the new bytes, then ``manifest`` may edit it; ``raw_manifest`` replaces it whole."""
    from huggingface_hub import CommitOperationAdd, HfApi

    current = json.loads(released(repo, layout.MANIFEST))
    for path, data in files.items():
        current["files"][path] = hashlib.sha256(data).hexdigest()
        if not keep_sizes and "sizes" in current:  # releases made before sizes were recorded have none
            current["sizes"][path] = len(data)
    if manifest is not None:
        current = manifest(current)
    text = raw_manifest if raw_manifest is not None else json.dumps(current).encode()
    operations = [CommitOperationAdd(path, data) for path, data in {**files, layout.MANIFEST: text}.items()]
    api = HfApi()
    commit = api.create_commit(repo, operations, commit_message="hostile", repo_type="dataset").oid
    api.delete_tag(repo, tag=VERSION, repo_type="dataset")
    api.create_tag(repo, tag=VERSION, revision=commit, repo_type="dataset")


def parquet_with(repo: str, change) -> bytes:
    """The release's parquet shard with ``change(rows)`` applied to its rows (dicts), schema kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(released(repo, PARQUET)))
    rows = table.to_pylist()
    change(rows)
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    return out.getvalue()


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format="PNG")  # one colour: a few KB for millions of pixels
    return out.getvalue()


def shard_with(repo: str, change) -> bytes:
    """The release's soft-label shard with ``change(tensors)`` applied, metadata kept."""
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open
    from safetensors.torch import save

    path = hf_hub_download(repo, SHARD, repo_type="dataset", revision=VERSION)
    with safe_open(path, framework="pt") as shard:
        tensors = {name: shard.get_tensor(name) for name in shard.keys()}
        metadata = shard.metadata()
    change(tensors)
    return save(tensors, metadata=metadata)


# Run in the child: imports first (their address space is the baseline), then the limit, then the call.
_CHILD = """
import resource, sys, time
import huggingface_hub, pyarrow, pyarrow.parquet, safetensors.torch, PIL.Image
pyarrow.set_cpu_count(1)  # thread pools reserve address space per thread: the limit is for the call alone
pyarrow.set_io_thread_count(1)
from fadrm_datasets.sets import FADRMDataset
from fadrm_datasets.hub import fetch
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + {budget}, size + {budget}))
start = time.perf_counter()
try:
{call}
    outcome = "OK"
except BaseException as error:
    outcome = type(error).__name__ + ": " + (str(error).splitlines() or [""])[0]
print(round(time.perf_counter() - start, 2), outcome, flush=True)
"""


class Hung(BaseException):
    """Raised by ``within`` into the blocked call: a BaseException, so no ``except OSError`` swallows it."""


@contextlib.contextmanager
def within(seconds: float):
    """Interrupt the block (in the main thread) if it runs longer than ``seconds``."""
    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_bounded(call: str, memory_mb: int = 512, seconds: int = 60) -> tuple[float, str]:
    """(seconds taken, "OK" or "ErrorType: first line") of ``call`` (statements, with ``FADRMDataset``
    imported) in a process whose address space may grow ``memory_mb`` past its imports'."""
    code = _CHILD.format(budget=memory_mb << 20, call=textwrap.indent(textwrap.dedent(call).strip(), "    "))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"})
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    took, outcome = lines[-1].split(" ", 1)
    return float(took), outcome


def open_bounded(root: Path, repo: str, soft_labels: bool = True, then: str = "", **limits) -> tuple[float, str]:
    """Open the release as a user would (``then``: statements run on the opened ``data``)."""
    call = (f"data = FADRMDataset({str(root)!r}, repo_id={repo!r}, ipc=10, version={VERSION!r}, download=True, "
            f"soft_labels={soft_labels})\n{textwrap.dedent(then)}")
    return run_bounded(call, **limits)


def open_here(root: Path, repo: str, soft_labels: bool = True, then: Callable | None = None) -> str:
    """``open_bounded``'s outcome, in this process: for faults that allocate nothing unusual."""
    from fadrm_datasets.sets import FADRMDataset

    try:
        data = FADRMDataset(root, repo_id=repo, ipc=10, version=VERSION, download=True, soft_labels=soft_labels)
        if then is not None:
            then(data)
    except Exception as error:
        return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    return "OK"
