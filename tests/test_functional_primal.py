"""The functional stand-in of a torch optimiser steps as torch does, on torch's own state.

Eager, float64: the compiled steps that use it are checked against eager in
``test_compiled.py``; here each optimiser ``primal.optimizer_for`` makes is compared with
torch's over steps whose gradients change, and its state is shown to be torch's.
"""

from __future__ import annotations

import pytest
import torch

from ctrain_dist.algorithms.functional_primal import FunctionalOptimizer, functional_optimizer

OPTIMISERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "sgd_decay": lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
}


def _params() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (3,)]
    return [
        torch.nn.Parameter(torch.randn(s, generator=generator, dtype=torch.float64)) for s in shapes
    ]


def _gradients(params: list[torch.nn.Parameter], step: int) -> None:
    for index, p in enumerate(params):
        p.grad = torch.tanh(p.detach()) + 0.1 * step - index


@pytest.mark.parametrize("kind", list(OPTIMISERS))
def test_the_stand_in_steps_as_torch_does_on_torchs_state(kind):
    reference, stood_in = _params(), _params()
    torch_optimizer, wrapped = OPTIMISERS[kind](reference), OPTIMISERS[kind](stood_in)
    _gradients(reference, 0)
    _gradients(stood_in, 0)
    torch_optimizer.step()
    wrapped.step()  # torch builds its state lazily: the stand-in needs it
    functional = functional_optimizer(wrapped)
    assert isinstance(functional, FunctionalOptimizer)
    for step in range(1, 30):
        _gradients(reference, step)
        _gradients(stood_in, step)
        torch_optimizer.step()
        functional.step()
    for expected, actual in zip(reference, stood_in, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)
    saved, ours = torch_optimizer.state_dict(), functional.state_dict()
    assert saved["param_groups"] == ours["param_groups"]
    for index, state in saved["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(ours["state"][index][name], value, rtol=1e-12, atol=1e-14)


def test_a_loaded_state_is_the_one_the_stand_in_steps_on():
    params = _params()
    optimizer = torch.optim.Adam(params, lr=0.01)
    _gradients(params, 0)
    optimizer.step()
    functional = functional_optimizer(optimizer)
    saved = {key: value for key, value in optimizer.state_dict().items()}
    saved["state"] = {
        index: {name: value.clone() + 1 for name, value in state.items()}
        for index, state in saved["state"].items()
    }
    functional.load_state_dict(saved)
    functional.step()
    assert float(optimizer.state[params[0]]["step"]) == 3.0  # loaded 2, stepped once


@pytest.mark.parametrize(
    "build",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01),
    ],
)
def test_settings_it_does_not_write_keep_the_torch_optimiser(build):
    params = _params()
    optimizer = build(params)
    _gradients(params, 0)
    optimizer.step()
    assert functional_optimizer(optimizer) is None


def test_an_optimiser_that_has_not_built_its_state_keeps_it():
    assert functional_optimizer(torch.optim.Adam(_params(), lr=0.01)) is None
