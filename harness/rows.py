"""Result rows: one versioned schema for the three kinds of row a suite writes, a tuning trial, a
teacher and a final run, which share their provenance fields.

The store checks every row that carries a `schema_version` against its kind's model before writing it,
so a misspelt or missing field fails at the write that made it, naming the field, rather than as an
empty column in the leaderboard. Rows written before the schema existed (published runs) have no
`schema_version`; they read, and aggregate, exactly as they always did.

Besides its declared fields a row holds metric columns, `split/metric` (e.g. `test/accuracy`), each a
number (or null); any other field is refused. The rows themselves are built in `harness.row_builders`,
one function per kind; this module imports nothing of the harness's, so the store can check rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import HarnessError

SCHEMA_VERSION = 1
Status = Literal["ok", "failed"]


class RowSchemaError(HarnessError, ValueError):
    """A result row that does not match the row schema; the message names the row and the field."""


class ResultRow(BaseModel):
    """The fields every row carries: what ran, under which suite, with which code and on what."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: ClassVar[str]

    schema_version: Literal[1] = SCHEMA_VERSION
    row_id: str = Field(min_length=1)
    benchmark: str
    method: str  # the method's label (teachers: `teacher:<model>`)
    seed: int
    protocol: str | None  # None for a teacher, which serves every protocol
    dataset: str
    scenario: str | None  # the benchmark's scenario as JSON, or None
    suite_name: str
    suite_hash: str
    git_commit: str
    library_versions: str
    driver_hardware: str
    status: Status
    error: str | None
    finished_at: str
    # the audit of the job's data reads (`harness.audit`): absent from rows made before it existed, and
    # from a trial that failed before its first report
    data_files_read: str | None = None  # JSON: the declared data files opened, and the test files watched
    audit_digest: str | None = None  # sha256 of data_files_read, which `harness.verify` recomputes
    # the engine's speed modes the job trained with (`harness.engine_modes`): absent from rows made before
    # they existed (which trained fp32, NCHW, eager on CPU), and from trial rows
    engine_precision: Literal["fp32", "bf16"] | None = None
    engine_channels_last: bool | None = None
    engine_compile: bool | None = None
    engine_fallbacks: str | None = None  # a mode asked for that could not run, and why

    @model_validator(mode="after")
    def _metric_columns_only(self) -> ResultRow:
        for name, value in (self.model_extra or {}).items():
            if "/" not in name:
                raise ValueError(f"field '{name}': not a field of a {self.kind} row (declared: "
                                 f"{', '.join(type(self).model_fields)}), nor a metric column 'split/metric'")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"field '{name}': a metric column holds a number or null, got {value!r}")
        return self

    def to_row(self) -> dict[str, Any]:
        """The row as the store writes it: the fields that were given (and the schema version)."""
        return {"schema_version": self.schema_version, **self.model_dump(exclude_unset=True)}


class TunedRow(ResultRow):
    """The fields of a row whose config came from a tuning study (a trial, or a final run of what it chose);
    rows made before `tuning.repeats` existed have none: one study, TPE with a random start."""

    study: int = 0  # which of the cell's `tuning.repeats` independent studies
    sampler: str | None = None  # `tuning.sampler`: tpe or sobol_tpe
    sampler_settings: str | None = None  # JSON: the study's sampler seed and start (`harness.plan.SamplerChoice`)
    tuning_objective: str | None = None  # JSON: the metric, mode and floors that select (`harness.objective`)


class TrialRow(TunedRow):
    """One tuning trial: its config, how it ended and its last reported scores (on tune_val)."""

    kind: ClassVar[str] = "tune"
    phase: Literal["tune"]
    method_name: str
    trial: str  # the trial number, zero-padded: "0003"
    trial_index: int
    config_json: str
    config_hash: str
    splits_read: str
    wall_s: float
    node_id: str


class TeacherRow(ResultRow):
    """One teacher training, for one phase and seed; students of that phase and seed learn from it."""

    kind: ClassVar[str] = "teacher"
    phase: Literal["teacher"]
    tune_phase: Literal["tune", "final"]
    config_json: str
    started_at: str
    wall_s: float | None = None  # absent when it failed
    splits_read: str | None = None
    node_id: str | None = None


class FinalRow(TunedRow):
    """One final run: the cell's tuned config retrained for one seed and evaluated on test."""

    kind: ClassVar[str] = "final"
    phase: Literal["final"]
    method_name: str
    primary_metric: str
    config_json: str | None  # None when no trial succeeded, so there was no config to retrain
    config_hash: str
    started_at: str
    wall_s: float | None = None  # the driver's clock since the previous run of its group landed (or the group began)
    node_id: str | None = None
    hardware: str | None = None
    world_size: int | float | None = None
    splits_read: str | None = None
    scenario_record: str | None = None
    reused_from: str | None = None  # the row of the identical run (same config and seed) of another protocol
    look: int | None = None  # the look of a sequential final phase (`final.seeds: {min, max}`) that added it
    selection_fallback: str | None = None  # set when no trial cleared the objective's floors: what was chosen instead


ROW_KINDS: dict[str, type[ResultRow]] = {kind.kind: kind for kind in (TrialRow, TeacherRow, FinalRow)}


def check_row(row: Mapping[str, Any]) -> None:
    """Raise RowSchemaError, naming the field, if a row that carries a `schema_version` breaks its schema.

    A row without `schema_version` predates the schema and is left as it is."""
    if "schema_version" not in row:
        return
    where = f"result row {row.get('row_id')!r}"
    if row["schema_version"] != SCHEMA_VERSION:
        raise RowSchemaError(f"{where}: field 'schema_version': {row['schema_version']!r} is not a known "
                             f"version (this code writes and checks version {SCHEMA_VERSION})")
    kind = ROW_KINDS.get(str(row.get("phase")))
    if kind is None:
        raise RowSchemaError(f"{where}: field 'phase': {row.get('phase')!r} is not one of {', '.join(ROW_KINDS)}")
    try:
        kind.model_validate(dict(row))
    except ValidationError as error:
        raise RowSchemaError(f"{where}: {_first_problem(error)}") from None


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # raised by a model validator, which names the field itself
        return message
    field = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        return f"field '{field}': required, but the row has none"
    return f"field '{field}': {message} (got {first.get('input')!r})"


# ---------------------------------------------------------------- shared by the row builders (`harness.row_builders`)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def error_text(error: BaseException) -> str:
    """A failed row's `error`: the last meaningful line of the error (Ray wraps the worker's traceback around it)."""
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    cause = lines[-1] if lines else type(error).__name__
    return f"{type(error).__name__}: {cause}"[:2000]
