"""SHA-256 of an item read as a stream, with a limit past which it is not hashed at all."""

from __future__ import annotations

import hashlib

MAX_HASHED_BYTES = 1_000_000_000  # as ``reading.items.MAX_FILE_BYTES``: an item larger than this is never labelled


def stream_sha256(fh, limit: int | None = None) -> str | None:
    """sha256 of what is left in ``fh``; None, having read no more than ``limit`` bytes, when there is more."""
    digest, total = hashlib.sha256(), 0
    for block in iter(lambda: fh.read(1 << 20), b""):
        total += len(block)
        if limit is not None and total > limit:
            return None
        digest.update(block)
    return digest.hexdigest()
