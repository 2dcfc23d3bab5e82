"""Full-split evaluation: what every evaluation record says about the model on one split.

Constraint values here are the strict ones (hard 0/1 rates, not training surrogates): a seed is
judged feasible on what the deployed classifier does. ``max_violation`` is
``max(0, max_i c_i)``, so a split is feasible exactly when it is 0.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from torch.nn import functional

from .constraints import ConstrainedProblem

EVAL_CHUNK_ROWS = 65_536
"""Rows per forward pass, so evaluation memory stays flat whatever the split's size."""


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann–Whitney) identity, ties counted half; NaN for one class."""
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def predict_logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    chunks = [
        model(features[i : i + EVAL_CHUNK_ROWS]) for i in range(0, len(features), EVAL_CHUNK_ROWS)
    ]
    return torch.cat(chunks).squeeze(-1)


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    problem: ConstrainedProblem,
    features: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
) -> dict[str, float]:
    """Objective, accuracy, AUC, strict constraint values, per-group loss and positive rate."""
    logits = predict_logits(model, features)
    objective, c = problem.evaluate(problem.statistics(logits, labels, groups), strict=True)
    losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    predicted = (logits > 0).to(labels.dtype)
    row: dict[str, float] = {
        "objective": float(objective),
        "accuracy": float((predicted == labels).to(torch.float64).mean()),
        "auc": auc(logits.double().cpu().numpy(), labels.double().cpu().numpy()),
        "max_violation": float(c.clamp_min(0).max()) if c.numel() else 0.0,
    }
    row.update({f"constraint_{i}": float(value) for i, value in enumerate(c)})
    rates = []
    for g in range(num_groups):
        member = groups == g
        count = int(member.sum())
        rate = float(predicted[member].mean()) if count else float("nan")
        row[f"group_loss_{g}"] = float(losses[member].mean()) if count else float("nan")
        row[f"group_positive_rate_{g}"] = rate
        rates.append(rate)
    present = [r for r in rates if not np.isnan(r)]
    row["dp_gap"] = max(present) - min(present) if len(present) >= 2 else float("nan")
    return row
