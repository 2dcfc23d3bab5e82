r"""The dual variable: Lagrange multipliers, their ascent step and their projection.

One object for what every primal-dual method keeps (Cooper's ``Multiplier``, smaller): the
tensor :math:`\lambda`, the set :math:`\mathcal{D}` it lives in, the step that moves it and the
state that resumes it. The algorithms differ in the direction they feed it, never in how it
is stored, projected or checkpointed.

The set is a box, :math:`\mathcal{D} = \{\lambda : l \le \lambda_i \le u\}`:

* :math:`l = 0, u = \infty`: the nonnegative orthant, the multipliers of inequality
  constraints :math:`c(x) \le 0`;
* :math:`l = 0, u = \Lambda`: the orthant cut at a bound, which keeps the multipliers bounded
  as SSL-ALM's analysis assumes (``dual_bound`` of ALM, SSL-ALM and νPI);
* :math:`0 < l \le u`: PBM's multipliers, which must stay positive;
* :math:`l_i = -\infty`: the free-sign multiplier of an equality constraint :math:`h_i(x) = 0`
  (``equality``), bounded by :math:`\pm u` when a bound is given.

The lower bound is then per value (a tensor over the last dimension): :math:`l_i = -u` or
:math:`-\infty` for equalities, the scalar :math:`l` for the inequalities. The upper bound may
be per value too, :math:`u_i` (a constraint's own ``dual_bound`` in the spec), and the box
stays separable.

A box is separable, so the Euclidean projection is the elementwise clamp,
:math:`\Pi_{\mathcal{D}}(v)_i = \min(u, \max(l, v_i))`. Two ways to move:

.. math::
    \text{ascend:}\quad \lambda \leftarrow \Pi_{\mathcal{D}}(\lambda + \eta\, d), \qquad
    \text{update:}\quad \lambda \leftarrow \Pi_{\mathcal{D}}(v).

With :math:`d = c(x)`, the gradient of the Lagrangian :math:`f + \lambda^\top c` in
:math:`\lambda`, ``ascend`` is projected gradient ascent (ALM, SSL-ALM); νPI feeds its
controller's output as :math:`d`; PBM computes the new value :math:`v = u \odot
\varphi'(\bar c / p)` itself and hands it to ``update``.

Invariants: the value lies in :math:`\mathcal{D}` from the start (the initial value is checked)
and after every write (each one projects); it is never part of an autograd graph (inputs are
detached); it is a tensor on the parameters' device and dtype of shape ``(*batch_shape, m)``,
one row per packed seed (``base``), which every operation broadcasts over. Nothing is read on
the host. The arithmetic is ``λ + η·d`` then a clamp; with a number η the sum is one
``torch.add(λ, d, alpha=η)``, which a CPU may fuse into one rounding (a multiply-add).

``state_dict`` holds the value only: the bounds are hyperparameters, and the algorithm that
owns the multiplier rebuilds them from its configuration before loading.
"""

from __future__ import annotations

import math

import torch


class Multiplier:
    r"""Multipliers :math:`\lambda \in [l, u]` of shape ``shape``, filled with ``init``
    (which must lie in the box); the maths is in the module docstring."""

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        device: torch.device,
        dtype: torch.dtype,
        init: float = 0.0,
        lower: float = 0.0,
        upper: float | torch.Tensor | None = None,
        equality: torch.Tensor | None = None,
    ) -> None:
        """``upper``: a number, or one per value (``[m]``); ``equality``: the ``[m]`` mask of
        equality values, or None when there are none."""
        highest = math.inf if upper is None else upper
        lowest = highest if isinstance(highest, float | int) else float(highest.min())
        if not lower <= init <= lowest:
            raise ValueError(f"initial multiplier {init} is outside [{lower}, {upper}]")
        self.lower: float | torch.Tensor = lower
        self.upper: float | torch.Tensor | None = upper
        self.equality = equality
        """``[m]`` bool, which values are equalities; None when none are (the fast path)."""
        per_value = isinstance(upper, torch.Tensor)
        if self.equality is not None or per_value:
            # clamp takes two tensors or two numbers
            bound = torch.full(shape[-1:], math.inf) if upper is None else upper
            bound = torch.as_tensor(bound, dtype=dtype).to(device).expand(shape[-1:])
            free = torch.full_like(bound, lower)
            if self.equality is not None:
                free = torch.where(self.equality, -bound, free)
            self.lower = free
            self.upper = None if upper is None else bound
        self.value = torch.full(shape, init, device=device, dtype=dtype)

    def project(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`\Pi_{\mathcal{D}}(v)`: ``value`` clamped into the box, elementwise."""
        return value.clamp(self.lower, self.upper)

    def cone(self, value: torch.Tensor) -> torch.Tensor:
        r"""The projection onto the multipliers' cone :math:`\{v : v_i \ge 0 \text{ for the
        inequalities}\}`: :math:`[v_i]_+` for an inequality, :math:`v_i` for an equality.

        What augmented Lagrangians clamp: HPR's weight :math:`[\lambda + \rho c]_+` and the
        quadratic penalty's :math:`[c]_+` become :math:`\lambda + \rho h` and :math:`h` on an
        equality :math:`h = 0`. Without equalities this is ``clamp_min(0)``, bit for bit."""
        positive = value.clamp_min(0.0)
        return positive if self.equality is None else torch.where(self.equality, value, positive)

    def ascend(
        self,
        step_size: float | torch.Tensor,
        direction: torch.Tensor,
        where: torch.Tensor | None = None,
    ) -> None:
        r""":math:`\lambda \leftarrow \Pi_{\mathcal{D}}(\lambda + \eta\, d)`, with ``d``
        (e.g. the constraint values) detached and cast to the multipliers' dtype; only where
        ``where`` is true, when given (see :meth:`update`). Entries where ``d`` is 0 (the
        decision value of an undefined constraint value) stay as they are without ``where``:
        :math:`\lambda + \eta \cdot 0 = \lambda`, already in the box."""
        direction = detached_as(direction, self.value.dtype)
        if isinstance(step_size, torch.Tensor):
            self.update(self.value + step_size * direction, where)
        else:  # one operation rather than a product and a sum
            self.update(torch.add(self.value, direction, alpha=step_size), where)

    def update(self, value: torch.Tensor, where: torch.Tensor | None = None) -> None:
        r""":math:`\lambda \leftarrow \Pi_{\mathcal{D}}(v)` for a value the caller computed.

        ``where`` (bool, broadcast against the value): the entries that move; the others keep
        their value, as Cooper's indexed multipliers do for constraints a minibatch did not
        observe (an empty group). A ``torch.where``, so nothing is read on the host.
        """
        projected = self.project(detached_as(value, self.value.dtype))
        self.value = projected if where is None else torch.where(where, projected, self.value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"value": self.value.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the value onto this multiplier's device and dtype; its shape must match."""
        saved = state["value"]
        if saved.shape != self.value.shape:
            raise ValueError(
                f"saved multipliers have shape {tuple(saved.shape)}, "
                f"these {tuple(self.value.shape)}"
            )
        self.value = saved.to(device=self.value.device, dtype=self.value.dtype).clone()


def detached_as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.detach().to(dtype)``, skipping the calls that would change nothing: each is a
    dispatch of a few µs, and a step of a small model makes several (``plain_sgd``'s why)."""
    if tensor.requires_grad:
        tensor = tensor.detach()
    return tensor if tensor.dtype == dtype else tensor.to(dtype)
