"""A synthetic ACS PUMS person file generator, for tests and offline demos.

Why: cluster nodes and CI machines often cannot reach the census servers, yet the Folktables
code path (file layout, column names, filters, missing-value patterns) must run end to end. The
files written here have exactly the layout folktables 0.0.12 reads with ``download=False``:
``<root>/<year>/<horizon>/psam_p<FIPS>.csv`` (``ss<yy>p<st>.csv`` before 2017), ``RT`` and
``SERIALNO`` as the first two columns, missing values as empty fields, and every column that
the folktables tasks in :data:`ctrain_dist.data.folktables.TASKS` read.

The people are invented, not sampled from the census. Marginals are plausible (age pyramid,
state-specific race shares, education and labour-force rates by age); structure is built in so
that fairness studies have something to find: education drives occupation, occupation, hours,
education and age drive income, and income carries a sex gap and a race gap (Black, American
Indian and "other race" people earn less at equal education and hours). Missing values follow
the census skip patterns (no ``SCHL`` under age 3, no ``WKHP``/``OCCP``/``COW`` for people who
did not work, no ``ESR`` under 16, ...), so missing-value handling is exercised as on real data.

Everything made from these files says so: :func:`write_synthetic` puts a :data:`MARKER` file in
the root, and the Folktables loader then marks the dataset and group names "synthetic".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
from folktables.load_acs import _STATE_CODES

MARKER = "SYNTHETIC"
"""File in a PUMS root whose presence marks every file under it as synthetic."""

COLUMNS: tuple[str, ...] = (
    "RT", "SERIALNO", "SPORDER", "PUMA", "ST", "ADJINC", "PWGTP", "AGEP", "CIT", "COW",
    "DEAR", "DEYE", "DIS", "DREM", "ESP", "ESR", "FER", "GCL", "HINS2", "JWMNP", "JWTR",
    "MAR", "MIG", "MIL", "NATIVITY", "OCCP", "PINCP", "POBP", "POVPIP", "POWPUMA", "PUBCOV",
    "RAC1P", "RACAIAN", "RACASN", "RACBLK", "RACNH", "RACPI", "RACSOR", "RACWHT", "RELP",
    "SCHL", "SEX", "WKHP", "ANC",
)  # fmt: skip

# RAC1P shares (codes 1..9) by state, rounded from ACS 2018 1-Year; others use the US shares.
_RACE_SHARES: dict[str, tuple[float, ...]] = {
    "US": (0.72, 0.127, 0.008, 0.0005, 0.002, 0.056, 0.002, 0.049, 0.035),
    "CA": (0.56, 0.058, 0.007, 0.0003, 0.002, 0.147, 0.004, 0.15, 0.0717),
    "OK": (0.72, 0.072, 0.071, 0.0003, 0.012, 0.022, 0.002, 0.026, 0.0747),
    "TX": (0.74, 0.12, 0.005, 0.0002, 0.001, 0.05, 0.001, 0.055, 0.0278),
    "NY": (0.63, 0.16, 0.004, 0.0002, 0.001, 0.087, 0.0005, 0.087, 0.0303),
}
# Occupations: 2018 OCCP code, skill level in [0, 1], share of women, log-wage premium.
_OCCUPATIONS: tuple[tuple[int, float, float, float], ...] = (
    (10, 0.85, 0.28, 0.75), (120, 0.80, 0.55, 0.45), (440, 0.65, 0.40, 0.20),
    (800, 0.75, 0.60, 0.30), (1010, 0.80, 0.22, 0.55), (1021, 0.85, 0.20, 0.65),
    (1310, 0.85, 0.15, 0.55), (1820, 0.90, 0.70, 0.35), (2100, 0.95, 0.37, 0.70),
    (2310, 0.70, 0.80, 0.05), (2320, 0.75, 0.77, 0.10), (2340, 0.70, 0.70, 0.05),
    (3060, 0.97, 0.40, 0.95), (3255, 0.72, 0.88, 0.30), (3601, 0.35, 0.86, -0.45),
    (3870, 0.50, 0.14, 0.15), (4020, 0.20, 0.40, -0.50), (4110, 0.20, 0.70, -0.55),
    (4220, 0.20, 0.35, -0.35), (4251, 0.15, 0.10, -0.25), (4720, 0.15, 0.72, -0.65),
    (4760, 0.35, 0.48, -0.10), (4850, 0.55, 0.30, 0.25), (5120, 0.45, 0.88, -0.10),
    (5240, 0.35, 0.65, -0.25), (5400, 0.35, 0.90, -0.30), (5740, 0.40, 0.82, -0.15),
    (6050, 0.10, 0.25, -0.45), (6230, 0.30, 0.02, -0.05), (6260, 0.20, 0.03, -0.20),
    (7200, 0.40, 0.02, 0.05), (7340, 0.40, 0.05, 0.00), (8740, 0.30, 0.40, -0.20),
    (9130, 0.25, 0.06, -0.10), (9620, 0.15, 0.22, -0.30), (9830, 0.40, 0.15, 0.10),
)  # fmt: skip
# Foreign places of birth (POBP codes) by RAC1P: China, India, Korea, Philippines, Vietnam;
# Mexico, El Salvador, Guatemala, Cuba; Germany, Italy, Russia, Canada; Haiti, Jamaica,
# Nigeria, Ethiopia.
_ASIA, _LATAM = (207, 210, 217, 233, 247), (303, 312, 313, 327)
_EUROPE, _AFRICA_CARIB = (110, 120, 139, 301), (329, 337, 427, 416)
_FOREIGN_POBP = {
    1: _EUROPE + _LATAM,
    2: _AFRICA_CARIB,
    6: _ASIA,
    7: _ASIA,
    8: _LATAM,
    9: _LATAM + _EUROPE,
}
_FOREIGN_SHARE = {1: 0.05, 2: 0.09, 3: 0.01, 4: 0.01, 5: 0.01, 6: 0.65, 7: 0.4, 8: 0.5, 9: 0.1}
# SCHL codes 9..24 of adults and their shares (codes below 9 are drawn among the first share).
_ADULT_SCHL = (15, 16, 17, 18, 19, 20, 21, 22, 23, 24)
_ADULT_SCHL_SHARES = (0.11, 0.23, 0.04, 0.06, 0.14, 0.09, 0.20, 0.09, 0.02, 0.02)


def expected_file(root: Path, state: str, year: int, horizon: str) -> Path:
    """Where folktables 0.0.12 looks for a state's person file (``load_acs`` naming rules)."""
    directory = Path(root) / str(year) / horizon
    if year >= 2017:
        return directory / f"psam_p{_STATE_CODES[state]}.csv"
    return directory / f"ss{str(year)[-2:]}p{state.lower()}.csv"


def write_synthetic(
    root: Path,
    states: Sequence[str],
    rows: int,
    year: int = 2018,
    horizon: str = "1-Year",
    seed: int = 0,
) -> list[Path]:
    """Write one synthetic person file per state under ``root`` and mark ``root`` synthetic.

    Args:
        root: PUMS root; files go to ``<root>/<year>/<horizon>/``.
        states: two-letter codes as folktables spells them (``"CA"``, ``"PR"``, ...).
        rows: people per state.
        year: survey year written into the layout and ``SERIALNO`` (2014 or later).
        horizon: ``"1-Year"`` or ``"5-Year"``.
        seed: the same seed, states and rows give byte-identical files.

    Returns:
        The files written, in the order of ``states``.

    Raises:
        ValueError: for an unknown state, a year before 2014, an unknown horizon or rows < 1.
    """
    unknown = [state for state in states if state not in _STATE_CODES]
    if unknown:
        raise ValueError(f"unknown state code(s) {unknown}; use e.g. OK, CA (folktables' codes)")
    if year < 2014 or horizon not in ("1-Year", "5-Year") or rows < 1:
        raise ValueError("need year >= 2014, horizon 1-Year or 5-Year, and rows >= 1")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "Synthetic ACS PUMS person data written by `ctrain data synth` (ctrain_dist.data.synth);"
        " invented people, not census records.\n"
    )
    written = []
    for index, state in enumerate(states):
        rng = np.random.default_rng([seed, index, int(_STATE_CODES[state])])
        frame = generate_state(state, rows, year, rng)
        path = expected_file(root, state, year, horizon)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, na_rep="")
        written.append(path)
    return written


def _choice(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One category index per row from row-wise probabilities ``[n, k]`` (rows sum to 1)."""
    cumulative = np.cumsum(probabilities, axis=1)
    draws = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return (draws > cumulative).sum(axis=1)


def _codes(values: np.ndarray, present: np.ndarray) -> pd.arrays.IntegerArray:
    """Integer codes with missing entries where ``present`` is False (written as empty)."""
    return pd.arrays.IntegerArray(np.where(present, values, 0).astype(np.int64), ~present)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_state(state: str, rows: int, year: int, rng: np.random.Generator) -> pd.DataFrame:
    """One state's synthetic person records, columns in :data:`COLUMNS` order."""
    n = rows
    fips = int(_STATE_CODES[state])
    u = rng.random

    age_weights = np.ones(95)
    age_weights[60:] = np.linspace(1.0, 0.15, 35)
    age = rng.choice(95, size=n, p=age_weights / age_weights.sum())
    female = u(n) < 0.505
    race = 1 + rng.choice(9, size=n, p=_normalised(_RACE_SHARES.get(state, _RACE_SHARES["US"])))
    disadvantaged = np.isin(race, (2, 3, 4, 5, 8))

    disability = u(n) < _sigmoid(-3.2 + 0.045 * age)
    education_z = rng.normal(size=n) + 0.55 * (race == 6) - 0.4 * disadvantaged
    education_z += 0.1 * female - 0.3 * disability
    schl = _schooling(age, education_z, rng)

    married_p = np.clip((age - 18) / 22, 0, 1) * 0.58
    widowed_p = np.clip((age - 60) / 40, 0, 1) * 0.45
    divorced_p = np.where(age >= 25, 0.12, 0.01)
    separated_p = np.where(age >= 20, 0.02, 0.0)
    never_p = np.clip(1 - married_p - widowed_p - divorced_p - separated_p, 0.02, 1)
    mar = 1 + _choice(rng, np.stack([married_p, widowed_p, divorced_p, separated_p, never_p], 1))
    mar = np.where(age < 15, 5, mar)

    participation = np.select(
        [age < 16, age < 20, age < 25, age < 55, age < 65, age < 75],
        [0.0, 0.4, 0.76, 0.87, 0.68, 0.3],
        0.07,
    )
    participation = np.clip(participation + 0.05 * education_z - 0.08 * female, 0, 0.97)
    participation = np.where(disability, participation * 0.45, participation)
    in_labour_force = u(n) < participation
    unemployed = in_labour_force & (u(n) < 0.045 + 0.03 * disadvantaged)
    armed = in_labour_force & ~unemployed & (u(n) < 0.005)
    esr = np.select(
        [in_labour_force & unemployed, armed, in_labour_force],
        [3, 4, np.where(u(n) < 0.97, 1, 2)],
        6,
    )
    employed = np.isin(esr, (1, 2, 4))
    worked_recently = employed | ((esr == 3) & (u(n) < 0.8)) | ((esr == 6) & (u(n) < 0.18))
    worked_recently &= age >= 16
    cow = 1 + rng.choice(9, size=n, p=_normalised((68, 8, 6, 4, 4, 5, 4, 0.5, 0.5)))
    cow = np.where((esr == 3) & ~worked_recently, 9, cow)
    has_cow = worked_recently | ((esr == 3) & (age >= 16))

    worked_year = worked_recently & (employed | (u(n) < 0.6))
    hours = np.where(
        age < 23, rng.normal(26, 11, n), rng.normal(39 + 3 * ~female - 2 * disability, 9, n)
    )
    hours = np.clip(np.round(hours), 1, 99).astype(np.int64)

    occupation, occupation_premium = _occupations(education_z, female, rng)

    years_of_school = np.interp(
        schl, [1, 15, 16, 19, 20, 21, 22, 24], [0, 11, 12, 13, 14, 16, 18, 21]
    )
    experience = np.clip(age - 18, 0, None)
    log_income = (
        9.95
        + 0.095 * (years_of_school - 12)
        + 0.55 * occupation_premium
        + 0.85 * np.log(hours / 40)
        + 0.05 * experience
        - 0.0008 * experience**2
        - 0.17 * female
        - 0.28 * disadvantaged
        + 0.04 * (race == 6)
        + rng.normal(0, 0.5, n)
    )
    earnings = np.exp(log_income)
    other_income = np.where(u(n) < 0.45, 0.0, np.exp(rng.normal(8.8 + 0.7 * (age >= 62), 0.9)))
    income = np.where(worked_year, earnings + 0.3 * other_income, other_income)
    income = np.where(u(n) < 0.004, -rng.integers(100, 9000, n), np.round(income, -1))

    native = u(n) >= np.vectorize(_FOREIGN_SHARE.get)(race) * (1.6 if state == "CA" else 1.0)
    pobp = _birthplaces(native, race, fips, rng)
    cit = np.where(native, np.where(u(n) < 0.01, 2, 1), np.where(u(n) < 0.05, 3, 4))
    cit = np.where(~native & (cit == 4) & (u(n) < 0.45 - 0.004 * age), 5, cit)

    household_income = np.maximum(income, 0) * 1.6 + np.where(age < 18, 45_000, 8_000)
    povpip = np.clip(np.round(household_income / 25_000 * 100), 0, 501).astype(np.int64)
    povpip = np.where(u(n) < 0.2, np.clip(povpip * rng.uniform(0.3, 1.2, n), 0, 501), povpip)
    public = u(n) < _sigmoid(-2.2 + 3.0 * (age >= 65) + 1.6 * (povpip < 138) + 1.2 * disability)
    private = u(n) < _sigmoid(-0.2 + 0.012 * (povpip - 150) + 0.9 * employed)

    relp = _relationships(age, mar, rng)
    child = np.isin(relp, (2, 3, 4)) & (age < 18)
    puma_count = {"CA": 265, "TX": 217, "NY": 145}.get(state, 25)
    puma = 100 + rng.integers(0, puma_count, n)
    transport = 1 + rng.choice(
        12, size=n, p=_normalised((84, 2, 0.5, 0.3, 0.2, 0.1, 0.3, 0.2, 0.6, 2.4, 5, 1))
    )
    commutes = (esr == 1) & (transport != 11)
    travel = np.clip(np.round(rng.lognormal(np.log(24 if state == "CA" else 19), 0.65, n)), 1, 200)
    moved = u(n) < np.where((age >= 19) & (age < 35), 0.28, 0.11)
    veteran = np.where(female, 0.015, np.clip((age - 25) / 300, 0, 0.22))
    mil = 1 + _choice(
        rng, np.stack([np.full(n, 0.005), veteran, np.full(n, 0.005), 1 - veteran], 1)
    )
    deaf, blind = disability & (u(n) < 0.3), disability & (u(n) < 0.2)
    cognitive = disability & (u(n) < 0.35)

    race_flags = {
        "RACAIAN": np.isin(race, (3, 4, 5)) | ((race == 9) & (u(n) < 0.25)),
        "RACASN": (race == 6) | ((race == 9) & (u(n) < 0.2)),
        "RACBLK": (race == 2) | ((race == 9) & (u(n) < 0.35)),
        "RACNH": (race == 7) & (u(n) < 0.4),
        "RACPI": (race == 7) | ((race == 9) & (u(n) < 0.05)),
        "RACSOR": (race == 8) | ((race == 9) & (u(n) < 0.1)),
        "RACWHT": (race == 1) | ((race == 9) & (u(n) < 0.75)),
    }
    columns = {
        "RT": np.full(n, "P"),
        "SERIALNO": np.char.add(
            f"{year}HU{fips:02d}", np.char.zfill(np.arange(1, n + 1).astype(str), 8)
        ),
        "SPORDER": np.ones(n, dtype=np.int64),
        "PUMA": puma,
        "ST": np.full(n, fips),
        "ADJINC": np.full(n, 1013097),
        "PWGTP": np.clip(np.round(rng.lognormal(np.log(95), 0.6, n)), 1, 1500).astype(np.int64),
        "AGEP": age,
        "CIT": cit,
        "COW": _codes(cow, has_cow),
        "DEAR": np.where(deaf, 1, 2),
        "DEYE": np.where(blind, 1, 2),
        "DIS": np.where(disability, 1, 2),
        "DREM": _codes(np.where(cognitive, 1, 2), age >= 5),
        "ESP": _codes(1 + rng.choice(8, size=n, p=_normalised((40, 8, 6, 1, 25, 3, 16, 1))), child),
        "ESR": _codes(esr, age >= 16),
        "FER": _codes(np.where(u(n) < 0.06, 1, 2), female & (age >= 15) & (age <= 50)),
        "GCL": _codes(np.where(u(n) < 0.03, 1, 2), age >= 30),
        "HINS2": np.where(private, 1, 2),
        "JWMNP": _codes(travel.astype(np.int64), commutes),
        "JWTR": _codes(transport, esr == 1),
        "MAR": mar,
        "MIG": _codes(np.where(moved, np.where(u(n) < 0.06, 2, 3), 1), age >= 1),
        "MIL": _codes(mil, age >= 17),
        "NATIVITY": np.where(native, 1, 2),
        "OCCP": _codes(occupation, has_cow & (cow != 9)),
        "PINCP": _codes(income.astype(np.int64), age >= 15),
        "POBP": pobp,
        "POVPIP": _codes(povpip.astype(np.int64), u(n) >= 0.02),
        "POWPUMA": _codes(
            np.where(u(n) < 0.7, puma, 100 + rng.integers(0, puma_count, n)), esr == 1
        ),
        "PUBCOV": np.where(public, 1, 2),
        "RAC1P": race,
        **{name: flag.astype(np.int64) for name, flag in race_flags.items()},
        "RELP": relp,
        "SCHL": _codes(schl, age >= 3),
        "SEX": np.where(female, 2, 1),
        "WKHP": _codes(hours, worked_year),
        "ANC": rng.choice(np.array([1, 2, 4, 8]), size=n, p=[0.6, 0.2, 0.15, 0.05]),
    }
    return pd.DataFrame({name: columns[name] for name in COLUMNS})


def _normalised(weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum()


def _schooling(age: np.ndarray, education_z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SCHL: grade reached for children (by age), attainment drawn from ``education_z`` for adults.

    Adults' codes come from cutting the standard normal at the cumulative shares of
    :data:`_ADULT_SCHL_SHARES`, so attainment rises monotonically with ``education_z``.
    """
    child_grade = np.clip(age - 2, 1, 16)
    cuts = [NormalDist().inv_cdf(p) for p in np.cumsum(_ADULT_SCHL_SHARES)[:-1]]
    adult = np.asarray(_ADULT_SCHL)[np.searchsorted(cuts, education_z)]
    dropped_early = (adult == 15) & (rng.random(len(age)) < 0.45)
    adult = np.where(dropped_early, rng.integers(1, 15, len(age)), adult)
    return np.where(age < 19, child_grade, adult)


def _occupations(
    education_z: np.ndarray, female: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """OCCP codes and their wage premiums: skill matched to education, with sex segregation."""
    codes, skill, female_share, premium = (
        np.array(column) for column in zip(*_OCCUPATIONS, strict=True)
    )
    percentile = np.clip(0.5 + 0.28 * education_z, 0.02, 0.98)
    fit = np.exp(-((skill[None, :] - percentile[:, None]) ** 2) / 0.03)
    sex_share = np.where(female[:, None], female_share[None, :], 1 - female_share[None, :])
    index = _choice(rng, fit * sex_share)
    return codes[index], premium[index]


def _birthplaces(
    native: np.ndarray, race: np.ndarray, fips: int, rng: np.random.Generator
) -> np.ndarray:
    """POBP: the state itself for most natives, another state for the rest; abroad by race."""
    n = len(race)
    us_states = np.array([int(code) for code in _STATE_CODES.values() if int(code) <= 56])
    elsewhere = rng.choice(us_states, n)
    home = np.where(rng.random(n) < 0.65, fips, elsewhere)
    foreign = np.zeros(n, dtype=np.int64)
    for code in range(1, 10):
        rows = race == code
        foreign[rows] = rng.choice(_FOREIGN_POBP.get(code, _LATAM), rows.sum())
    return np.where(native, home, foreign)


def _relationships(age: np.ndarray, mar: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RELP (2018 codes 0..17): householder, spouse, children, partners, group quarters."""
    n = len(age)
    u = rng.random(n)
    adult = np.where(mar == 1, np.where(u < 0.5, 0, 1), np.where(u < 0.55, 0, 13))
    young = np.where(u < 0.3, 2, np.where(u < 0.55, 0, np.where(u < 0.8, 12, 11)))
    adult = np.where((age < 30) & (mar != 1), young, adult)
    child = np.select([u < 0.85, u < 0.9, u < 0.95], [2, 3, 7], 10)
    relp = np.where(age < 18, child, adult)
    group_quarters = rng.random(n) < 0.025
    return np.where(group_quarters, np.where(rng.random(n) < 0.5, 16, 17), relp)
