"""The job folder and the files a job trusts in it: this user's own, or refused.

Why: the job folder holds what a job acts on as written. The Ray token lets whoever holds it
run code as the user; workers send that token to the address in ``head-address``; a later run
SIGKILLs the PIDs in ``ray-task*.pids``; and submitit executes the pickles beside them. So the
folder is created 0700 and a folder that others may write is refused, and each such file is
opened without following a symbolic link (``O_NOFOLLOW``) and read only when it is a regular
file of this user that nobody else may write (the token: that nobody else may read either).
Checked on the open file descriptor (``fstat``), so the file read is the file checked.

A refusal is one line naming the file and what is wrong with it: :class:`UnsafeFile` in a
job (its log and ``ctrain status`` show it), a ``SpecError`` on the login node (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from ctrain_dist.errors import SpecError

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
OTHERS_ANY = stat.S_IRWXG | stat.S_IRWXO


class UnsafeFile(RuntimeError):
    """A file or folder of the job folder that this user does not alone control."""


def _problem(status: os.stat_result, forbidden: int, kind: str) -> str | None:
    """What makes a file (or folder) with ``status`` untrustworthy, or None."""
    if kind == "file" and not stat.S_ISREG(status.st_mode):
        return "is not a regular file"
    if kind == "folder" and not stat.S_ISDIR(status.st_mode):
        return "is not a folder"
    if status.st_uid != os.geteuid():
        return f"is owned by uid {status.st_uid}, not by this user (uid {os.geteuid()})"
    mode = stat.S_IMODE(status.st_mode)
    if mode & forbidden:
        who = "read or written" if forbidden == OTHERS_ANY else "written"
        return f"has mode {mode:04o}: it may be {who} by other users"
    return None


def _open_own(path: Path, flags: int, forbidden: int) -> int:
    """A descriptor of ``path`` opened without following a link, once its owner and mode pass."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFile(f"refusing {path}: it is a symbolic link") from None
        raise
    problem = _problem(os.fstat(fd), forbidden, "file")
    if problem:
        os.close(fd)
        raise UnsafeFile(f"refusing {path}: it {problem}")
    return fd


def read_own(path: Path, *, secret: bool = False) -> str:
    """The text of ``path``, a regular file of this user that no one else may write (with
    ``secret``: nor read); :class:`UnsafeFile` otherwise, ``FileNotFoundError`` if missing."""
    fd = _open_own(path, os.O_RDONLY, OTHERS_ANY if secret else OTHERS_WRITE)
    with os.fdopen(fd) as handle:
        return handle.read()


def require_own_folder(folder: Path) -> None:
    """:class:`UnsafeFile` unless ``folder`` (links followed: a job folder may live on another
    file system) is a folder of this user that no one else may write."""
    problem = _problem(folder.stat(), OTHERS_WRITE, "folder")
    if problem:
        raise UnsafeFile(f"refusing the folder {folder}: it {problem}")


def make_private_folder(folder: Path) -> Path:
    """``folder`` and any missing parents, each created 0700 (whatever the umask); an
    existing ``folder`` must pass :func:`require_own_folder`."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another task of the job was first
            created.mkdir(mode=0o700)
            created.chmod(0o700)  # mkdir's mode is masked by the umask
    require_own_folder(folder)
    return folder


def ensure_secret(path: Path) -> Path:
    """``path`` holding a random token, created 0600 if missing; an existing one must be this
    user's own regular file, and is set back to 0600 if its mode drifted.

    Created in place with ``O_EXCL`` (which never follows a link), not through
    ``files.write_atomically``, whose temporary file would be readable by others until renamed.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fd = _open_own(path, os.O_RDONLY, OTHERS_WRITE)
        os.fchmod(fd, 0o600)
        os.close(fd)
        return path
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secrets.token_hex(32))
    return path


def as_spec_error(field: str, error: UnsafeFile) -> SpecError:
    """A refusal on the login node, as the ``SpecError`` (exit 2) naming ``field``."""
    return SpecError(field, f"{error}; use a folder of your own that only you can write")
