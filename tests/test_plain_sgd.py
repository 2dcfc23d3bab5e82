"""``PlainSGD``: torch.optim.SGD's trajectory and state bit for bit, its hooks still honoured."""

from __future__ import annotations

import pytest
import torch

from ctrain_dist.algorithms.plain_sgd import PlainSGD


def _model(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    return list(layers.to(dtype).parameters())


def _train(optimizer_class: type, dtype: torch.dtype, **settings: float) -> tuple[list, dict]:
    """Twenty steps on fixed random gradients (one parameter without a gradient at step 3)."""
    params = _model(dtype)
    optimizer = optimizer_class(params, lr=0.05, **settings)
    generator = torch.Generator().manual_seed(1)
    for step in range(20):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
        if step == 3:
            params[1].grad = None
        optimizer.step()
    return [p.detach().clone() for p in params], optimizer.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "settings", [{}, {"momentum": 0.9}, {"weight_decay": 0.01}, {"maximize": True}]
)
def test_steps_and_state_equal_torch_sgd_bit_for_bit(dtype, settings):
    ours, our_state = _train(PlainSGD, dtype, **settings)
    theirs, their_state = _train(torch.optim.SGD, dtype, **settings)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert our_state["param_groups"] == their_state["param_groups"]
    assert our_state["state"].keys() == their_state["state"].keys()


def test_a_registered_step_hook_still_runs():
    params = _model(torch.float32)
    optimizer = PlainSGD(params, lr=0.1)
    calls = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *_: calls.append("post"))
    for p in params:
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in params]
    optimizer.step()
    assert calls == ["pre", "post"]
    assert all(torch.equal(p, b - 0.1) for p, b in zip(params, before, strict=True))


def test_only_the_plain_settings_take_the_fast_path():
    def fast(**settings: float) -> bool:
        params = _model(torch.float32)
        for p in params:
            p.grad = torch.ones_like(p)
        return PlainSGD(params, lr=0.1, **settings)._plain_lists() is not None

    assert fast()
    assert not fast(momentum=0.9)
    assert not fast(weight_decay=0.01)
