"""Datasets, each turned into one in-memory ``TabularData`` (see ``tabular.py``)."""

from ctrain_dist.data.adult import load_adult
from ctrain_dist.data.tabular import SPLITS, TabularData

__all__ = ["SPLITS", "TabularData", "load_adult"]
