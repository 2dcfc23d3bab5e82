r"""Fixed-weight penalty (regulariser) baseline: SGD on the objective plus a weighted violation.

The "SGD + fairness regulariser" baseline of the Folktables benchmark (Kliachkin et al., arXiv
2507.04033); the exact-penalty theory is Zangwill (1967) and Han & Mangasarian (1979).

.. math::
    x^{k+1} = x^k - \alpha\, \nabla\Big(f(x^k; \xi) + w \sum_i \phi\big(c_i(x^k; \xi)\big)\Big),
    \qquad \phi(t) = [t]_+ \text{ (hinge) or } [t]_+^2 \text{ (squared)}

shown for ``primal: sgd`` with :math:`\alpha` the hyperparameter ``lr``; any ``primal``
(``primal.py``) minimises the same fixed objective. With the hinge (an exact penalty), every KKT
point whose multipliers satisfy :math:`\lambda^\star_i < w` is a stationary point of the penalised
objective, so a large enough weight solves the constrained problem; with a constant step the iterate
then chatters around the constraint boundary within :math:`O(\alpha w \|\nabla c\|)`. The squared
penalty is smooth but only feasible in the limit :math:`w \to \infty` (its minimiser violates by
about :math:`\lambda^\star / (2w)`). The weight is fixed: nothing adapts, which is what makes it a
baseline for the methods that learn multipliers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
)
from ctrain_dist.algorithms.primal import (
    PRIMAL_MEMBER_HYPERPARAMETERS,
    PrimalHyperparameters,
    primal_optimizer,
)


class PenaltyHyperparameters(PrimalHyperparameters):
    weight: float = Field(1.0, ge=0, description="penalty weight w")
    penalty: Literal["hinge", "squared"] = Field(
        "hinge", description="φ(t) = max(0, t) (exact) or max(0, t)² (smooth)"
    )


class Penalty(Algorithm[PenaltyHyperparameters]):
    """Fixed-weight penalty; the update is in the module docstring."""

    name = "penalty"
    constrained = True
    paper = "Han & Mangasarian 1979, Math. Programming 17:251–269 (exact penalty)"
    hyperparameters = PenaltyHyperparameters
    state_attributes = ("optimizer",)
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {"weight"}

    def _init_state(self) -> None:
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        excess = sample.c.clamp_min(0.0)
        if hp.penalty == "squared":
            excess = excess**2
        self._backward(sample.loss + self.hyper("weight", like=sample.loss) * excess.sum(-1))
        self.optimizer.step()
        self.iteration += 1
        return self._log(sample)
