"""Specification of full-split evaluation: the paper's metrics and per-group rates."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from scipy import stats as sps

from ctrain_dist.constraints import ConstrainedProblem, build_constraints
from ctrain_dist.spec import ConstraintSpec
from ctrain_dist.store.schema import PAPER_METRICS
from ctrain_dist.trial.metrics import auc, classification_metrics, evaluate_split


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie), over all pairs."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def split_data(seed: int, n: int = 400, num_groups: int = 2):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, num_groups, n)
    labels = (rng.uniform(size=n) < 0.3 + 0.1 * groups).astype(float)
    # Rounded logits, so scores tie within and across groups.
    logits = np.round(rng.normal(labels - 0.5 + 0.2 * groups, 1.0), 1)
    return logits, labels, groups


def rates_by_hand(logits, labels, groups, g) -> dict[str, float]:
    member = groups == g
    y, p = labels[member] == 1, logits[member] > 0
    return {
        "pr": p.mean(),
        "tpr": (p & y).sum() / y.sum(),
        "fpr": (p & ~y).sum() / (~y).sum(),
        "ppv": (p & y).sum() / p.sum(),
        "npv": (~p & ~y).sum() / (~p).sum(),
        "loss": np.mean(np.logaddexp(0, logits[member]) - y * logits[member]),
    }


def test_auc_counts_ties_half_like_the_pairwise_definition() -> None:
    logits, labels, _ = split_data(0)
    assert auc(logits, labels) == pytest.approx(brute_force_auc(logits, labels))


def test_auc_of_a_constant_score_is_one_half() -> None:
    assert auc(np.zeros(6), np.array([0, 1, 0, 1, 1, 0.0])) == 0.5


def test_group_aucs_and_their_mean_match_the_pairwise_definition() -> None:
    logits, labels, groups = split_data(1)
    row = classification_metrics(logits, labels, groups, 2)
    expected = [brute_force_auc(logits[groups == g], labels[groups == g]) for g in (0, 1)]
    assert [row["group_auc_0"], row["group_auc_1"]] == pytest.approx(expected)
    assert row["auc_m"] == pytest.approx(np.mean(expected))
    assert row["auc"] == pytest.approx(brute_force_auc(logits, labels))


def test_two_group_fairness_metrics_match_their_definitions() -> None:
    logits, labels, groups = split_data(2)
    row = classification_metrics(logits, labels, groups, 2)
    r0, r1 = (rates_by_hand(logits, labels, groups, g) for g in (0, 1))
    assert row["ind"] == pytest.approx(abs(r0["pr"] - r1["pr"]))
    assert row["sp"] == pytest.approx(abs(r0["tpr"] - r1["tpr"]) + abs(r0["fpr"] - r1["fpr"]))
    assert row["sf"] == pytest.approx(abs(r0["ppv"] - r1["ppv"]) + abs(r0["npv"] - r1["npv"]))
    assert row["loss_gap"] == pytest.approx(abs(r0["loss"] - r1["loss"]))
    assert row["ina"] == pytest.approx(np.mean((logits > 0) != (labels == 1)))
    assert row["dp_gap"] == row["ind"]


def test_wd_is_scipys_wasserstein_distance_of_predicted_probabilities() -> None:
    logits, labels, groups = split_data(3)
    probability = 1 / (1 + np.exp(-logits))
    expected = sps.wasserstein_distance(probability[groups == 0], probability[groups == 1])
    assert classification_metrics(logits, labels, groups, 2)["wd"] == pytest.approx(expected)


def test_with_more_groups_every_gap_is_the_worst_pair() -> None:
    logits, labels, groups = split_data(4, n=900, num_groups=4)
    row = classification_metrics(logits, labels, groups, 4)
    rates = [rates_by_hand(logits, labels, groups, g) for g in range(4)]
    probability = 1 / (1 + np.exp(-logits))
    pairs = list(combinations(range(4), 2))

    def worst(gap) -> float:
        return max(gap(rates[a], rates[b]) for a, b in pairs)

    assert row["sp"] == pytest.approx(
        worst(lambda a, b: abs(a["tpr"] - b["tpr"]) + abs(a["fpr"] - b["fpr"]))
    )
    assert row["sf"] == pytest.approx(
        worst(lambda a, b: abs(a["ppv"] - b["ppv"]) + abs(a["npv"] - b["npv"]))
    )
    assert row["ind"] == pytest.approx(worst(lambda a, b: abs(a["pr"] - b["pr"])))
    assert row["wd"] == pytest.approx(
        max(
            sps.wasserstein_distance(probability[groups == a], probability[groups == b])
            for a, b in pairs
        )
    )


def test_an_absent_group_has_nan_rates_and_is_left_out_of_the_gaps() -> None:
    logits, labels, groups = split_data(5)
    with_absent = classification_metrics(logits, labels, groups, 3)
    without = classification_metrics(logits, labels, groups, 2)
    assert np.isnan(with_absent["group_tpr_2"]) and np.isnan(with_absent["group_auc_2"])
    for metric in PAPER_METRICS:
        assert with_absent[metric] == pytest.approx(without[metric])


def test_a_group_without_predicted_positives_has_no_ppv_and_sf_uses_defined_pairs() -> None:
    logits = np.array([-1.0, -2.0, -1.5, 1.0, -1.0, 2.0])
    labels = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    row = classification_metrics(logits, labels, groups, 2)
    assert np.isnan(row["group_ppv_0"]) and np.isnan(row["sf"])
    assert row["ind"] == pytest.approx(2 / 3)


def test_evaluate_split_returns_every_paper_metric_and_the_strict_constraints() -> None:
    torch.manual_seed(0)
    features = torch.randn(300, 5)
    labels = (torch.rand(300) < 0.4).float()
    groups = torch.randint(0, 2, (300,))
    model = torch.nn.Linear(5, 1)
    problem = ConstrainedProblem(build_constraints([ConstraintSpec(kind="loss_gap", bound=0.0)], 2))
    row = evaluate_split(model, problem, features, labels, groups, 2)
    assert set(PAPER_METRICS) <= set(row)
    assert row["max_violation"] == pytest.approx(row["loss_gap"], abs=1e-5)
    assert all(isinstance(value, float) for value in row.values())


def test_evaluation_leaves_a_batchnorm_model_untouched_and_scores_dropout_deterministically() -> (
    None
):
    """A user's model is evaluated in eval mode and handed back in the mode it was in."""
    torch.manual_seed(0)
    features = torch.randn(200, 5) * 3 + 1
    labels = (torch.rand(200) < 0.4).float()
    groups = torch.randint(0, 2, (200,))
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1)
    )
    problem = ConstrainedProblem(build_constraints([ConstraintSpec(kind="loss_gap", bound=0.0)], 2))
    running_mean = model[1].running_mean.clone()
    first = evaluate_split(model, problem, features, labels, groups, 2)
    second = evaluate_split(model, problem, features, labels, groups, 2)
    assert torch.equal(model[1].running_mean, running_mean)
    assert first == second
    assert model.training
