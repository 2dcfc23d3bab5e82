"""Statistics across seeds and tasks: pure functions, no I/O, no plotting (after rliable).

One module per job, so the place a number is computed shows in its name:

| module | its job |
|---|---|
| ``outcomes`` | what finished, diverged (infeasible, worst on every metric) and errored rows mean |
| ``intervals`` | small-sample intervals (t, order statistics, Yuen), Wilson, Newcombe, bootstrap |
| ``summary`` | point estimates with their intervals per group and metric |
| ``effects`` | Cohen's d, Cliff's δ, probability of improvement, lexicographic ranks |
| ``two_sample`` | exact and small-sample tests, paired and unpaired, and their smallest p |
| ``corrections`` | Holm and Benjamini–Hochberg over a family |
| ``power`` | power and seeds needed at the corrected α |
| ``selection`` | one configuration per algorithm, chosen on validation |
| ``feasibility`` | feasibility rates per algorithm |
| ``pairwise`` | the lexicographic verdict family per pair; descriptive secondary differences |
| ``profiles`` | performance profiles and Pareto fronts |
| ``curves`` | convergence bands |
| ``tuning_curves`` | expected best feasible validation objective of n configurations |
| ``tasks`` | aggregates across tasks: normalised scores, stratified bootstrap, Friedman, CD |

Shape conventions, the same in every module:

* An *array of scores* is 1-D, shape ``(num_runs,)``: one value per seed of one configuration.
  The tests (``two_sample``) and the corrections also take stacks, shape ``(..., num_runs)``
  and ``(..., m)``, and work along the last axis, so simulations run thousands of repetitions
  at once.
* A *trials frame* is tidy, one row per trial (a seed of a configuration), with the grouping
  columns (``algorithm``, ``config_label``), ``seed``, ``status`` and metric columns such as
  ``final_column(TEST, OBJECTIVE)`` — the frame ``Store.trials()`` returns. Column names come
  from ``ctrain_dist.store.schema``, never spelled here.
* An *evals frame* is tidy, one row per evaluation point of one trial attempt and split.
* Results are tidy frames: one row per group (× metric), the grouping columns first.

Direction: unless a function takes ``higher_is_better``, lower is better (objectives,
violations, fairness gaps are all losses). Every result is deterministic: resampling and
random permutations take an explicit seed.
"""

from ctrain_dist.analysis.stats.corrections import CORRECTIONS, benjamini_hochberg, holm
from ctrain_dist.analysis.stats.curves import convergence_bands
from ctrain_dist.analysis.stats.effects import (
    cliffs_delta,
    cohens_d,
    lexicographic_ranks,
    probability_of_improvement,
)
from ctrain_dist.analysis.stats.feasibility import feasibility
from ctrain_dist.analysis.stats.intervals import (
    CONFIDENCE,
    INTERVAL_METHODS,
    bootstrap_ci,
    iqm,
    median_interval,
    median_interval_coverage,
    newcombe_interval,
    t_interval,
    trimmed_mean_interval,
    welch_interval,
    wilson_interval,
)
from ctrain_dist.analysis.stats.outcomes import DEFAULT_TOLERANCE, outcome_counts, worst_scores
from ctrain_dist.analysis.stats.pairwise import (
    TESTS,
    descriptive_differences,
    pairs_to_compare,
    verdicts,
)
from ctrain_dist.analysis.stats.power import (
    POWER,
    SIGNIFICANCE,
    family_alpha,
    paired_power,
    paired_seeds_needed,
    seeds_needed,
    seeds_needed_from_pilot,
    welch_power,
)
from ctrain_dist.analysis.stats.profiles import pareto_front, performance_profile
from ctrain_dist.analysis.stats.selection import select_configurations
from ctrain_dist.analysis.stats.summary import DEFAULT_BY, SUMMARY_COLUMNS, summarise
from ctrain_dist.analysis.stats.tuning_curves import sensitivity, tuning_curves
from ctrain_dist.analysis.stats.two_sample import (
    feasibility_test,
    mann_whitney_u,
    minimum_feasibility_p,
    minimum_p,
    paired_t,
    welch_t,
    wilcoxon_signed_rank,
)

__all__ = [
    "CONFIDENCE",
    "CORRECTIONS",
    "DEFAULT_BY",
    "DEFAULT_TOLERANCE",
    "INTERVAL_METHODS",
    "POWER",
    "SIGNIFICANCE",
    "SUMMARY_COLUMNS",
    "TESTS",
    "benjamini_hochberg",
    "bootstrap_ci",
    "cliffs_delta",
    "cohens_d",
    "convergence_bands",
    "descriptive_differences",
    "family_alpha",
    "feasibility",
    "feasibility_test",
    "holm",
    "iqm",
    "lexicographic_ranks",
    "mann_whitney_u",
    "median_interval",
    "median_interval_coverage",
    "minimum_feasibility_p",
    "minimum_p",
    "newcombe_interval",
    "outcome_counts",
    "paired_power",
    "paired_seeds_needed",
    "paired_t",
    "pairs_to_compare",
    "pareto_front",
    "performance_profile",
    "probability_of_improvement",
    "seeds_needed",
    "seeds_needed_from_pilot",
    "select_configurations",
    "sensitivity",
    "summarise",
    "t_interval",
    "trimmed_mean_interval",
    "tuning_curves",
    "verdicts",
    "welch_interval",
    "welch_power",
    "welch_t",
    "wilcoxon_signed_rank",
    "wilson_interval",
    "worst_scores",
]
