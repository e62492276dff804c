"""What a result column means: its direction, unit, and whether a summary table shows it.

Every column the harness writes is declared once, by the code that writes it: a registered metric
declares its columns in `harness.evaluation.metrics.metric`, continual learning in
`harness.evaluation.continual`, the leaderboard its derived mCE, and this module the bookkeeping
columns the jobs write (train/*, tune/*, val/accuracy, eval/wall_s, wall_s). Consumers (leaderboard,
claims, studies, report, dashboards) ask `column_info(name)` and never guess from a name.

A declaration is a template: `{split}` matches a split name (`test`), any other `{placeholder}` one
or more of `[a-z0-9_]` (an attack, an epsilon label, an OOD set). When several match, the one with
the most literal text wins (`{split}/ood_auroc_mean` beats `{split}/ood_{set}_{score}_auroc`).

Fallback: a column nobody declares (a store written by an older harness, a plugin not loaded) gets
`declared=False`, is a summary column, and its direction is the name heuristic the harness used before
declarations existed (LEGACY_LOWER_IS_BETTER_MARKERS), so old stores re-aggregate exactly as they did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

__all__ = [
    "Column", "ColumnInfo", "column_info", "declare_columns", "declared_columns", "higher_is_better",
    "is_detail_metric", "summary_metrics",
]

Better = Literal["higher", "lower"]
Kind = Literal["summary", "detail"]

# Before declarations, direction was guessed from these substrings; kept only for undeclared columns.
LEGACY_LOWER_IS_BETTER_MARKERS = (
    "nll", "ece", "brier", "latency", "flops", "params", "wall_s", "error", "loss", "aurc", "risk", "fpr",
    "/rc_", "mce", "forgetting", "memory",
)  # fmt: skip

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Column:
    """The declared meaning of one column, or of every column a template names.

    `detail` columns are curve points and per-part breakdowns: the dashboard draws them as figures and
    a summary table leaves them out in favour of their aggregate (AUAC, mean corruption accuracy...).
    """

    template: str  # e.g. "{split}/accuracy", "{split}/adv_{attack}_e{eps}_accuracy", "train/flops"
    better: Better
    unit: str  # "fraction", "nats", "ms", "bytes", "FLOPs", "count", "code" (an enumerated condition)...
    kind: Kind = "summary"

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"column {self.template!r}: better must be 'higher' or 'lower', got {self.better!r}")
        if self.kind not in ("summary", "detail"):
            raise ValueError(f"column {self.template!r}: kind must be 'summary' or 'detail', got {self.kind!r}")
        if not self.template or "/" not in self.template:
            raise ValueError(f"column template {self.template!r} must be 'group/name' (e.g. '{{split}}/accuracy')")

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        parts, last = [], 0
        for match in _PLACEHOLDER.finditer(self.template):
            parts.append(re.escape(self.template[last : match.start()]))
            parts.append("[^/]+" if match[1] == "split" else "[a-z0-9_]+")
            last = match.end()
        parts.append(re.escape(self.template[last:]))
        return re.compile("".join(parts))

    @cached_property
    def literal_length(self) -> int:
        """Characters outside placeholders: how specific the template is."""
        return len(_PLACEHOLDER.sub("", self.template))

    def matches(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None


@dataclass(frozen=True)
class ColumnInfo:
    """What `column_info` answers for one concrete column name."""

    name: str
    higher_is_better: bool
    unit: str
    detail: bool
    declared: bool  # False: nobody declares it, the documented fallback applies
    owner: str = ""  # who declared it: a metric's name, "continual", "harness", "leaderboard"


_DECLARED: dict[str, tuple[str, Column]] = {}  # template -> (owner, declaration)


def declare_columns(owner: str, columns: Iterable[Column]) -> None:
    """Record what `owner`'s columns mean; the same template twice must mean the same thing."""
    for column in columns:
        if not isinstance(column, Column):
            raise TypeError(
                f"{owner}: declare each column as harness.columns.Column(template, better, unit, kind), "
                f"got {column!r}"
            )
        known = _DECLARED.get(column.template)
        if known is not None and known[1] != column:
            raise ValueError(
                f"column {column.template!r} is declared by '{known[0]}' as {known[1]} and by '{owner}' as "
                f"{column}: one column has one meaning"
            )
        _DECLARED[column.template] = (owner, column)


def declared_columns() -> dict[str, tuple[str, Column]]:
    """Every declaration so far: template -> (owner, Column)."""
    return dict(_DECLARED)


def _declaration(name: str) -> tuple[str, Column] | None:
    exact = _DECLARED.get(name)
    if exact is not None:
        return exact
    matching = [entry for entry in _DECLARED.values() if entry[1].matches(name)]
    return max(matching, key=lambda entry: entry[1].literal_length, default=None)


def column_info(name: str) -> ColumnInfo:
    """Direction, unit and summary/detail of column `name` (a `:mean`-style statistic suffix is ignored).

    Undeclared columns get the fallback described in the module docstring (`declared=False`).
    """
    base = name.split(":", 1)[0]
    found = _declaration(base)
    if found is None:
        legacy_up = not any(marker in base for marker in LEGACY_LOWER_IS_BETTER_MARKERS)
        return ColumnInfo(name=base, higher_is_better=legacy_up, unit="", detail=False, declared=False)
    owner, column = found
    return ColumnInfo(
        name=base, higher_is_better=column.better == "higher", unit=column.unit,
        detail=column.kind == "detail", declared=True, owner=owner,
    )  # fmt: skip


def higher_is_better(metric: str) -> bool:
    """Direction of a column, from its declaration (`test/accuracy` up, `test/ece` down)."""
    return column_info(metric).higher_is_better


def is_detail_metric(metric: str) -> bool:
    """True for curve points and breakdowns that a summary table leaves to the figures."""
    return column_info(metric).detail


def summary_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics a summary table shows: everything but detail columns, order kept."""
    return [metric for metric in metrics if not is_detail_metric(metric)]


# ---------------------------------------------------------------- columns the jobs write outside metrics


def _harness_columns() -> list[Column]:
    """Bookkeeping the training and tuning jobs write. Counts of what ran (steps, epochs, workers) have no
    better side; they are declared "higher" as the name heuristic always read them, so nothing moves."""
    up, down = "higher", "lower"
    return [
        Column("train/flops", down, "FLOPs"),  # cost: less is cheaper for the same result
        Column("train/samples_seen", down, "count"),
        Column("train/wall_s", down, "s"),
        Column("train/final_loss", down, "nats"),
        Column("train/steps", up, "count"),
        Column("train/epochs", up, "count"),
        Column("train/resumed_from_epoch", up, "count"),
        Column("tune/iterations", up, "count"),
        Column("tune/workers", up, "count"),
        Column("val/accuracy", up, "fraction"),  # a tuning trial's objective
        Column("eval/wall_s", down, "s"),
        Column("cost/{metric}_s", down, "s"),  # seconds each metric took (`evaluate` adds them)
    ]


declare_columns("harness", _harness_columns())
