"""Bitwise equality of nested state (tensors, dicts, lists): what "resumes exactly" means."""

from __future__ import annotations

from typing import Any

import torch


def assert_bitwise_equal(a: Any, b: Any, where: str = "state") -> None:
    """``a`` and ``b`` hold the same structure, dtypes and values bit for bit; ``where`` names
    the first place they differ."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
