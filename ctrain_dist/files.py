"""The file-system primitives that several modules rely on for crash safety.

Why here, once: trainer checkpoints, the store's part files and compaction epochs, the
preprocessing cache and the SLURM rendezvous all need a reader to see a whole file or none,
durably, and a writer that dies to release its lock; a sweep driver needs to learn, without
waiting, that another one holds its store (and which one).
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

Content = bytes | str | Callable[[BinaryIO], None]
"""What :func:`write_atomically` writes: bytes, UTF-8 text, or a function that writes to a
binary file (``pyarrow.parquet.write_table``, ``torch.save``) so large content is streamed."""


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable on POSIX; a no-op where folders can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, content: Content) -> Path:
    """Write ``content`` to ``path`` so that readers see the old file, or the new one whole.

    The content goes to a unique dot-prefixed temporary beside ``path`` (so concurrent writers
    never share one and listings that skip dotfiles never see it), is fsynced, renamed over
    ``path``, and the folder is fsynced, so the rename survives a crash. A writer that raises
    leaves no temporary behind. Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


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


class LockHeld(RuntimeError):
    """Another process holds the lock; ``holder`` is what it wrote: its host and PID."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'a process that wrote no name'}")
        self.path = path
        self.holder = holder


@contextmanager
def held_or_refused(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block, or raise :class:`LockHeld` now.

    The holder writes ``host <name> pid <pid>`` into the file, so the process refused can say
    who holds it. Like :func:`exclusive_lock`, the lock dies with its holder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(path, handle.read().strip()) from None
        try:
            handle.truncate(0)
            handle.write(f"host {socket.gethostname()} pid {os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
