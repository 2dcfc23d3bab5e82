"""Specification of the stratified train/validation/test split."""

import numpy as np
import pytest

from ctrain_dist.data.split import stratified_split

VAL_FRACTION = 0.2
TEST_FRACTION = 0.25


def _cells() -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups with cells of very different sizes, down to a single row."""
    rng = np.random.default_rng(123)
    labels = rng.integers(0, 2, size=1003).astype(np.float32)
    groups = rng.choice(3, size=1003, p=[0.8, 0.17, 0.03]).astype(np.int64)
    labels[-1], groups[-1] = 1.0, 7
    return labels, groups


def _split(seed: int = 0) -> dict[str, np.ndarray]:
    labels, groups = _cells()
    return stratified_split(labels, groups, VAL_FRACTION, TEST_FRACTION, seed)


def test_splits_are_disjoint_and_cover_every_row():
    splits = _split()
    everything = np.concatenate([splits["train"], splits["val"], splits["test"]])
    assert np.array_equal(np.sort(everything), np.arange(1003))


def test_split_indices_are_sorted_int64():
    for index in _split().values():
        assert index.dtype == np.int64
        assert np.all(np.diff(index) > 0)


def test_each_label_group_cell_gets_its_fractions_within_one_row():
    labels, groups = _cells()
    splits = _split()
    fractions = {"val": VAL_FRACTION, "test": TEST_FRACTION}
    fractions["train"] = 1 - VAL_FRACTION - TEST_FRACTION
    for label in np.unique(labels):
        for group in np.unique(groups):
            in_cell = (labels == label) & (groups == group)
            for name, fraction in fractions.items():
                count = in_cell[splits[name]].sum()
                assert abs(count - fraction * in_cell.sum()) <= 1, (label, group, name)


def test_same_seed_gives_the_same_split():
    first, second = _split(seed=5), _split(seed=5)
    for name in first:
        assert np.array_equal(first[name], second[name])


def test_different_seeds_give_different_splits():
    assert not np.array_equal(_split(seed=0)["test"], _split(seed=1)["test"])


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction"),
    [(0.0, 0.2), (0.2, 0.0), (-0.1, 0.2), (0.2, 1.0), (1.2, 0.1), (0.5, 0.5), (0.7, 0.4)],
)
def test_fractions_outside_the_open_unit_interval_or_summing_to_one_raise(
    val_fraction, test_fraction
):
    labels, groups = _cells()
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, groups, val_fraction, test_fraction, seed=0)


def test_labels_and_groups_of_different_lengths_raise():
    with pytest.raises(ValueError, match="equal length"):
        stratified_split(np.zeros(4), np.zeros(5), VAL_FRACTION, TEST_FRACTION, seed=0)
