"""The tuning objective: which tune_val score picks a cell's config, in which direction, under which floors.

A claim judged on PGD accuracy, AURC or OOD AUROC is best tested with configs selected on that score,
not on clean accuracy (issue 13, part 3). A suite sets `tuning.objective` (or one method its own
`methods[i].tuning_objective`); each trial then computes those columns on tune_val at every report, ASHA
and TPE follow the objective's metric, and the best trial is the best one that clears every floor
(`floor: {val/accuracy: 0.7}`: a robust config that forgot how to classify never wins). When no trial
clears the floors, selection falls back to the best trial on the metric alone, and says so on the rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from harness.columns import higher_is_better
from harness.evaluation import METRICS, EvaluationSettings
from harness.evaluation.ood import SYNTHETIC_OOD_SETS
from harness.schema import Strict

TUNING_SPLIT = "val"  # the prefix of every score a tuning trial reports, whatever split its protocol scores on
ALWAYS_REPORTED = "val/accuracy"  # every trial reports it, computed as it always was
OBJECTIVE_KEY = "objective"  # the value Tune's schedulers and searchers see: the cell's objective metric


class TuningObjective(Strict):
    """What selects a cell's config: `metric` (a tune_val column) in direction `mode`, among the trials
    whose `floor` columns reach their values (at least, for a higher-is-better column; at most otherwise)."""

    metric: str = Field(description="a tune_val column, e.g. val/pgd_linf_accuracy or val/aurc")
    mode: Literal["max", "min"] | None = Field(None, description="default: the column's declared direction")
    floor: dict[str, float] = Field({}, description="tune_val column -> the value a trial must reach to be "
                                    "selected, e.g. {val/accuracy: 0.7}")

    @property
    def direction(self) -> Literal["max", "min"]:
        if self.mode is not None:
            return self.mode
        return "max" if higher_is_better(self.metric) else "min"

    def columns(self) -> tuple[str, ...]:
        """Every tune_val column the objective reads: its metric, then its floors'."""
        return tuple(dict.fromkeys([self.metric, *self.floor]))

    def describe(self) -> str:
        """As a row records it: JSON with the direction resolved."""
        return json.dumps({"metric": self.metric, "mode": self.direction, "floor": dict(sorted(self.floor.items()))},
                          sort_keys=True)


def tuning_settings(settings: EvaluationSettings) -> EvaluationSettings:
    """The evaluation settings a tuning trial scores with: the benchmark's, with only its synthetic OOD
    sets (another dataset's images are its test split, which tuning never reads)."""
    synthetic = tuple(name for name in settings.ood_sets if name in SYNTHETIC_OOD_SETS)
    return settings.model_copy(update={"ood_sets": synthetic})


def tuning_columns(settings: EvaluationSettings) -> list[str]:
    """Every tune_val column a tuning trial can compute under `settings`."""
    scored = tuning_settings(settings)
    return [column for name in METRICS.names() for column in METRICS.get(name).column_names(TUNING_SPLIT, scored)]


def metric_computing(column: str, settings: EvaluationSettings) -> str | None:
    """The registered metric whose tune_val columns include `column` (None: no metric computes it)."""
    scored = tuning_settings(settings)
    for name in METRICS.names():
        if column in METRICS.get(name).column_names(TUNING_SPLIT, scored):
            return name
    return None


def metrics_for(objective: TuningObjective, settings: EvaluationSettings) -> tuple[str, ...]:
    """The registered metrics a trial must evaluate on tune_val for `objective` (beyond val/accuracy)."""
    names = [metric_computing(column, settings) for column in objective.columns() if column != ALWAYS_REPORTED]
    return tuple(dict.fromkeys(name for name in names if name is not None))


def uncomputable_column(objective: TuningObjective, settings: EvaluationSettings) -> str | None:
    """The first column of `objective` no tuning trial can compute, or None when it computes them all."""
    return next((column for column in objective.columns()
                 if column != ALWAYS_REPORTED and metric_computing(column, settings) is None), None)


@dataclass(frozen=True)
class Selection:
    """The chosen trial (None when no trial scored) and, when no trial cleared the floors, why the fallback."""

    trial: Mapping[str, Any] | None
    fallback: str | None = None


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(float(value))


def clears_floor(trial: Mapping[str, Any], floor: Mapping[str, float]) -> bool:
    """Whether every floor column of the trial reached its value (a missing or NaN score does not)."""
    for column, value in floor.items():
        score = trial.get(column)
        if not _finite(score):
            return False
        if (float(score) < value) if higher_is_better(column) else (float(score) > value):
            return False
    return True


def select(trials: Sequence[Mapping[str, Any]], objective: TuningObjective) -> Selection:
    """The successful trial with the best objective among those clearing the floors; ties go to the earliest.

    If none clears them, the best on the metric alone, with the fallback stated: a cell still gets a
    config to retrain (its rows say it is below the floor) rather than silently none or a wrong one."""
    scored = [t for t in trials if t.get("status") == "ok" and _finite(t.get(objective.metric))]
    if not scored:
        return Selection(None)
    passing = [t for t in scored if clears_floor(t, objective.floor)]
    sign = 1.0 if objective.direction == "max" else -1.0

    def best(pool: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        return max(pool, key=lambda t: (sign * float(t[objective.metric]), -int(t.get("trial_index", 0))))

    if passing:
        return Selection(best(passing))
    floors = ", ".join(f"{column} {'>=' if higher_is_better(column) else '<='} {value:g}"
                       for column, value in sorted(objective.floor.items()))
    return Selection(best(scored), f"no trial of {len(scored)} cleared the floor ({floors}); chose the best on "
                                   f"{objective.metric} alone")


class TunedConfig(dict[str, Any]):
    """A study's chosen config (flat `train.x` / `method.y` keys, as a plain dict everywhere) that also says
    whether it was chosen as a fallback, so the final rows retraining it can say so (`selection_fallback`)."""

    def __init__(self, params: Mapping[str, Any], fallback: str | None = None) -> None:
        super().__init__(params)
        self.fallback = fallback
