"""From a spec's ``data`` and ``split`` sections to a :class:`TabularData`, once per process.

Trials that reuse a Ray actor (or run one after another in ``ctrain train``) share the loaded
tensors instead of parsing the files again.
"""

from __future__ import annotations

import functools

from ..spec import AdultDataSpec, SplitSpec
from .adult import load_adult
from .tabular import TabularData


@functools.lru_cache(maxsize=4)
def _load(data: AdultDataSpec, split: SplitSpec) -> TabularData:
    return load_adult(
        sensitive=data.sensitive,
        split_seed=split.seed,
        val_fraction=split.val,
        test_fraction=split.test,
        path=data.path,
        include_sensitive_feature=data.include_sensitive_feature,
    )


def load_data(data: AdultDataSpec, split: SplitSpec) -> TabularData:
    """The dataset a spec names, split as it says (cached: specs are frozen and hashable)."""
    return _load(data, split)
