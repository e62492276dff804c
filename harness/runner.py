"""Runs a validated suite: teachers, tuning, final runs, store, leaderboard, in that order.

The store is the source of truth: every trial, teacher and final run becomes a row the moment it
finishes, and `resume` skips whatever already has a successful row. Ray's own experiment folders
are scratch space.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness import cluster
from harness.jobs import RunSpec
from harness.plan import Cell, plan_suite
from harness.progress import Progress
from harness.provenance import git_commit, hardware, library_versions
from harness.storage import Storage, resolve_storage
from harness.store import ResultStore
from harness.suite import BenchmarkSpec, Suite, stable_hash


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def select_best_trial(trials: list[Mapping[str, Any]], metric: str, mode: str = "max") -> Mapping[str, Any] | None:
    """The successful trial with the best last-reported objective; ties go to the earliest trial."""
    scored = [t for t in trials if t.get("status") == "ok" and t.get(metric) is not None and t[metric] == t[metric]]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda t: (sign * float(t[metric]), -int(t.get("trial_index", 0))))


class SuiteRunner:
    """Drives one suite run into `run_dir` on a connected Ray cluster."""

    def __init__(self, suite: Suite, run_dir: Path, progress: Progress, cluster_info: cluster.ClusterInfo,
                 scratch: Storage | None = None) -> None:
        self.suite, self.run_dir, self.progress, self.cluster = suite, run_dir, progress, cluster_info
        # Ray Train / Tune scratch (checkpoints, experiment state): `output.storage`, else the run directory
        self.scratch = scratch or resolve_storage(suite.output.storage, run_dir, suite.name, suite.hash)
        self.store = ResultStore(run_dir)
        self.plan = plan_suite(suite)
        self.seeds = self.plan.seeds
        self.cells = [cell_plan.cell for cell_plan in self.plan.cells]
        self._teacher_cache: dict[str, bytes] = {}
        self._teacher_refs: dict[str, tuple[Any, str]] = {}
        self._teacher_jobs: dict[str, tuple[BenchmarkSpec, str, int]] = {}  # teachers under way, by row id

    # ------------------------------------------------------------------ rows

    def base_row(self, row_id: str, phase: str, bench: BenchmarkSpec, method: str, seed: int,
                 protocol: str | None = None) -> dict[str, Any]:
        return {"row_id": row_id, "phase": phase, "benchmark": bench.name, "method": method, "seed": seed,
                "suite_name": self.suite.name, "suite_hash": self.suite.hash, "protocol": protocol,
                "dataset": bench.dataset, "scenario": json.dumps(bench.scenario.model_dump(mode="json"))
                if bench.scenario else None,
                "git_commit": git_commit(), "library_versions": library_versions(), "driver_hardware": hardware()}

    # ------------------------------------------------------------------ teachers

    def _teacher_paths(self, bench: BenchmarkSpec, phase: str, seed: int) -> tuple[str, Path]:
        assert bench.teacher is not None
        digest = stable_hash({"teacher": bench.teacher.model_dump(mode="json"), "dataset": bench.dataset,
                              "scenario": bench.scenario.model_dump(mode="json") if bench.scenario else None}, 8)
        return (f"teacher:{phase}:{bench.name}:{bench.dataset}:s{seed}",
                self.run_dir / "teachers" / f"{phase}-{bench.name}-{bench.dataset}-s{seed}-{digest}.pt")

    def teacher_source(self, bench: BenchmarkSpec, phase: str, seed: int) -> Any:
        """The teacher's weights if cached, else an ObjectRef of the task training it (started once)."""
        row_id, path = self._teacher_paths(bench, phase, seed)
        if row_id in self._teacher_cache:
            return self._teacher_cache[row_id]
        if row_id not in self._teacher_refs:
            if path.exists() and self.store.completed(row_id):
                self._teacher_cache[row_id] = path.read_bytes()
                return self._teacher_cache[row_id]
            final = self.suite.final
            split_seed = self.seeds.tuning_split if phase == "tune" else self.seeds.final_split
            self._teacher_refs[row_id] = (cluster.submit_teacher(bench, phase, seed, split_seed,
                                                                 final.cpus_per_worker, final.worker_gpus), now())
            self._teacher_jobs[row_id] = (bench, phase, seed)
        return self._teacher_refs[row_id][0][0]  # the weights' ref

    def teacher(self, bench: BenchmarkSpec, phase: str, seed: int) -> bytes:
        """The teacher's weights for (benchmark, phase, seed): cached, or trained (once), stored and cached."""
        import ray

        assert bench.teacher is not None
        row_id, path = self._teacher_paths(bench, phase, seed)
        self.teacher_source(bench, phase, seed)
        if row_id in self._teacher_cache:
            return self._teacher_cache[row_id]
        refs, started = self._teacher_refs.pop(row_id)
        del self._teacher_jobs[row_id]
        row = self.base_row(row_id, "teacher", bench, f"teacher:{bench.teacher.model}", seed)
        row.update(started_at=started, config_json=bench.teacher.model_dump_json(), tune_phase=phase)
        try:
            state, metrics = ray.get(list(refs))
        except Exception as error:
            self.store.write({**row, "status": "failed", "error": _error_text(error), "finished_at": now()})
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state)
        tmp.replace(path)
        self.store.write({"finished_at": now(), **row, **metrics, "status": "ok", "error": None})
        scores = {k: round(v, 4) for k, v in metrics.items() if k.endswith("accuracy")}
        self.progress.say(f"  teacher {escape(bench.name)} on {escape(bench.dataset)} ({phase}, seed {seed}): "
                          f"{json.dumps(scores)}")
        self._teacher_cache[row_id] = state
        return state

    def settle_teachers(self) -> None:
        """Store the row of every teacher started so far (a failed teacher is stored, not raised)."""
        for bench, phase, seed in list(self._teacher_jobs.values()):
            with contextlib.suppress(Exception):  # its row says why; the students that needed it failed too
                self.teacher(bench, phase, seed)

    # ------------------------------------------------------------------ tuning

    def trial_rows(self, cell: Cell) -> list[dict[str, Any]]:
        frame = self.store.read()
        if "phase" not in frame:
            return []
        prefix = f"tune:{cell.key}:"
        rows = frame[(frame["phase"] == "tune") & frame["row_id"].str.startswith(prefix)]
        return rows.to_dict("records")

    def tune_all(self) -> dict[str, dict[str, Any] | None]:
        """Tune every cell in one Tune experiment (finished trials are kept); return each cell's best config."""
        from harness.tuning import (
            TuningCell,
            open_storage,
            prepare_study,
            recovered_record,
            tune_cells,
        )

        tuning = self.suite.tuning
        storage = open_storage(self.run_dir)
        self.progress.start("tune", len(self.cells) * tuning.trials)
        due: list[TuningCell] = []
        # cells whose teacher must train first go last, so their teacher trains while the others tune
        for cell_plan in sorted(self.plan.cells, key=lambda plan: plan.cell.needs_teacher):
            cell, space = cell_plan.cell, cell_plan.space
            stored = {int(row["trial_index"]) for row in self.trial_rows(cell)}
            for trial in prepare_study(storage, cell.key, space, tuning.mode, cell_plan.first_trial):
                if trial.number not in stored:  # the driver died between the study's record and the store's
                    self.store.write(self._trial_row(cell, recovered_record(cell.key, trial, tuning.metric)))
                    stored.add(trial.number)
            for _ in range(min(len(stored), tuning.trials)):
                self.progress.advance("tune", f"{escape(cell.key)}: trial already stored", skipped=True)
            if len(stored) >= tuning.trials:
                continue
            bench = cell.tune_benchmark
            teacher = self.teacher_source(bench, "tune", self.seeds.teacher) if cell.needs_teacher else None
            spec = RunSpec(benchmark=bench, method=cell.method, seed=self.seeds.trial, protocol=cell.protocol,
                           split_seed=self.seeds.tuning_split, threads=max(1, int(tuning.cpus_per_worker)))
            due.append(TuningCell(key=cell.key, spec=spec, space=space, trials=tuning.trials - len(stored),
                                  teacher=teacher, next_index=max(stored, default=-1) + 1))
        by_key = {cell.key: cell for cell in self.cells}

        def store_trial(record: Any) -> None:
            cell = by_key[record.cell]
            self.store.write(self._trial_row(cell, record))
            state = "[red]failed[/red]" if record.status != "ok" else f"{tuning.metric}={record.metrics.get(tuning.metric, float('nan')):.4f}"
            self.progress.advance("tune", f"{escape(cell.key)} trial {record.index}: {state}")

        tune_cells(due, tuning, storage=storage, sampler_dir=self.run_dir / "samplers",
                   experiment_dir=self.scratch.child("ray_tune"), train_storage=self.scratch.child("ray_train"),
                   name=f"tune-{int(time.time())}", cluster_cpus=self.cluster.cpus, cluster_gpus=self.cluster.gpus,
                   on_trial_done=store_trial)
        self.settle_teachers()
        best: dict[str, dict[str, Any] | None] = {}
        for cell in self.cells:
            chosen = select_best_trial(self.trial_rows(cell), tuning.metric, tuning.mode)
            best[cell.key] = json.loads(chosen["config_json"]) if chosen else None
            if chosen:
                self.progress.say(f"  best {escape(cell.key)}: {tuning.metric}={chosen[tuning.metric]:.4f} "
                                  f"{escape(chosen['config_json'])}")
        return best

    def _trial_row(self, cell: Cell, record: Any) -> dict[str, Any]:
        row = self.base_row(f"tune:{cell.key}:{record.index:04d}", "tune", cell.tune_benchmark, cell.method.label,
                            self.seeds.trial, cell.protocol)
        row.update(record.metrics)
        row.update(benchmark=cell.benchmark.name, trial=f"{record.index:04d}", trial_index=record.index,
                   status=record.status, error=record.error,
                   config_json=json.dumps(record.params, sort_keys=True), config_hash=stable_hash(record.params),
                   splits_read=record.splits_read, wall_s=record.wall_s, node_id=record.node_id,
                   finished_at=now(), method_name=cell.method.name)
        row["tune/iterations"] = float(record.iterations)
        return row

    # ------------------------------------------------------------------ final runs

    def final_all(self, best: Mapping[str, dict[str, Any] | None]) -> None:
        """Retrain every cell's frozen config for every seed, a few at a time, storing each row as it lands."""
        import ray

        from harness.final_runs import Workers, submit_final

        final = self.suite.final
        jobs = [(job.cell, job.seed, best.get(job.cell.key)) for job in self.plan.final_jobs()]
        self.progress.start("final", len(jobs))
        workers = Workers(final.workers, final.cpus_per_worker, final.worker_gpus)
        slots = self.cluster.slots(workers.count * workers.cpus, workers.count * workers.gpus)
        pending: dict[Any, tuple[dict[str, Any], float]] = {}
        queue = []
        # protocols that select the same config share its final runs: training is seeded, so a second
        # run would only repeat the first; the copies say which row they reuse
        twins: dict[tuple[str, int], list[dict[str, Any]]] = {}
        stored_runs = self._stored_final_runs()
        for cell, seed, params in jobs:
            row_id = f"final:{cell.key}:s{seed}"
            if self.store.completed(row_id):
                self.progress.advance("final", f"{escape(cell.key)} seed {seed}: already stored", skipped=True)
                continue
            row = self.base_row(row_id, "final", cell.benchmark, cell.method.label, seed, cell.protocol)
            row.update(method_name=cell.method.name, primary_metric=cell.benchmark.primary_metric,
                       config_json=json.dumps(params, sort_keys=True) if params is not None else None,
                       config_hash=stable_hash({"bench": cell.benchmark.model_dump(mode="json"),
                                                "method": cell.method.model_dump(mode="json"), "params": params}))
            if params is None:
                self.store.write({**row, "status": "failed", "error": "no successful tuning trial to take a config from",
                                  "started_at": now(), "finished_at": now()})
                self.progress.advance("final", f"{escape(cell.key)} seed {seed}: [red]failed[/red] (no tuned config)")
                continue
            twin_key = (row["config_hash"], seed)
            if twin_key in stored_runs:  # the same config and seed already ran under another protocol
                self._store_twin(row, stored_runs[twin_key])
                continue
            if twin_key in twins:
                twins[twin_key].append(row)
                continue
            twins[twin_key] = []
            queue.append((cell, seed, params, row))
        # teachers train while the first runs do; the costliest runs start first so the tail is short,
        # and distillation runs go last, when their teachers are ready
        teachers = {(cell.benchmark.name, seed): self.teacher_source(cell.benchmark, "final", seed)
                    for cell, seed, _, _ in queue if cell.needs_teacher}
        queue.sort(key=lambda job: (job[0].needs_teacher, -job[0].method_info.cost_factor))
        while queue or pending:
            while queue and len(pending) < slots:
                cell, seed, params, row = queue.pop(0)
                teacher = teachers.get((cell.benchmark.name, seed))  # weights, or the ref of the task training them
                spec = RunSpec(benchmark=cell.benchmark, method=cell.method, seed=seed, hyperparams=params,
                               protocol=cell.protocol,
                               split_seed=self.seeds.final_split, metrics=self.suite.evaluation.metrics,
                               threads=workers.threads)
                ref = submit_final(spec, teacher, storage=self.scratch.child("ray_train"),
                                   name=f"{row['row_id'].replace(':', '-')}-{row['config_hash'][:8]}",
                                   workers=workers, checkpoint_every=final.checkpoint_every,
                                   max_failures=final.max_failures)
                pending[ref] = ({**row, "started_at": now()}, time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1)
            row, started = pending.pop(done[0])
            stored = self._store_final(row, done[0], time.monotonic() - started)
            for twin in twins.pop((row["config_hash"], row["seed"]), []):
                if stored is not None:
                    self._store_twin(twin, stored)
                else:  # the run failed: its twins would fail the same way, so say so
                    self.store.write({**twin, "status": "failed", "error": f"the same run {row['row_id']} failed",
                                      "started_at": now(), "finished_at": now()})
                    self.progress.advance("final", f"{escape(twin['row_id'])}: [red]failed[/red] (as its twin)")
        self.settle_teachers()

    def _stored_final_runs(self) -> dict[tuple[str, int], dict[str, Any]]:
        frame = self.store.read()
        if "phase" not in frame or "config_hash" not in frame:
            return {}
        ok = frame[(frame["phase"] == "final") & (frame["status"] == "ok")]
        return {(str(r["config_hash"]), int(r["seed"])): r for r in ok.to_dict("records")}

    def _store_twin(self, row: dict[str, Any], source: Mapping[str, Any]) -> None:
        """Store `row` with the results of `source`, the identical run (same config and seed) of another protocol."""
        own = set(row) | {"started_at", "finished_at", "reused_from", "node_id"}
        results = {k: v for k, v in source.items() if k not in own}
        self.store.write({**results, **row, "status": "ok", "error": None, "reused_from": source["row_id"],
                          "started_at": now(), "finished_at": now(), "node_id": source.get("node_id")})
        primary = row["primary_metric"]
        self.progress.advance("final", f"{escape(row['benchmark'])}/{escape(row['method'])} ({row['protocol']}) "
                                       f"seed {row['seed']}: {primary}={source.get(primary, float('nan')):.4f} "
                                       f"(same config as {escape(source['row_id'])})")

    def _store_final(self, row: dict[str, Any], ref: Any, wall_s: float) -> dict[str, Any] | None:
        """Store a finished final run's row; return it, or None when the run failed."""
        import ray

        where = f" ({row['protocol']})" if len(self.suite.protocols) > 1 else ""
        label = f"{escape(row['benchmark'])}/{escape(row['method'])}{where} seed {row['seed']}"
        try:
            metrics = ray.get(ref)
        except Exception as error:  # the run failed: a failed row, and the suite goes on
            self.store.write({**row, "status": "failed", "error": _error_text(error), "finished_at": now(), "wall_s": wall_s})
            self.progress.advance("final", f"{label}: [red]failed[/red] {escape(_error_text(error)[:200])}")
            return None
        stored = {**row, **metrics, "status": "ok", "error": None, "finished_at": now(), "wall_s": wall_s}
        self.store.write(stored)
        primary = row["primary_metric"]
        self.progress.advance("final", f"{label}: {primary}={metrics.get(primary, float('nan')):.4f}")
        return stored

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
