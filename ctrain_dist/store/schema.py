"""Every column of the store: its name, type, unit and meaning, declared once.

The schema owns the names: writers (trainer records, metrics) and readers (stats, reports)
take them from here, as the constants below or, for a family of columns (one per
hyperparameter, constraint, group or split), from the function that builds its members'
names. A renamed column is then one edit, and a typo is an ``ImportError`` instead of a
silently empty column. ``docs/store-schema.md`` is generated from :data:`SCHEMA`
(``ctrain store schema``), and writers cast every declared column to its declared type.

A family is declared by its name pattern, e.g. ``group_loss_<g>``: the function that names
its members is called with the ``<placeholder>`` in place of the member, so the pattern in the
docs and the names in the files cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = b"ctrain.schema_version"
"""File metadata key: the schema version the file was written under."""
TABLE_KEY = b"ctrain.table"
"""File metadata key: the table the file belongs to."""
REPLACES_KEY = b"ctrain.replaces"
"""File metadata key of a compacted file: JSON list of the file names whose rows it holds."""

# Column names. Both tables start with the identity columns. -------------------------------

SWEEP_ID = "sweep_id"
"""The partition key: held by the directory ``sweep_id=<id>``, never inside a file."""
TRIAL_ID = "trial_id"
ATTEMPT_ID = "attempt_id"
ALGORITHM = "algorithm"
CONFIG_LABEL = "config_label"
SEED = "seed"

# trials
CONSTRAINED = "constrained"
STATUS = "status"
ERROR = "error"
CONFIG_JSON = "config_json"
STARTED_AT = "started_at"
ENDED_AT = "ended_at"
WALL_TIME_S = "wall_time_s"
STEPS = "steps"
RESUMED_FROM_STEP = "resumed_from_step"
SAMPLES = "samples"  # in evals too: samples drawn so far
EPOCHS = "epochs"
TRAIN_TIME_S = "train_time_s"
COMPILE_TIME_S = "compile_time_s"
WORKERS = "workers"
PACKED_WITH = "packed_with"
PLUGINS = "plugins"
DATASET = "dataset"
CONSTRAINT_NAMES = "constraint_names"
GROUP_NAMES = "group_names"
DEVICE = "device"
HOST = "host"
GIT_COMMIT = "git_commit"
CTRAIN_VERSION = "ctrain_version"
PYTHON_VERSION = "python_version"
VERSIONED_PACKAGES: tuple[str, ...] = ("torch", "ray", "pyarrow", "pandas", "numpy")
"""Packages whose version every trials row records, as ``<package>_version``."""

# evals
SPLIT = "split"
STEP = "step"
EPOCH = "epoch"
TIME_S = "time_s"
OBJECTIVE = "objective"
ACCURACY = "accuracy"
AUC = "auc"
MAX_VIOLATION = "max_violation"
DP_GAP = "dp_gap"
AUC_M = "auc_m"
IND = "ind"
SP = "sp"
INA = "ina"
SF = "sf"
WD = "wd"
LOSS_GAP = "loss_gap"
ESTIMATES = "estimates"

PAPER_METRICS: dict[str, str] = {
    AUC_M: "AUC_M",
    IND: "Ind",
    SP: "Sp",
    INA: "Ina",
    SF: "Sf",
    WD: "Wd",
    LOSS_GAP: "|L0−L1|",
}
"""Column → the paper's name, in the order of the paper's results table."""

GROUP_RATES: tuple[str, ...] = ("loss", "positive_rate", "tpr", "fpr", "ppv", "npv", "auc")
"""Per-group columns, written ``group_<rate>_<g>`` for each group id ``g``."""

# Values of the split and status columns.
TRAIN, VAL, TEST = "train", "val", "test"
SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST)
STATUS_FINISHED, STATUS_DIVERGED, STATUS_ERROR = "finished", "diverged", "error"
STATUS_STOPPED = "stopped"
"""Stopped early by a tuning scheduler (ASHA): judged, so never run again; no final metrics."""
TERMINAL_STATUSES: frozenset[str] = frozenset({STATUS_FINISHED, STATUS_DIVERGED, STATUS_STOPPED})
"""Outcomes of the algorithm: a trial whose kept attempt has one is never run again."""


# Families: a member's name, or with a ``<placeholder>`` argument the family's pattern. --------


def hyperparameter_column(name: str) -> str:
    """The ``trials`` column of hyperparameter ``name``."""
    return f"hp_{name}"


def final_column(split: str, metric: str) -> str:
    """The ``trials`` column holding an attempt's last ``metric`` on ``split``."""
    return f"final_{split}_{metric}"


def version_column(package: str) -> str:
    """The ``trials`` column holding the installed version of ``package``."""
    return f"{package}_version"


def constraint_column(index: int | str) -> str:
    """The ``evals`` column holding the value of constraint ``index``."""
    return f"constraint_{index}"


def group_column(rate: str, group: int | str) -> str:
    """The ``evals`` column holding ``rate`` of group ``group``."""
    return f"group_{rate}_{group}"


def multiplier_column(index: int | str) -> str:
    """The ``evals`` column holding the dual variable of constraint ``index``."""
    return f"multiplier_{index}"


def empty_group_column(index: int | str) -> str:
    """The ``evals`` column counting the estimates that left constraint ``index`` undefined."""
    return f"empty_group_estimates_{index}"


# Declarations ---------------------------------------------------------------------------------

_STRING, _BOOL, _INT, _FLOAT = pa.string(), pa.bool_(), pa.int64(), pa.float64()
_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One column of a table, or a family of columns when ``name`` holds a ``<placeholder>``.

    ``type`` None means the type follows the values (only for ``hp_<name>``: float64 when every
    value is numeric, else what pyarrow infers).
    """

    name: str
    type: pa.DataType | None
    unit: str
    description: str

    @property
    def is_family(self) -> bool:
        return "<" in self.name

    @property
    def prefix(self) -> str:
        return self.name.split("<", 1)[0]

    def matches(self, name: str) -> bool:
        if self.is_family:
            return name.startswith(self.prefix) and len(name) > len(self.prefix)
        return name == self.name


@dataclass(frozen=True)
class TableSchema:
    """A table's meaning, its key (unique across the store) and its columns.

    A column declared twice is refused: the docs would show it twice, and which declaration a
    writer casts to would depend on the order.
    """

    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        names = [column.name for column in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"table {self.name!r} declares {', '.join(repeated)} more than once")

    def column(self, name: str) -> Column | None:
        """The declaration ``name`` falls under (exact names before families), or None."""
        exact = [c for c in self.columns if not c.is_family and c.matches(name)]
        families = [c for c in self.columns if c.is_family and c.matches(name)]
        found = exact or sorted(families, key=lambda c: -len(c.prefix))
        return found[0] if found else None


def _identity_columns(row: str) -> tuple[Column, ...]:
    return (
        Column(
            SWEEP_ID,
            _STRING,
            "",
            "The sweep (the spec's `name`). Held by the directory `sweep_id=<id>`, not stored "
            "in files; every hive-partitioning reader restores it.",
        ),
        Column(
            TRIAL_ID,
            _STRING,
            "",
            "`<algorithm>-s<seed>-<12 hex>`: a hash of the trial's whole configuration without "
            "the sweep id, stable across runs and machines; what resume matches on.",
        ),
        Column(
            ATTEMPT_ID,
            _STRING,
            "",
            f"32 hex digits (uuid4), new for every attempt of the trial: {row}.",
        ),
        Column(ALGORITHM, _STRING, "", "Algorithm name (`ctrain algorithms`)."),
        Column(
            CONFIG_LABEL,
            _STRING,
            "",
            "The configuration without the seed, e.g. `ssl_alm(lr=0.05, rho=1)`: what results "
            "are grouped by across seeds.",
        ),
        Column(SEED, _INT, "", "Seed of the trial: model initialisation and minibatch order."),
    )


TRIALS = TableSchema(
    name="trials",
    description=(
        "One row per attempt of a trial: a Ray retry, a SLURM requeue or a resume from a "
        "checkpoint is a new attempt with a new `attempt_id`. Readers keep one attempt per "
        "trial by default: a terminal one (`finished`, `diverged`) over an `error`, then the "
        "latest `ended_at`, then the larger `attempt_id`."
    ),
    key=(SWEEP_ID, TRIAL_ID, ATTEMPT_ID),
    columns=(
        *_identity_columns("a retry, requeue or resume is a new attempt"),
        Column(CONSTRAINED, _BOOL, "", "Whether the algorithm enforces the constraints."),
        Column(
            STATUS,
            _STRING,
            "",
            "`finished` (budget spent), `diverged` (non-finite loss at an evaluation point), "
            "`stopped` (stopped early by the tuning scheduler; see `error` for the step) or "
            "`error` (the attempt raised; see `error`).",
        ),
        Column(
            ERROR,
            _STRING,
            "",
            "Traceback tail (at most 4,000 characters); null unless `status` is `error`.",
        ),
        Column(CONFIG_JSON, _STRING, "JSON", "The whole trial configuration (sorted keys)."),
        Column(
            hyperparameter_column("<name>"),
            None,
            "",
            "One column per hyperparameter of the algorithm; float64 when numeric.",
        ),
        Column(STARTED_AT, _TIMESTAMP, "UTC", "When the attempt started."),
        Column(ENDED_AT, _TIMESTAMP, "UTC", "When the attempt ended (or was recorded)."),
        Column(
            WALL_TIME_S,
            _FLOAT,
            "s",
            "`ended_at − started_at`: data loading and evaluation included.",
        ),
        Column(STEPS, _INT, "steps", "Algorithm steps taken."),
        Column(
            RESUMED_FROM_STEP,
            _INT,
            "steps",
            "The step of the checkpoint the attempt resumed from (0: it trained from the "
            "start; a seed of a pack that had ended before that checkpoint: its `steps`); "
            "the attempt itself trained `steps − resumed_from_step` steps.",
        ),
        Column(SAMPLES, _INT, "examples", "Training examples drawn (every oracle call)."),
        Column(EPOCHS, _FLOAT, "epochs", "`samples` / rows of the train split."),
        Column(TRAIN_TIME_S, _FLOAT, "s", "Training time, evaluation excluded."),
        Column(
            COMPILE_TIME_S,
            _FLOAT,
            "s",
            "Time the attempt's steps spent compiling (`training.compile`; 0 eager), apart "
            "from `train_time_s`, which excludes it: a seconds budget is not charged for it.",
        ),
        Column(WORKERS, _INT, "processes", "Data-parallel ranks that trained the attempt."),
        Column(
            PACKED_WITH,
            _STRING,
            "JSON",
            "List of the `trial_id`s of the seeds trained together with this one as one batched "
            "computation (`seeds_per_trial`), itself included; null when it trained alone.",
        ),
        Column(
            PLUGINS,
            _STRING,
            "JSON",
            "The user code the trial ran (`model.factory`, constraint classes by import path or "
            "entry point): `{field: {path, options, sha256}}`, sha256 of the module's file; "
            "null when it ran built-ins only.",
        ),
        Column(
            DATASET,
            _STRING,
            "",
            "The data the attempt trained on: `adult`, `<task> <states> <year> <horizon>` for "
            "Folktables (marked when synthetic), `table:<file>` for a user table.",
        ),
        Column(
            CONSTRAINT_NAMES,
            _STRING,
            "JSON",
            "List of constraint names, in the order of `constraint_<i>`.",
        ),
        Column(GROUP_NAMES, _STRING, "JSON", "List of group names, in the order of `<g>`."),
        Column(
            final_column("<split>", "<metric>"),
            _FLOAT,
            "as in evals",
            "The last evaluation of the attempt: every metric column of `evals` (`objective`, "
            "`accuracy`, `constraint_0`, …) for each split (`train`, `val`, `test`).",
        ),
        Column(
            DEVICE,
            _STRING,
            "",
            "Torch device of rank 0, e.g. `cpu`, `cuda:0`; empty on "
            "an error row written by the driver.",
        ),
        Column(HOST, _STRING, "", "Host name of the process that built the row."),
        Column(GIT_COMMIT, _STRING, "", "Commit of the ctrain-dist checkout, or `unknown`."),
        Column(CTRAIN_VERSION, _STRING, "", "ctrain-dist version."),
        Column(PYTHON_VERSION, _STRING, "", "Python version."),
        *(
            Column(
                version_column(package),
                _STRING,
                "",
                f"{package} version (`absent` if not installed).",
            )
            for package in VERSIONED_PACKAGES
        ),
    ),
)

_GROUP_RATE_TEXT: dict[str, tuple[str, str]] = {
    "loss": ("nats", "Mean binary cross-entropy of group g."),
    "positive_rate": (
        "fraction",
        "Share of group g predicted positive; NaN if the split has no member of g.",
    ),
    **{
        rate: ("fraction", f"{text} of group g; NaN where undefined (no member, no positive, …).")
        for rate, text in (
            ("tpr", "True positive rate"),
            ("fpr", "False positive rate"),
            ("ppv", "Positive predictive value"),
            ("npv", "Negative predictive value"),
            ("auc", "ROC AUC"),
        )
    },
}
"""Unit and meaning of each of ``GROUP_RATES``, in its order."""

EVALS = TableSchema(
    name="evals",
    description=(
        "One row per evaluation point and split of an attempt: its whole curve. Points are "
        "taken at step 0, every `eval_every` steps and at the end; a resumed attempt re-emits "
        "the points before its checkpoint under its own `attempt_id`. Readers return the rows "
        "of the attempts that `trials` keeps unless asked for all."
    ),
    key=(SWEEP_ID, ATTEMPT_ID, SPLIT, STEP),
    columns=(
        *_identity_columns("the attempt whose curve this row is a point of"),
        Column(SPLIT, _STRING, "", "`train`, `val` or `test`."),
        Column(STEP, _INT, "steps", "Algorithm steps taken so far."),
        Column(SAMPLES, _INT, "examples", "Training examples drawn so far."),
        Column(EPOCH, _FLOAT, "epochs", "`samples` / rows of the train split."),
        Column(TIME_S, _FLOAT, "s", "Training time so far, evaluation excluded."),
        Column(OBJECTIVE, _FLOAT, "nats", "Mean binary cross-entropy on the split."),
        Column(ACCURACY, _FLOAT, "fraction", "Share of rows classified right (logit > 0)."),
        Column(AUC, _FLOAT, "fraction", "ROC AUC; NaN when the split holds one class."),
        Column(
            MAX_VIOLATION,
            _FLOAT,
            "as constraints",
            "`max(0, max_i constraint_i)`: 0 exactly when the split is feasible.",
        ),
        Column(DP_GAP, _FLOAT, "fraction", "Largest minus smallest group positive rate."),
        Column(AUC_M, _FLOAT, "fraction", "Mean over groups of the per-group ROC AUC."),
        Column(
            IND,
            _FLOAT,
            "fraction",
            "Independence: `|PR_a − PR_b|` of the worst pair of "
            "groups (PR: positive prediction rate).",
        ),
        Column(
            SP,
            _FLOAT,
            "fraction",
            "Separation: `|TPR_a − TPR_b| + |FPR_a − FPR_b|`, worst pair of groups.",
        ),
        Column(INA, _FLOAT, "fraction", "Inaccuracy: `1 − accuracy`."),
        Column(
            SF,
            _FLOAT,
            "fraction",
            "Sufficiency: `|PPV_a − PPV_b| + |NPV_a − NPV_b|`, worst pair of groups.",
        ),
        Column(
            WD,
            _FLOAT,
            "probability",
            "Wasserstein-1 distance between two groups' "
            "distributions of predicted probability, worst pair.",
        ),
        Column(
            LOSS_GAP,
            _FLOAT,
            "nats",
            "`|L_a − L_b|`, L a group's mean binary cross-entropy, worst pair.",
        ),
        Column(
            constraint_column("<i>"),
            _FLOAT,
            "as the constraint",
            "Strict value of constraint i with its bound folded in (feasible when ≤ 0); names "
            "in `trials.constraint_names`.",
        ),
        *(
            Column(group_column(rate, "<g>"), _FLOAT, *_GROUP_RATE_TEXT[rate])
            for rate in GROUP_RATES
        ),
        Column(
            multiplier_column("<i>"),
            _FLOAT,
            "",
            "Dual variable of constraint i (absent for algorithms without duals).",
        ),
        Column(
            ESTIMATES,
            _INT,
            "oracle calls",
            "Constraint estimates (minibatches drawn by the algorithm) so far; the denominator "
            "of `empty_group_estimates_<i>`.",
        ),
        Column(
            empty_group_column("<i>"),
            _INT,
            "oracle calls",
            "Estimates so far whose (global) minibatch held no row of a group, or (group, "
            "label) cell, that constraint i compares: it then contributed no value, gradient, "
            "dual or switching update, and its multiplier kept its value.",
        ),
    ),
)

SCHEMA: dict[str, TableSchema] = {TRIALS.name: TRIALS, EVALS.name: EVALS}
"""The single definition of the store's columns; writers cast to it, the docs render it."""
TABLES: tuple[str, ...] = tuple(SCHEMA)


def undeclared_columns(table: str, names: list[str]) -> list[str]:
    """The names among ``names`` that :data:`SCHEMA` does not declare for ``table``."""
    return [name for name in names if SCHEMA[table].column(name) is None]


def _type_text(column: Column) -> str:
    if column.type is None:
        return "double if numeric, else inferred"
    return str(column.type)


def schema_markdown() -> str:
    """``docs/store-schema.md``: the tables of :data:`SCHEMA` and the file conventions."""
    lines = [
        "# Store schema",
        "",
        "Generated from `ctrain_dist.store.schema.SCHEMA` by `ctrain store schema`; a test fails",
        "when the two differ. Schema version "
        f"{SCHEMA_VERSION} (`{SCHEMA_VERSION_KEY.decode()}` in every file's metadata).",
        "",
        "## Files",
        "",
        "- `ROOT/<table>/sweep_id=<id>/part-<uuid>.parquet`: one file per writer flush, written",
        "  under a dot-prefixed temporary name and renamed, so a reader sees a whole file or none.",
        "- File metadata: `ctrain.schema_version`, `ctrain.table`, and in a file written by",
        "  `ctrain store compact` also `ctrain.replaces` (JSON list of the file names it merged;",
        "  readers drop those files while they still exist).",
        "- `<placeholder>` in a column name stands for a family of columns; a family's members",
        "  depend on the sweep (hyperparameters, number of constraints and groups), so files may",
        "  hold different sets of them: read with the union of columns.",
        "- Timestamps are UTC with microsecond precision; floats are IEEE double; NaN is a",
        "  value (e.g. AUC of a one-class split), null means absent.",
    ]
    for table in SCHEMA.values():
        lines += [
            "",
            f"## `{table.name}`",
            "",
            table.description,
            "",
            "Key (unique): " + ", ".join(f"`{name}`" for name in table.key) + ".",
            "",
            "| column | type | unit | meaning |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{c.name}` | {_type_text(c)} | {c.unit or '-'} | {c.description} |"
            for c in table.columns
        ]
    return "\n".join(lines) + "\n"
