"""From a spec's ``data`` and ``split`` sections to a :class:`TabularData`, once per process.

Folktables and user tables go through the preprocessing cache (``cache.py``): the first trial
on a node builds the entry, every later one maps it; trials that reuse a Ray actor (or run one
after another in ``ctrain train``) share the mapped tensors outright. The embedded Adult data
loads in about a second from files inside the package and is not cached.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ctrain_dist.data import folktables, table
from ctrain_dist.data.adult import load_adult
from ctrain_dist.data.cache import CacheEntry, cache_key, ensure, open_tabular
from ctrain_dist.data.config import (
    AdultDataSpec,
    CustomDataSpec,
    FolktablesDataSpec,
    SplitSpec,
    TableDataSpec,
)
from ctrain_dist.data.custom import load_custom
from ctrain_dist.data.streaming import StreamingData
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.errors import SpecError

CachedDataSpec = FolktablesDataSpec | TableDataSpec


@functools.lru_cache(maxsize=4)
def _load(data: AdultDataSpec | CachedDataSpec, split: SplitSpec) -> TabularData:
    if isinstance(data, AdultDataSpec):
        return load_adult(
            sensitive=data.sensitive,
            split_seed=split.seed,
            val_fraction=split.val,
            test_fraction=split.test,
            path=data.path,
            include_sensitive_feature=data.include_sensitive_feature,
        )
    return open_tabular(prepare_data(data, split).path)


def load_data(
    data: AdultDataSpec | CachedDataSpec | CustomDataSpec, split: SplitSpec
) -> TabularData | StreamingData:
    """The dataset a spec names, split as it says (cached: specs are frozen and hashable).

    A user's ``data.factory`` gives a ``TabularData`` or, for a torch ``Dataset``, a
    ``StreamingData`` (``custom.py``), never cached on disk: it is the user's code.
    """
    if isinstance(data, CustomDataSpec):
        return load_custom(data, split)
    return _load(data, split)


def prepare_data(
    data: AdultDataSpec | CachedDataSpec, split: SplitSpec, cache_dir: Path | None = None
) -> CacheEntry:
    """The cache entry of a dataset, built now unless it exists (see ``cache.ensure``).

    Raises:
        SpecError: for the embedded Adult data (nothing to prepare) or a data problem found
            while building (a single group, a group empty in some split, ...).
    """
    if isinstance(data, FolktablesDataSpec):
        inputs, options = folktables.cache_request(data, split)
        build = functools.partial(folktables.build_folktables, data, split)
    elif isinstance(data, TableDataSpec):
        inputs, options = table.cache_request(data, split)
        build = functools.partial(table.build_table, data, split)
    elif isinstance(data, CustomDataSpec):
        raise SpecError("data.dataset", "custom data comes from your code and is not cached")
    else:
        raise SpecError(
            "data.dataset", "the embedded adult data loads in a second and is not cached"
        )
    key = cache_key(inputs, options, cache_dir)
    source = {"inputs": [str(path) for path in inputs], "options": options}
    return ensure(key, build, source, cache_dir)


def check_data(data: AdultDataSpec | CachedDataSpec, split: SplitSpec) -> None:
    """The data problems found cheaply before any job: for tables, target values and groups.

    Folktables specs are checked for files at validation; their group checks need the whole
    task read and happen when the cache entry is built (``ctrain data prepare`` shows them).
    """
    if isinstance(data, TableDataSpec):
        table.check_table(data, split)
    if isinstance(data, CustomDataSpec):
        load_custom(data, split)  # the factory's result, checked; kept for the trials here
