"""Two file-system primitives that several modules rely on for crash safety.

Why here, once: the cache, the store's compactor and the SLURM rendezvous all need a reader
to see a whole file or none, and a writer that dies to release its lock.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` under a unique temporary name, then rename it over ``path``.

    Readers never see a partial file; concurrent writers never share a temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    An ``flock`` dies with its process, so a killed holder never blocks the next one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
