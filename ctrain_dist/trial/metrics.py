"""Full-split evaluation: what every evaluation record says about the model on one split.

Constraint values here are the strict ones (hard 0/1 rates, not training surrogates): a seed is
judged feasible on what the deployed classifier does. ``max_violation`` is
``max(0, max_i c_i)`` (``|h_i|`` for an equality), so a split is feasible exactly when it is 0.

The paper's test metrics (Kliachkin et al., arXiv 2507.04033) are computed here, on the trial
side, so every evaluation row and every ``final_<split>_*`` column carries them and analysis
never needs the model again:

========== ===================================================================================
column      meaning (groups a, b; the worst pair of groups when there are more than two)
========== ===================================================================================
auc_m       mean over groups of the per-group ROC AUC
ind         independence, ``|PR_a − PR_b|`` (PR: positive prediction rate; equals ``dp_gap``)
sp          separation, ``|TPR_a − TPR_b| + |FPR_a − FPR_b|``
ina         inaccuracy, the error rate ``1 − accuracy``
sf          sufficiency, ``|PPV_a − PPV_b| + |NPV_a − NPV_b|``
wd          Wasserstein-1 distance between the groups' distributions of predicted probability
loss_gap    ``|L_a − L_b|``, L the group's mean binary cross-entropy
========== ===================================================================================

"Worst pair" means the largest value over all pairs of groups whose terms are defined (a group
with no positives has no TPR, one with no predicted positives no PPV); NaN when no pair is.
Predictions are ``logit > 0``. Everything after the forward pass is one ``argsort`` per split
plus O(n · groups) work in float64 NumPy, because evaluation runs every k steps on all splits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ctrain_dist.constraints import ConstrainedProblem
from ctrain_dist.store.schema import (
    ACCURACY,
    AUC,
    AUC_M,
    DP_GAP,
    INA,
    IND,
    LOSS_GAP,
    MAX_VIOLATION,
    OBJECTIVE,
    SF,
    SP,
    WD,
    constraint_column,
    group_column,
)

EVAL_CHUNK_ROWS = 65_536
"""Rows per forward pass, so evaluation memory stays flat whatever the split's size."""


def _auc_from_blocks(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC per column from counts of positives and negatives per block of equal scores.

    ``pos`` and ``neg`` have shape ``(blocks, columns)``, blocks in ascending score order. The
    Mann–Whitney identity, AUC = P(score⁺ > score⁻) + ½ P(score⁺ = score⁻), counts each
    positive against the negatives of lower blocks and half those of its own block. NaN for a
    column with one class only.
    """
    below = np.cumsum(neg, axis=0) - neg
    n_pos, n_neg = pos.sum(axis=0), neg.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            (n_pos > 0) & (n_neg > 0),
            (pos * (below + 0.5 * neg)).sum(axis=0) / (n_pos * n_neg),
            np.nan,
        )


def _score_blocks(scores: np.ndarray, keys: np.ndarray, num_keys: int) -> tuple[np.ndarray, ...]:
    """Sort once; count rows per (block of equal scores, key); return counts and block scores.

    Returns:
        ``counts`` of shape ``(blocks, num_keys)`` and the score of each block, ascending.
    """
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.empty(ordered.size, dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    block = np.cumsum(starts) - 1
    blocks = int(block[-1]) + 1 if block.size else 0
    counts = np.bincount(block * num_keys + keys[order], minlength=blocks * num_keys)
    return counts.reshape(blocks, num_keys).astype(float), ordered[starts]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann–Whitney) identity, ties counted half; NaN for one class."""
    counts, _ = _score_blocks(np.asarray(scores, dtype=float), np.asarray(labels) > 0.5, 2)
    return float(_auc_from_blocks(counts[:, 1:], counts[:, :1])[0])


def _worst_pair(values: np.ndarray) -> float:
    """max over pairs of groups of ``sum_k |v[a, k] − v[b, k]|``; ``values`` is (groups, k)."""
    a, b = np.triu_indices(len(values), k=1)
    gaps = np.abs(values[a] - values[b]).sum(axis=-1)
    defined = gaps[np.isfinite(gaps)]
    return float(defined.max()) if defined.size else float("nan")


def _wasserstein_worst_pair(counts: np.ndarray, values: np.ndarray) -> float:
    """Largest W1 distance between two groups' score distributions.

    ``W1(a, b) = ∫ |F_a(t) − F_b(t)| dt``. ``counts`` (blocks × groups, present groups only)
    holds each group's rows at each distinct pooled score ``values``; both empirical CDFs are
    step functions on those breakpoints, so the integral is a dot product with the gaps
    between consecutive values (what ``scipy.stats.wasserstein_distance`` computes).
    """
    if counts.shape[1] < 2:
        return float("nan")
    cdf = np.cumsum(counts, axis=0)[:-1] / counts.sum(axis=0)
    widths = np.diff(values)
    a, b = np.triu_indices(counts.shape[1], k=1)
    return float((np.abs(cdf[:, a] - cdf[:, b]) * widths[:, None]).sum(axis=0).max())


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, num_groups: int
) -> dict[str, float]:
    """Accuracy, AUC, per-group rates, DP gap and the paper's metrics of one split.

    Args:
        logits: model outputs, shape ``(n,)``; the prediction is ``logit > 0`` and the score
            whose distribution ``wd`` compares is ``sigmoid(logit)``.
        labels: 0/1 labels, shape ``(n,)``.
        groups: group ids in ``[0, num_groups)``, shape ``(n,)``.
        num_groups: number of groups; an absent group gets NaN rates and is left out of gaps.

    Returns:
        ``accuracy, auc, dp_gap``, the ``PAPER_METRICS`` columns and ``group_<rate>_<g>`` for
        every rate in ``GROUP_RATES`` and group ``g``.
    """
    logits = np.asarray(logits, dtype=float)
    positive = np.asarray(labels) > 0.5
    groups = np.asarray(groups).astype(np.intp)
    predicted = logits > 0
    # Confusion counts per group in one pass: columns TN, FP, FN, TP.
    cells = groups * 4 + 2 * positive + predicted
    tn, fp, fn, tp = np.bincount(cells, minlength=4 * num_groups).reshape(num_groups, 4).T
    count = (tn + fp + fn + tp).astype(float)
    losses = np.bincount(
        groups, weights=np.logaddexp(0.0, logits) - positive * logits, minlength=num_groups
    )
    # Blocks of equal logits × (group, label): AUCs per group and overall, and the CDFs for Wd.
    blocks, block_logits = _score_blocks(logits, groups * 2 + positive, 2 * num_groups)
    neg, pos = blocks[:, 0::2], blocks[:, 1::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = {
            "loss": losses / count,
            "positive_rate": (tp + fp) / count,
            "tpr": tp / (tp + fn),
            "fpr": fp / (fp + tn),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "auc": _auc_from_blocks(pos, neg),
        }
    present = np.flatnonzero(count > 0)
    n = logits.size
    accuracy = float((tp.sum() + tn.sum()) / n) if n else float("nan")
    group_aucs = rates["auc"][np.isfinite(rates["auc"])]
    ind = _worst_pair(rates["positive_rate"][present, None])
    row = {
        ACCURACY: accuracy,
        AUC: float(_auc_from_blocks(pos.sum(1, keepdims=True), neg.sum(1, keepdims=True))[0]),
        DP_GAP: ind,
        AUC_M: float(group_aucs.mean()) if group_aucs.size else float("nan"),
        IND: ind,
        SP: _worst_pair(np.stack([rates["tpr"], rates["fpr"]], axis=1)[present]),
        INA: 1.0 - accuracy,
        SF: _worst_pair(np.stack([rates["ppv"], rates["npv"]], axis=1)[present]),
        WD: _wasserstein_worst_pair((neg + pos)[:, present], 1.0 / (1.0 + np.exp(-block_logits))),
        LOSS_GAP: _worst_pair(rates["loss"][present, None]),
    }
    for name, values in rates.items():
        row.update({group_column(name, g): float(values[g]) for g in range(num_groups)})
    return row


@torch.no_grad()
def predict_logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Logits of every row, in chunks (``features.chunk_rows`` when it says: a streamed
    split's rows are read chunk by chunk, ``data/streaming.py``).

    The model predicts in evaluation mode and returns to the mode it was in: a user's model
    with BatchNorm would otherwise fold the evaluated split into its running statistics (and
    change the training that follows), and one with dropout would score a random subnetwork.
    """
    size = getattr(features, "chunk_rows", EVAL_CHUNK_ROWS)
    training = model.training
    model.eval()
    try:
        chunks = [model(features[i : i + size]) for i in range(0, len(features), size)]
    finally:
        model.train(training)
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
    """Objective, strict constraint values and ``classification_metrics`` of one split.

    One host transfer a split: the objective, the constraint values, the logits, the labels and
    the groups leave the device as one float64 vector (group ids and 0/1 labels are exact in
    float64), so on a GPU an evaluation waits for the device once per split, not once per
    metric (``tests/test_cuda.py``).
    """
    logits = predict_logits(model, features)
    objective, c = problem.evaluate(problem.statistics(logits, labels, groups), strict=True)
    parts = [objective.reshape(1), c.reshape(-1), logits.reshape(-1), labels, groups]
    host = torch.cat([part.detach().double() for part in parts]).cpu()
    objective_value, c_host, logits_host, labels_host, groups_host = host.split(
        [part.numel() for part in parts]
    )
    row: dict[str, float] = {
        OBJECTIVE: float(objective_value),
        MAX_VIOLATION: (
            float(problem.violations(c_host).clamp_min(0).max()) if c_host.numel() else 0.0
        ),
    }
    row.update({constraint_column(i): float(value) for i, value in enumerate(c_host)})
    row.update(
        classification_metrics(
            logits_host.numpy(), labels_host.numpy(), groups_host.numpy(), num_groups
        )
    )
    return row
