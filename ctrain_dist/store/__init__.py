"""The central analysis store: Parquet tables of trial attempts and evaluation points.

One module per job, in the order data flows through them:

* :mod:`~ctrain_dist.store.schema`: every column's name, type, unit and meaning; the docs
  (``docs/store-schema.md``, ``ctrain store schema``) are generated from it.
* :mod:`~ctrain_dist.store.layout`: where files live, which names readers see.
* :mod:`~ctrain_dist.store.write`: :class:`StoreWriter`, one new file per flush, never a lock.
* :mod:`~ctrain_dist.store.sink`: :class:`StoreSink`, the trainer's buffered writer.
* :mod:`~ctrain_dist.store.read`: :func:`open` and :class:`Store`, each trial's chosen attempt,
  exact while a compaction runs.
* :mod:`~ctrain_dist.store.compact`: :func:`compact`, fewer files, the same rows.

Each module's docstring states the invariants it keeps. What users and the rest of the package
use is re-exported here; modules inside ``store`` import their siblings directly, never this
package, so importing it can never run in a circle.
"""

from __future__ import annotations

from ctrain_dist.store.compact import STALE_TEMPORARY_SECONDS, Compaction, compact
from ctrain_dist.store.read import (
    Loss,
    Part,
    Snapshot,
    Store,
    StoreBusyError,
    StoreWarning,
    keep_latest_attempts,
    open,
)
from ctrain_dist.store.schema import (
    EVALS,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    TERMINAL_STATUSES,
    TRIALS,
    Column,
    TableSchema,
    schema_markdown,
    undeclared_columns,
)
from ctrain_dist.store.sink import StoreSink
from ctrain_dist.store.write import StoreWriter

__all__ = [
    "EVALS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STALE_TEMPORARY_SECONDS",
    "TABLES",
    "TERMINAL_STATUSES",
    "TRIALS",
    "Column",
    "Compaction",
    "Loss",
    "Part",
    "Snapshot",
    "Store",
    "StoreBusyError",
    "StoreSink",
    "StoreWarning",
    "StoreWriter",
    "TableSchema",
    "compact",
    "keep_latest_attempts",
    "open",
    "schema_markdown",
    "undeclared_columns",
]
