"""Result rows: one versioned schema for the three kinds of row a suite writes, a tuning trial, a
teacher and a final run, which share their provenance fields.

The store checks every row that carries a `schema_version` against its kind's model before writing it,
so a misspelt or missing field fails at the write that made it, naming the field, rather than as an
empty column in the leaderboard. Rows written before the schema existed (published runs) have no
`schema_version`; they read, and aggregate, exactly as they always did.

Besides its declared fields a row holds metric columns, `split/metric` (e.g. `test/accuracy`), each a
number (or null); any other field is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import HarnessError
from harness.provenance import git_commit, hardware, library_versions

if TYPE_CHECKING:
    from harness.plan import Cell, FinalJob
    from harness.suite import BenchmarkSpec, Suite
    from harness.tuning import TrialRecord

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


class TrialRow(ResultRow):
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


class FinalRow(ResultRow):
    """One final run: the cell's tuned config retrained for one seed and evaluated on test."""

    kind: ClassVar[str] = "final"
    phase: Literal["final"]
    method_name: str
    primary_metric: str
    config_json: str | None  # None when no trial succeeded, so there was no config to retrain
    config_hash: str
    started_at: str
    wall_s: float | None = None
    node_id: str | None = None
    hardware: str | None = None
    world_size: int | float | None = None
    splits_read: str | None = None
    scenario_record: str | None = None
    reused_from: str | None = None  # the row of the identical run (same config and seed) of another protocol


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


# ---------------------------------------------------------------- building rows: one function per kind


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def error_text(error: BaseException) -> str:
    """A failed row's `error`: the last meaningful line of the error (Ray wraps the worker's traceback around it)."""
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    cause = lines[-1] if lines else type(error).__name__
    return f"{type(error).__name__}: {cause}"[:2000]


def trial_row_id(cell: Cell, index: int) -> str:
    return f"tune:{cell.key}:{index:04d}"


def teacher_row_id(bench: BenchmarkSpec, phase: str, seed: int) -> str:
    return f"teacher:{phase}:{bench.name}:{bench.dataset}:s{seed}"


def final_row_id(job: FinalJob) -> str:
    return f"final:{job.cell.key}:s{job.seed}"


def _provenance(suite: Suite, bench: BenchmarkSpec) -> dict[str, Any]:
    """The shared fields: the benchmark as the row's work saw it, the suite, the code and the driver's machine."""
    scenario = json.dumps(bench.scenario.model_dump(mode="json")) if bench.scenario else None
    return {"benchmark": bench.name, "dataset": bench.dataset, "scenario": scenario, "suite_name": suite.name,
            "suite_hash": suite.hash, "git_commit": git_commit(), "library_versions": library_versions(),
            "driver_hardware": hardware()}


def trial_row(suite: Suite, cell: Cell, record: TrialRecord, seed: int) -> TrialRow:
    """A tuning trial's row; `seed` is the one every trial trained with."""
    from harness.suite import stable_hash

    return TrialRow(
        row_id=trial_row_id(cell, record.index), phase="tune", method=cell.method.label, seed=seed,
        protocol=cell.protocol, **_provenance(suite, cell.tune_benchmark), **record.metrics,
        trial=f"{record.index:04d}", trial_index=record.index, status=record.status, error=record.error,
        config_json=json.dumps(record.params, sort_keys=True), config_hash=stable_hash(record.params),
        splits_read=record.splits_read, wall_s=record.wall_s, node_id=record.node_id, finished_at=now(),
        method_name=cell.method.name, **{"tune/iterations": float(record.iterations)})


def teacher_row(suite: Suite, bench: BenchmarkSpec, phase: str, seed: int, *, started_at: str, error: str | None,
                results: Mapping[str, Any] | None = None) -> TeacherRow:
    """A teacher's row: failed with `error`, else ok with the training task's `results` (its own finish time)."""
    assert bench.teacher is not None
    fields = {"row_id": teacher_row_id(bench, phase, seed), "phase": "teacher", "method": f"teacher:{bench.teacher.model}",
              "seed": seed, "protocol": None, **_provenance(suite, bench), "started_at": started_at,
              "config_json": bench.teacher.model_dump_json(), "tune_phase": phase, "finished_at": now(),
              **(results or {}), "status": "failed" if error else "ok", "error": error}
    return TeacherRow(**fields)


def final_config_hash(job: FinalJob, params: Mapping[str, Any] | None) -> str:
    """What makes two final runs the same run (with the seed): the benchmark, the method entry, the config."""
    from harness.suite import stable_hash

    cell = job.cell
    return stable_hash({"bench": cell.benchmark.model_dump(mode="json"), "method": cell.method.model_dump(mode="json"),
                        "params": params})


# a finished run's outcome besides its metric columns, which a twin (the same run under another protocol) copies
RUN_RESULT_FIELDS = ("wall_s", "hardware", "world_size", "splits_read", "scenario_record")


def run_results(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a finished final run measured (metric columns and `RUN_RESULT_FIELDS`), its nulls left out."""
    return {key: value for key, value in row.items()
            if ("/" in key or key in RUN_RESULT_FIELDS) and not _is_null(value)}


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def final_row(suite: Suite, job: FinalJob, params: Mapping[str, Any] | None, *, started_at: str,
              error: str | None, results: Mapping[str, Any] | None = None, finished_at: str | None = None,
              **outcome: Any) -> FinalRow:
    """A final run's row: failed with `error`, else ok with the run's `results`; `outcome` adds `wall_s`,
    and for a twin `reused_from` and `node_id`."""
    cell = job.cell
    fields = {**(results or {}), "row_id": final_row_id(job), "phase": "final", "method": cell.method.label,
              "seed": job.seed, "protocol": cell.protocol, **_provenance(suite, cell.benchmark),
              "method_name": cell.method.name, "primary_metric": cell.benchmark.primary_metric,
              "config_json": json.dumps(params, sort_keys=True) if params is not None else None,
              "config_hash": final_config_hash(job, params), "started_at": started_at,
              "finished_at": finished_at or now(), "status": "failed" if error else "ok", "error": error, **outcome}
    return FinalRow(**fields)
