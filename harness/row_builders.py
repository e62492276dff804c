"""Building result rows: one function per kind of row (trial, teacher, final run), and their row ids.

Every row a suite writes is made here, from the plan's cells and jobs and what the work reported, as a
typed row of `harness.rows`' schema; the runner and the teachers only say what happened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.objective import TunedConfig
from harness.plan import study_key
from harness.provenance import git_commit, hardware, library_versions
from harness.rows import FinalRow, TeacherRow, TrialRow, now
from harness.seed_plan import SequentialSeeds, look_of
from harness.suite import stable_hash

if TYPE_CHECKING:
    from harness.plan import Cell, FinalJob, Study
    from harness.suite import BenchmarkSpec, Suite
    from harness.tuning import TrialRecord


def trial_row_prefix(cell: Cell, study: int = 0) -> str:
    """What every trial row id of the cell's study `study` starts with (study 0's as before repeats existed)."""
    return f"tune:{study_key(cell.key, study)}:"


def trial_row_id(cell: Cell, index: int, study: int = 0) -> str:
    return f"{trial_row_prefix(cell, study)}{index:04d}"


def teacher_row_id(bench: BenchmarkSpec, phase: str, seed: int) -> str:
    return f"teacher:{phase}:{bench.name}:{bench.dataset}:s{seed}"


def final_row_id(job: FinalJob) -> str:
    return f"final:{job.study_key}:s{job.seed}"


def _tuning_fields(study: int, sampler: Any, objective: Any) -> dict[str, Any]:
    """The study a row's config came from, its sampler and the objective that selected (`harness.rows.TunedRow`)."""
    fields: dict[str, Any] = {"study": study}
    if sampler is not None:
        fields.update(sampler=sampler.name, sampler_settings=sampler.describe())
    if objective is not None:
        fields["tuning_objective"] = objective.describe()
    return fields


def _provenance(suite: Suite, bench: BenchmarkSpec) -> dict[str, Any]:
    """The shared fields: the benchmark as the row's work saw it, the suite, the code and the driver's machine."""
    scenario = json.dumps(bench.scenario.model_dump(mode="json")) if bench.scenario else None
    return {"benchmark": bench.name, "dataset": bench.dataset, "scenario": scenario, "suite_name": suite.name,
            "suite_hash": suite.hash, "git_commit": git_commit(), "library_versions": library_versions(),
            "driver_hardware": hardware()}


def trial_row(suite: Suite, cell: Cell, record: TrialRecord, seed: int, study: Study | None = None) -> TrialRow:
    """A tuning trial's row; `seed` is the one every trial trained with, `study` the one that proposed it."""
    tuning = _tuning_fields(study.index, study.sampler, study.cell_plan.objective) if study else {}
    return TrialRow(
        row_id=trial_row_id(cell, record.index, study.index if study else 0), phase="tune", **tuning, method=cell.method.label, seed=seed,
        protocol=cell.protocol, **_provenance(suite, cell.tune_benchmark), **record.metrics,
        trial=f"{record.index:04d}", trial_index=record.index, status=record.status, error=record.error,
        config_json=json.dumps(record.params, sort_keys=True), config_hash=stable_hash(record.params),
        splits_read=record.splits_read, wall_s=record.wall_s, node_id=record.node_id, finished_at=now(),
        method_name=cell.method.name, **record.audit, **{"tune/iterations": float(record.iterations)})


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
    cell = job.cell
    return stable_hash({"bench": cell.benchmark.model_dump(mode="json"), "method": cell.method.model_dump(mode="json"),
                        "params": params})


# a finished run's outcome besides its metric columns, which a twin (the same run under another protocol) copies
RUN_RESULT_FIELDS = ("wall_s", "hardware", "world_size", "splits_read", "scenario_record", "data_files_read",
                     "audit_digest", "engine_precision", "engine_channels_last", "engine_compile", "engine_fallbacks")


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
    and for a twin `reused_from` and `node_id`. A `TunedConfig` chosen as a fallback says so on the row."""
    cell = job.cell
    if isinstance(params, TunedConfig) and params.fallback:
        outcome = {"selection_fallback": params.fallback, **outcome}
    fields = {**(results or {}), "row_id": final_row_id(job), "phase": "final", "method": cell.method.label,
              **_tuning_fields(job.study, job.sampler, job.objective),
              "seed": job.seed, "protocol": cell.protocol, **_provenance(suite, cell.benchmark),
              "method_name": cell.method.name, "primary_metric": cell.benchmark.primary_metric,
              "config_json": json.dumps(params, sort_keys=True) if params is not None else None,
              "config_hash": final_config_hash(job, params), "started_at": started_at,
              "finished_at": finished_at or now(), "status": "failed" if error else "ok", "error": error, **outcome}
    if isinstance(suite.final.seeds, SequentialSeeds):
        fields["look"] = look_of(suite.final.looks, suite.final.seed_order.index(job.seed))
    return FinalRow(**fields)
