"""One check shared by the packed-seed tests: a pack's state holds each seed's state alone.

Why a module: ``test_packed`` (the built-in MLP) and ``test_packed_factory`` (a user's model
under ``torch.func``) compare the same nested state dicts the same way; ``tests/`` is on
``sys.path``, as for ``list_sink``.
"""

from __future__ import annotations

from typing import Any

import torch

TIGHT = 1e-10
"""Batched and plain kernels sum in different orders: equal to rounding after 100 float64 steps."""


def assert_slice_close(alone: Any, packed: Any, seed: int, where: str) -> None:
    """``packed`` holds ``alone`` for ``seed``: tensors gain a leading seed dimension; floating
    tensors agree to ``TIGHT``, integer and boolean ones exactly, anything else by ``==``."""
    if isinstance(alone, torch.Tensor):
        if packed.ndim == alone.ndim + 1:
            packed = packed[seed]
        if alone.dtype.is_floating_point:
            torch.testing.assert_close(packed, alone, rtol=0, atol=TIGHT, msg=where)
        else:
            assert torch.equal(packed, alone), where
    elif isinstance(alone, dict):
        assert alone.keys() == packed.keys(), where
        for key in alone:
            assert_slice_close(alone[key], packed[key], seed, f"{where}.{key}")
    elif isinstance(alone, list | tuple):
        assert len(alone) == len(packed), where
        for i, (a, p) in enumerate(zip(alone, packed, strict=True)):
            assert_slice_close(a, p, seed, f"{where}[{i}]")
    else:
        assert alone == packed, where
