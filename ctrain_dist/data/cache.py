"""The preprocessing cache: a dataset is prepared once per node and memory-mapped by every trial.

Layout: ``<root>/<key>/`` holds ``features.npy`` (float32 ``[n, d]``), ``labels.npy`` (float32),
``groups.npy`` (int64), ``train.npy``/``val.npy``/``test.npy`` (sorted int64 row indices) and
``manifest.json`` (names, counts, sources, options, timings). ``root`` is ``$CTRAIN_CACHE``, else
``~/.cache/ctrain-dist``; on a cluster point it at node-local disk (one build per node) or at a
shared file system with working ``flock`` (one build per cluster).

**The key** is a hash of the inputs' *contents* and of every preprocessing option (task, states,
group attribute, split fractions and seed, feature typing, :data:`FORMAT_VERSION`). Content,
not path or modification time, decides the key: a copy of the same census files elsewhere hits
the same cache, and a file edited in place (even keeping its size and mtime, as ``cp -p`` or
``rsync -t`` would) gets a new key. Hashing a state file costs a full read (about 0.2 s per
100 MB), too much for every trial of a many-state study, so the digest is memoised under
``<root>/.digests`` by (path, inode, size, mtime, ctime): stat decides only whether to hash
again, never what the key is. The ctime is what makes the memo safe: any write or ``utime``
sets it to the current time and no tool can set it back, so an edit that restores size and
mtime still misses the memo and is hashed. Bump :data:`FORMAT_VERSION` when a change to the
preprocessing code changes its output for the same options.

**Concurrency.** An entry is built in ``<root>/.tmp-<key>-<host>-<pid>-<random>/`` and renamed to
``<root>/<key>/`` when complete (a directory rename is atomic on POSIX file systems), so a
reader sees either no entry or a whole one. Builders of one key serialise on an exclusive
``flock`` of ``<root>/.locks/<key>.lock``: trials that start together on a node build once,
the others wait and then map the finished entry. Without working locks (some network file
systems) two builders may both build, but the second rename fails, the loser discards its copy
and uses the winner's: still one valid entry. A temporary folder left by a crashed builder is
removed by the next builder of that key on the same host once its process is gone.

**Loading** maps the arrays (``np.load(mmap_mode="c")``) and wraps them with
``torch.from_numpy``: no copy is made, the pages are shared with every other trial on the node
through the page cache, and load time does not grow with the matrix. Copy-on-write mode
(``"c"``) rather than read-only (``"r"``) because torch warns on read-only arrays and an
accidental in-place write must not crash the trial: it lands in private pages, never the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.files import exclusive_lock, write_atomically

CACHE_ENV = "CTRAIN_CACHE"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAYS = ("features", "labels", "groups", *SPLITS)
_HASH_CHUNK = 1 << 22
_HOST = socket.gethostname().replace("-", "_")


def cache_root(override: Path | str | None = None) -> Path:
    """The cache folder: ``override``, else ``$CTRAIN_CACHE``, else ``~/.cache/ctrain-dist``."""
    if override is not None:
        return Path(override)
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ctrain-dist"


@dataclass(frozen=True)
class Prepared:
    """A preprocessed dataset as numpy arrays, what a builder hands to :func:`ensure`.

    Invariants as :class:`TabularData`'s: ``features`` float32 ``[n, d]``, ``labels`` float32
    ``[n]`` in {0, 1}, ``groups`` int64 ``[n]`` in ``0..len(group_names)-1``, ``splits`` sorted,
    disjoint and covering ``0..n-1``.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    splits: dict[str, np.ndarray]
    feature_names: tuple[str, ...]
    group_names: tuple[str, ...]
    synthetic: bool = False


@dataclass(frozen=True)
class CacheEntry:
    """One finished entry: its key, folder and manifest; ``built`` if this call built it."""

    key: str
    path: Path
    manifest: dict[str, Any]
    built: bool
    seconds: float

    def size_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.path.iterdir())


def file_digest(path: Path, root: Path | None = None) -> str:
    """SHA-256 of a file's bytes, memoised under ``<root>/.digests`` by its stat identity."""
    path = Path(path).resolve()
    stat = path.stat()
    identity = f"{path}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}"
    memo = cache_root(root) / ".digests" / f"{hashlib.sha256(identity.encode()).hexdigest()}.json"
    if memo.is_file():
        return json.loads(memo.read_text())["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    record = {"path": str(path), "size": stat.st_size, "sha256": digest.hexdigest()}
    write_atomically(memo, json.dumps(record))
    return record["sha256"]


def cache_key(inputs: Sequence[Path], options: Mapping[str, Any], root: Path | None = None) -> str:
    """The entry key: a hash of the inputs' contents (in order) and of ``options`` (JSON)."""
    payload = {
        "format": FORMAT_VERSION,
        "inputs": [file_digest(path, root) for path in inputs],
        "options": options,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def ensure(
    key: str,
    build: Callable[[], Prepared],
    source: Mapping[str, Any],
    root: Path | None = None,
) -> CacheEntry:
    """The entry ``key``, built by ``build()`` unless it already exists (see module docstring).

    Args:
        key: from :func:`cache_key`.
        build: makes the arrays; called at most once per key per lock holder.
        source: what the entry was made from (inputs, options), recorded in the manifest.
        root: cache folder (default :func:`cache_root`).
    """
    started = time.perf_counter()
    root = cache_root(root)
    final = root / key
    if (final / MANIFEST).is_file():
        return _entry(final, built=False, started=started)
    with exclusive_lock(root / ".locks" / f"{key}.lock"):
        if (final / MANIFEST).is_file():
            return _entry(final, built=False, started=started)
        _remove_abandoned(root, key)
        temporary = root / f".tmp-{key}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir(parents=True)
        try:
            prepared = build()
            _write_entry(temporary, key, prepared, source, time.perf_counter() - started)
            try:
                temporary.rename(final)
            except OSError:
                if not (final / MANIFEST).is_file():
                    raise
                shutil.rmtree(temporary, ignore_errors=True)
                return _entry(final, built=False, started=started)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    return _entry(final, built=True, started=started)


def open_tabular(path: Path) -> TabularData:
    """An entry as :class:`TabularData` whose tensors are memory maps of the entry's files."""
    manifest = json.loads((Path(path) / MANIFEST).read_text())
    arrays = {name: np.load(Path(path) / f"{name}.npy", mmap_mode="c") for name in _ARRAYS}
    return TabularData(
        name=manifest["name"],
        features=torch.from_numpy(arrays["features"]),
        labels=torch.from_numpy(arrays["labels"]),
        groups=torch.from_numpy(arrays["groups"]),
        feature_names=tuple(manifest["feature_names"]),
        group_names=tuple(manifest["group_names"]),
        splits={name: torch.from_numpy(arrays[name]) for name in SPLITS},
    )


def list_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every finished entry under ``root``, oldest first (temporary folders are not entries)."""
    root = cache_root(root)
    if not root.is_dir():
        return []
    entries = [
        _entry(child, built=False, started=time.perf_counter())
        for child in root.iterdir()
        if not child.name.startswith(".") and (child / MANIFEST).is_file()
    ]
    return sorted(entries, key=lambda entry: entry.manifest["created"])


def _entry(path: Path, built: bool, started: float) -> CacheEntry:
    manifest = json.loads((path / MANIFEST).read_text())
    return CacheEntry(manifest["key"], path, manifest, built, time.perf_counter() - started)


def _remove_abandoned(root: Path, key: str) -> None:
    """Delete this key's temporary folders whose builder ran on this host and has exited."""
    prefix = f".tmp-{key}-{_HOST}-"
    for folder in root.glob(f"{prefix}*"):
        pid = folder.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_entry(
    folder: Path, key: str, prepared: Prepared, source: Mapping[str, Any], seconds: float
) -> None:
    """Every array, then the manifest (the manifest last: an entry without one is unfinished)."""
    arrays = {
        "features": np.ascontiguousarray(prepared.features, dtype=np.float32),
        "labels": np.ascontiguousarray(prepared.labels, dtype=np.float32),
        "groups": np.ascontiguousarray(prepared.groups, dtype=np.int64),
        **{name: np.ascontiguousarray(prepared.splits[name], dtype=np.int64) for name in SPLITS},
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    groups, labels = arrays["groups"], arrays["labels"]
    manifest = {
        "key": key,
        "format": FORMAT_VERSION,
        "name": prepared.name,
        "synthetic": prepared.synthetic,
        "rows": len(labels),
        "num_features": int(arrays["features"].shape[1]),
        "feature_names": list(prepared.feature_names),
        "group_names": list(prepared.group_names),
        "group_rows": np.bincount(groups, minlength=len(prepared.group_names)).tolist(),
        "positive_rate": float(labels.mean()) if len(labels) else None,
        "split_rows": {name: len(arrays[name]) for name in SPLITS},
        "source": dict(source),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
        "versions": {name: _version(name) for name in ("ctrain-dist", "folktables", "numpy")},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
