r"""The "SGD + fairret" baseline of the Folktables benchmark: a fixed-weight fairness regulariser.

Kliachkin et al. (arXiv 2507.04033) train the network on the loss plus a weighted fairret
(Buyl, Defrance & De Bie, ICLR 2024): fairret's ``NormLoss`` of its ``Accuracy`` statistic
between the groups, weight 0.5, SGD with step 0.05, minibatches of 4 rows of each group
(humancompatible.train's ``experiments/conf/alg/fairret.yaml``):

.. math::
    x^{k+1} = x^k - \alpha\, \nabla\big(f(x^k; \xi) + w\, R(x^k; \xi)\big),
    \qquad R = \|v\|_p \text{ (norm) or } \log\textstyle\sum_s e^{v_s} - \log S \text{ (lse)},

with :math:`v_s = |\gamma_s / \gamma - 1|` the violation of the chosen statistic
(``constraints/fairret.py``), shown for ``primal: sgd``; any ``primal`` (``primal.py``) minimises
the same fixed objective. Like ``penalty`` it adapts nothing; unlike it, the regulariser is not
the spec's constraint but fairret's own loss, so the trial is still judged on the spec's
constraints, the same violation every other algorithm is judged on.

Why the regulariser reaches the step as a training term (``Algorithm.training_terms``,
``Sample.terms``) rather than through the constraints or a second forward pass: the step needs
the minibatch's logits, labels and groups, which only the oracle has. fairret's violation
losses of its linear-fractional statistics are functions of per-group sums, the contract every
constraint keeps, so the oracle sums them with the constraints' statistics in the same
minibatch: exact under data parallelism (one all-reduce), packed seeds through the same
``vmap``, the constraint draw of ``constraint_rows_per_group`` when the spec asks for one (the
reference's balanced group batches: ``rows_per_group``), and compiled like any oracle.
Reporting the term as a constraint would have judged fairret on its own loss instead.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ctrain_dist.algorithms.base import Algorithm, Estimate, StepInfo, Term, draw
from ctrain_dist.algorithms.primal import (
    PRIMAL_MEMBER_HYPERPARAMETERS,
    PrimalHyperparameters,
    primal_optimizer,
)

FairretStatistic = Literal[
    "positive_rate",
    "true_positive_rate",
    "false_positive_rate",
    "positive_predictive_value",
    "false_omission_rate",
    "accuracy",
    "false_negative_false_positive_fraction",
]
"""fairret's linear-fractional statistics by name (``constraints.fairret.STATISTICS``, which
the algorithms may not import: ``docs/design.md``; a test keeps the two lists equal)."""


class FairretHyperparameters(PrimalHyperparameters):
    weight: float = Field(0.5, ge=0, description="regulariser weight w (the reference's pmult)")
    statistic: FairretStatistic = Field(
        "accuracy", description="fairret's linear-fractional statistic compared across groups"
    )
    loss: Literal["norm", "lse"] = Field(
        "norm", description="NormLoss (‖v‖_p) or LSELoss (log-sum-exp) of the violations"
    )
    p: float = Field(1.0, ge=1, description="order of NormLoss's norm (loss: norm)")

    @field_validator("loss", mode="before")
    @classmethod
    def _no_projection_losses(cls, loss: object) -> object:
        if isinstance(loss, str) and "projection" in loss:
            raise ValueError(
                f"{loss}: fairret's projection losses solve a cvxpy problem per minibatch on "
                "the host, not a function of batch sums; use norm or lse"
            )
        return loss

    @field_validator("p")
    @classmethod
    def _read_by_the_norm(cls, p: float, info: ValidationInfo) -> float:
        """A given ``p`` (defaults are not validated) with ``loss: lse`` is refused, not
        ignored, so that no two trial ids name the same run; ``loss`` is declared first."""
        if info.data.get("loss") == "lse":
            raise ValueError("p is read by loss: norm only, not by lse; drop it")
        return p


class Fairret(Algorithm[FairretHyperparameters]):
    """Loss plus a fixed weight times fairret's loss; the update is in the module docstring."""

    name = "fairret"
    constrained = False
    paper = "Buyl, Defrance & De Bie 2024, ICLR (fairret); Kliachkin et al. 2025 (SGD + fairret)"
    hyperparameters = FairretHyperparameters
    state_attributes = ("optimizer",)
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {"weight"}

    @classmethod
    def training_terms(cls, hp: FairretHyperparameters) -> tuple[Term, ...]:  # type: ignore[override]
        options = {"statistic": hp.statistic, "loss": hp.loss, "p": hp.p}
        return (Term("fairret", options),)

    def _init_state(self) -> None:
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        sample = draw(estimate)
        # The trainer's oracle always carries the term (``trial/learner.trial_problem``); a bare
        # ``(loss, c)`` oracle (test problems) has none, and the step is the primal one.
        terms = sample.terms
        regulariser = torch.zeros_like(sample.loss) if terms is None else terms[..., 0]
        self._backward(sample.loss + self.hyper("weight", like=sample.loss) * regulariser)
        self.optimizer.step()
        self.iteration += 1
        return self._log(sample, fairret_loss=regulariser)
