"""File helpers shared by the library and the builders: atomic writes, hashing, safetensors metadata."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as JSON, written atomically. JSON has no NaN or infinity: such a float (a diverged loss,
    say) is written as null, so the file stays readable by strict parsers, the library's own included."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_of(settings) -> str:
    """sha256 of a JSON-able value's canonical form (keys sorted): the same settings, the same name."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# A build rewrites its manifest after every stage and a set is checked on every open; within one
# process, a file whose size, mtime and inode did not change since it was last hashed is not read again.
_HASHES: dict[tuple[str, int, int, int], str] = {}


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file this process writes or checks repeatedly: hashed in full the first time, and
    again only when its size, mtime or inode changes (nothing hashed by another process is trusted)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


# safetensors stores metadata in a hash map whose order changes from run to run; one JSON
# value under one key keeps a file's bytes reproducible.
SAFETENSORS_METADATA_KEY = "fadrm"


def safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    from safetensors.torch import save

    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    return save(tensors, metadata={SAFETENSORS_METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def read_safetensors_metadata(path: str | os.PathLike) -> dict:
    """The metadata written by :func:`safetensors_bytes` (empty for other files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[SAFETENSORS_METADATA_KEY]) if SAFETENSORS_METADATA_KEY in meta else {}


__all__ = ["SAFETENSORS_METADATA_KEY", "atomic_write_bytes", "atomic_write_json", "cached_sha256", "fingerprint_of",
           "read_safetensors_metadata", "safetensors_bytes", "sha256_file"]
