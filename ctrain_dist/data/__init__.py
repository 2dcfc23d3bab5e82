"""Datasets, each turned into one in-memory ``TabularData`` (see ``tabular.py``), or, for a
user's torch ``Dataset``, a ``StreamingData`` read per minibatch (``streaming.py``).

``load.load_data`` is the entry point from a spec; ``cache`` holds prepared datasets on disk;
``folktables``, ``table`` and ``adult`` read the sources; ``custom`` calls a user's
``data.factory``; ``synth`` writes synthetic ACS files.
"""

from ctrain_dist.data.adult import load_adult
from ctrain_dist.data.tabular import SPLITS, TabularData

__all__ = ["SPLITS", "TabularData", "load_adult"]
