"""Seeds derived from the run seed and a unit's identity, independent of scheduling order."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed from the run seed and any identifying parts (stage name, ids)."""
    text = "/".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


__all__ = ["derive_seed"]
