"""Runs a validated suite: teachers, tuning, final runs, store, leaderboard, in that order.

The store is the source of truth: every trial, teacher and final run becomes a row the moment it
finishes, and `resume` skips whatever already has a successful row. Ray's own experiment folders
are scratch space.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness import cluster
from harness.jobs import RunSpec
from harness.method import METHODS, MethodInfo
from harness.progress import Progress
from harness.provenance import git_commit, hardware, library_versions
from harness.store import ResultStore
from harness.suite import BenchmarkSpec, MethodEntry, Suite, method_search_space, stable_hash


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def select_best_trial(trials: list[Mapping[str, Any]], metric: str, mode: str = "max") -> Mapping[str, Any] | None:
    """The successful trial with the best last-reported objective; ties go to the earliest trial."""
    scored = [t for t in trials if t.get("status") == "ok" and t.get(metric) is not None and t[metric] == t[metric]]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda t: (sign * float(t[metric]), -int(t.get("trial_index", 0))))


@dataclass(frozen=True)
class Cell:
    benchmark: BenchmarkSpec
    method: MethodEntry

    @property
    def key(self) -> str:
        return f"{self.benchmark.name}:{self.method.label}"


class SuiteRunner:
    """Drives one suite run into `run_dir` on a connected Ray cluster."""

    def __init__(self, suite: Suite, run_dir: Path, progress: Progress, cluster_info: cluster.ClusterInfo) -> None:
        self.suite, self.run_dir, self.progress, self.cluster = suite, run_dir, progress, cluster_info
        self.store = ResultStore(run_dir)
        self.cells = [Cell(b, m) for b in suite.benchmarks for m in suite.methods]
        self._teacher_cache: dict[str, bytes] = {}
        self._teacher_refs: dict[str, tuple[Any, str]] = {}

    # ------------------------------------------------------------------ rows

    def base_row(self, row_id: str, phase: str, cell_bench: str, method: str, seed: int) -> dict[str, Any]:
        return {"row_id": row_id, "phase": phase, "benchmark": cell_bench, "method": method, "seed": seed,
                "suite_name": self.suite.name, "suite_hash": self.suite.hash, "protocol": self.suite.protocol,
                "git_commit": git_commit(), "library_versions": library_versions(), "driver_hardware": hardware()}

    # ------------------------------------------------------------------ teachers

    def _teacher_paths(self, bench: BenchmarkSpec, phase: str, seed: int) -> tuple[str, Path]:
        assert bench.teacher is not None
        digest = stable_hash(bench.teacher.model_dump(mode="json"), 8)
        return f"teacher:{phase}:{bench.name}:s{seed}", self.run_dir / "teachers" / f"{phase}-{bench.name}-s{seed}-{digest}.pt"

    def prefetch_teacher(self, bench: BenchmarkSpec, phase: str, seed: int) -> None:
        """Start training a teacher in the background unless it is cached or already under way."""
        row_id, path = self._teacher_paths(bench, phase, seed)
        if row_id in self._teacher_cache or row_id in self._teacher_refs:
            return
        if path.exists() and self.store.completed(row_id):
            self._teacher_cache[row_id] = path.read_bytes()
            return
        self._teacher_refs[row_id] = (cluster.submit_teacher(bench, phase, seed, self.suite.tuning.sampler_seed,
                                                             self.suite.final.cpus_per_worker), now())

    def teacher(self, bench: BenchmarkSpec, phase: str, seed: int) -> bytes:
        """The teacher's weights for (benchmark, phase, seed): cached, or trained (once) and stored."""
        import ray

        assert bench.teacher is not None
        row_id, path = self._teacher_paths(bench, phase, seed)
        self.prefetch_teacher(bench, phase, seed)
        if row_id in self._teacher_cache:
            return self._teacher_cache[row_id]
        ref, started = self._teacher_refs.pop(row_id)
        row = self.base_row(row_id, "teacher", bench.name, f"teacher:{bench.teacher.model}", seed)
        row.update(started_at=started, config_json=bench.teacher.model_dump_json(), tune_phase=phase)
        try:
            state, metrics = ray.get(ref)
        except Exception as error:
            self.store.write({**row, "status": "failed", "error": _error_text(error), "finished_at": now()})
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state)
        tmp.replace(path)
        self.store.write({"finished_at": now(), **row, **metrics, "status": "ok", "error": None})
        scores = {k: round(v, 4) for k, v in metrics.items() if k.endswith("accuracy")}
        self.progress.say(f"  teacher {escape(bench.name)} ({phase}, seed {seed}): {json.dumps(scores)}")
        self._teacher_cache[row_id] = state
        return state

    # ------------------------------------------------------------------ tuning

    def trial_rows(self, cell: Cell) -> list[dict[str, Any]]:
        frame = self.store.read()
        if "phase" not in frame:
            return []
        rows = frame[(frame["phase"] == "tune") & (frame["benchmark"] == cell.benchmark.name)
                     & (frame["method"] == cell.method.label)]
        return rows.to_dict("records")

    def tune_all(self) -> dict[str, dict[str, Any] | None]:
        """Tune every cell (skipping finished ones); return each cell's frozen best hyper-parameters."""
        from harness.tuning import to_tune_space, tune_cell

        tuning = self.suite.tuning
        self.progress.start("tune", len(self.cells) * tuning.trials)
        best: dict[str, dict[str, Any] | None] = {}
        for cell in self.cells:  # a teacher trains while the cells before its student tune
            if self._needs_teacher(cell) and len(self.trial_rows(cell)) < tuning.trials:
                self.prefetch_teacher(cell.benchmark, "tune", tuning.sampler_seed)
        for cell in self.cells:
            existing = self.trial_rows(cell)
            if len(existing) < tuning.trials:
                space = to_tune_space(tuning.engine_space, method_search_space(cell.method))
                teacher = self.teacher(cell.benchmark, "tune", tuning.sampler_seed) if self._needs_teacher(cell) else None
                spec = RunSpec(benchmark=cell.benchmark, method=cell.method, seed=tuning.sampler_seed,
                               split_seed=tuning.sampler_seed, threads=max(1, int(tuning.cpus_per_trial)))
                started = now()
                records = tune_cell(spec, space, tuning, storage_dir=self.run_dir / "ray_tune",
                                    name=f"{cell.benchmark.name}-{cell.method.label}-{int(time.time())}",
                                    cluster_cpus=self.cluster.cpus, teacher_state=teacher,
                                    on_trial_done=lambda c=cell: self.progress.advance(
                                        "tune", f"{escape(c.benchmark.name)}/{escape(c.method.label)} trial done"))
                for record in records:
                    self.store.write(self._trial_row(cell, record, started))
                existing = self.trial_rows(cell)
            else:
                for _ in range(tuning.trials):
                    self.progress.advance("tune", f"{escape(cell.key)}: trial already stored", skipped=True)
            chosen = select_best_trial(existing, tuning.metric, tuning.mode)
            best[cell.key] = json.loads(chosen["config_json"]) if chosen else None
            if chosen:
                self.progress.say(f"  best {escape(cell.key)}: {tuning.metric}={chosen[tuning.metric]:.4f} "
                                  f"{escape(chosen['config_json'])}")
        return best

    def _trial_row(self, cell: Cell, record: Any, started: str) -> dict[str, Any]:
        row = self.base_row(f"tune:{cell.key}:{record.index:04d}", "tune", cell.benchmark.name, cell.method.label,
                            self.suite.tuning.sampler_seed)
        row.update(record.metrics)
        row.update(trial=f"{record.index:04d}", trial_index=record.index, status=record.status, error=record.error,
                   config_json=json.dumps(record.params, sort_keys=True), config_hash=stable_hash(record.params),
                   splits_read=record.splits_read, wall_s=record.wall_s, node_id=record.node_id,
                   started_at=started, finished_at=now(), method_name=cell.method.name)
        row["tune/iterations"] = float(record.iterations)
        return row

    def _method_info(self, cell: Cell) -> MethodInfo:
        return METHODS.get(cell.method.name).info

    def _needs_teacher(self, cell: Cell) -> bool:
        return self._method_info(cell).needs_teacher

    # ------------------------------------------------------------------ final runs

    def final_jobs(self, best: Mapping[str, dict[str, Any] | None]) -> Iterator[tuple[Cell, int, dict[str, Any] | None]]:
        for cell in self.cells:
            for seed in self.suite.final.seeds:
                yield cell, seed, best.get(cell.key)

    def final_all(self, best: Mapping[str, dict[str, Any] | None]) -> None:
        """Retrain every cell's frozen config for every seed, a few at a time, storing each row as it lands."""
        import ray

        from harness.final_runs import submit_final

        final = self.suite.final
        jobs = list(self.final_jobs(best))
        self.progress.start("final", len(jobs))
        slots = max(1, int(self.cluster.cpus // (final.workers * final.cpus_per_worker)))
        pending: dict[Any, tuple[dict[str, Any], float]] = {}
        queue = []
        for cell, seed, params in jobs:
            row_id = f"final:{cell.key}:s{seed}"
            if self.store.completed(row_id):
                self.progress.advance("final", f"{escape(cell.key)} seed {seed}: already stored", skipped=True)
                continue
            row = self.base_row(row_id, "final", cell.benchmark.name, cell.method.label, seed)
            row.update(method_name=cell.method.name, primary_metric=cell.benchmark.primary_metric,
                       config_json=json.dumps(params, sort_keys=True) if params is not None else None,
                       config_hash=stable_hash({"bench": cell.benchmark.model_dump(mode="json"),
                                                "method": cell.method.model_dump(mode="json"), "params": params}))
            if params is None:
                self.store.write({**row, "status": "failed", "error": "no successful tuning trial to take a config from",
                                  "started_at": now(), "finished_at": now()})
                self.progress.advance("final", f"{escape(cell.key)} seed {seed}: [red]failed[/red] (no tuned config)")
                continue
            queue.append((cell, seed, params, row))
        # teachers train while the first runs do; the costliest runs start first so the tail is short,
        # and distillation runs go last, when their teachers are ready
        for cell, seed, _, _ in queue:
            if self._needs_teacher(cell):
                self.prefetch_teacher(cell.benchmark, "final", seed)
        queue.sort(key=lambda job: (self._needs_teacher(job[0]), -self._method_info(job[0]).cost_factor))
        while queue or pending:
            while queue and len(pending) < slots:
                cell, seed, params, row = queue.pop(0)
                teacher = self.teacher(cell.benchmark, "final", seed) if self._needs_teacher(cell) else None
                spec = RunSpec(benchmark=cell.benchmark, method=cell.method, seed=seed, hyperparams=params,
                               split_seed=self.suite.tuning.sampler_seed, metrics=self.suite.evaluation.metrics,
                               threads=max(1, int(final.cpus_per_worker)))
                ref = submit_final(spec, teacher, storage_dir=str((self.run_dir / "ray_train").resolve()),
                                   name=f"{row['row_id'].replace(':', '-')}-{row['config_hash'][:8]}",
                                   workers=final.workers, cpus_per_worker=final.cpus_per_worker, use_gpu=final.use_gpu)
                pending[ref] = ({**row, "started_at": now()}, time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1)
            row, started = pending.pop(done[0])
            self._store_final(row, done[0], time.monotonic() - started)

    def _store_final(self, row: dict[str, Any], ref: Any, wall_s: float) -> None:
        import ray

        label = f"{escape(row['benchmark'])}/{escape(row['method'])} seed {row['seed']}"
        try:
            metrics = ray.get(ref)
        except Exception as error:  # the run failed: a failed row, and the suite goes on
            self.store.write({**row, "status": "failed", "error": _error_text(error), "finished_at": now(), "wall_s": wall_s})
            self.progress.advance("final", f"{label}: [red]failed[/red] {escape(_error_text(error)[:200])}")
            return
        self.store.write({**row, **metrics, "status": "ok", "error": None, "finished_at": now(), "wall_s": wall_s})
        primary = row["primary_metric"]
        self.progress.advance("final", f"{label}: {primary}={metrics.get(primary, float('nan')):.4f}")

    def run(self) -> None:
        best = self.tune_all()
        self.final_all(best)
        self.store.consolidate()


def _error_text(error: BaseException) -> str:
    """The last meaningful line of an error (Ray wraps the worker's traceback around it)."""
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    cause = lines[-1] if lines else type(error).__name__
    return f"{type(error).__name__}: {cause}"[:2000]
