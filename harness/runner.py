"""Runs a validated suite: teachers, tuning, final runs, store, leaderboard, in that order.

The store is the source of truth: every trial, teacher and final run becomes a row the moment it
finishes, and `resume` skips whatever already has a successful row. Ray's own experiment folders
are scratch space. What to run is the suite's plan (`harness.plan`); rows are built by `harness.rows`;
teachers are `harness.teachers`' job and the final runs' slots `harness.scheduling`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from harness import cluster
from harness.claims import continuing_cells, dataset_classes, declared_claims
from harness.data.shared import SharedSplits
from harness.final_costs import expected_cost
from harness.jobs import RunSpec
from harness.objective import TunedConfig, TuningObjective, metrics_for, select
from harness.plan import Cell, FinalJob, Study, plan_suite
from harness.progress import Progress
from harness.row_builders import (
    final_config_hash,
    final_row,
    final_row_id,
    run_results,
    trial_row,
    trial_row_prefix,
)
from harness.rows import now
from harness.scheduling import balanced_groups
from harness.storage import Storage, resolve_storage
from harness.store import ResultStore
from harness.suite import Suite
from harness.teachers import Teachers

if TYPE_CHECKING:
    from harness.tuning import TuningCell

Params = dict[str, Any] | None  # a cell's tuned config (flat `train.x` / `method.y`), None when no trial succeeded


def select_best_trial(trials: list[Mapping[str, Any]], metric: str, mode: str = "max",
                      floor: Mapping[str, float] | None = None) -> Mapping[str, Any] | None:
    """The successful trial with the best last-reported `metric` among those clearing `floor`; ties go to
    the earliest trial (`harness.objective.select`, which also says when no trial cleared the floor)."""
    objective = TuningObjective(metric=metric, mode=mode, floor=dict(floor or {}))  # type: ignore[arg-type]
    return select(trials, objective).trial


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
        # every split read once, by this driver, and mapped by every job from Ray's object store
        self.shared = SharedSplits()
        self.teachers = Teachers(suite, run_dir, self.store, progress, self.seeds, self.shared)

    # ------------------------------------------------------------------ tuning

    def trial_rows(self, cell: Cell, study: int = 0) -> list[dict[str, Any]]:
        frame = self.store.read()
        if "phase" not in frame:
            return []
        rows = frame[(frame["phase"] == "tune") & frame["row_id"].str.startswith(trial_row_prefix(cell, study))]
        return rows.to_dict("records")

    def tune_all(self) -> dict[str, Params]:
        """Tune every study of every cell in one Tune experiment (finished trials are kept); return each
        study's best config by study key (study 0's key is the cell's)."""
        from harness.tuning import open_storage, tune_cells

        tuning = self.suite.tuning
        storage = open_storage(self.run_dir)
        self.progress.start("tune", len(self.plan.studies) * tuning.trials)
        # cells whose teacher must train first go last, so their teacher trains while the others tune
        due = [cell for study in sorted(self.plan.studies, key=lambda study: study.cell.needs_teacher)
               if (cell := self._due_study(study, storage)) is not None]
        by_key = {study.key: study for study in self.plan.studies}

        def store_trial(record: Any) -> None:
            study = by_key[record.cell]
            metric = study.cell_plan.objective.metric
            self.store.write(trial_row(self.suite, study.cell, record, self.seeds.trial, study))
            state = "[red]failed[/red]" if record.status != "ok" else f"{metric}={record.metrics.get(metric, float('nan')):.4f}"
            self.progress.advance("tune", f"{escape(study.key)} trial {record.index}: {state}")

        tune_cells(due, tuning, storage=storage, sampler_dir=self.run_dir / "samplers",
                   experiment_dir=self.scratch.child("ray_tune"), train_storage=self.scratch.child("ray_train"),
                   name=f"tune-{int(time.time())}", cluster_cpus=self.cluster.cpus, cluster_gpus=self.cluster.gpus,
                   on_trial_done=store_trial)
        self.teachers.settle()
        return {study.key: self._chosen_config(study) for study in self.plan.studies}

    def _due_study(self, study: Study, storage: Any) -> TuningCell | None:
        """The study's TuningCell with the trials still due (None when all are stored); stores the rows of
        trials its journal finished but the store missed (the driver died in between)."""
        from harness.tuning import TuningCell, prepare_study, recovered_record

        tuning, plan, cell = self.suite.tuning, study.cell_plan, study.cell
        objective = plan.objective
        stored = {int(row["trial_index"]) for row in self.trial_rows(cell, study.index)}
        for trial in prepare_study(storage, study.key, plan.space, objective.direction, plan.first_trial):
            if trial.number not in stored:
                record = recovered_record(study.key, trial, objective.metric)
                self.store.write(trial_row(self.suite, cell, record, self.seeds.trial, study))
                stored.add(trial.number)
        for _ in range(min(len(stored), tuning.trials)):
            self.progress.advance("tune", f"{escape(study.key)}: trial already stored", skipped=True)
        if len(stored) >= tuning.trials:
            return None
        bench = cell.tune_benchmark
        teacher = self.teachers.source(bench, "tune", self.seeds.teacher) if cell.needs_teacher else None
        spec = RunSpec(benchmark=bench, method=cell.method, seed=self.seeds.trial, protocol=cell.protocol,
                       split_seed=self.seeds.tuning_split, threads=max(1, int(tuning.cpus_per_worker)),
                       metrics=metrics_for(objective, bench.evaluation), objective=objective.metric,
                       data=self.shared.tuning(bench.dataset))
        return TuningCell(key=study.key, spec=spec, space=plan.space, trials=tuning.trials - len(stored),
                          teacher=teacher, next_index=max(stored, default=-1) + 1, sampler=study.sampler,
                          mode=objective.direction)

    def _chosen_config(self, study: Study) -> Params:
        """The study's best trial by its cell's objective, floors respected (a fallback said on the rows)."""
        objective = study.cell_plan.objective
        chosen = select(self.trial_rows(study.cell, study.index), objective)
        if chosen.trial is None:
            return None
        trial = chosen.trial
        note = f" [yellow]({escape(chosen.fallback)})[/yellow]" if chosen.fallback else ""
        self.progress.say(f"  best {escape(study.key)}: {objective.metric}={trial[objective.metric]:.4f} "
                          f"{escape(trial['config_json'])}{note}")
        return TunedConfig(json.loads(trial["config_json"]), chosen.fallback)

    # ------------------------------------------------------------------ final runs

    def final_all(self, best: Mapping[str, Params], jobs: Sequence[FinalJob] | None = None) -> None:
        """Retrain every cell's frozen config for every seed (or only `jobs`: one look of a sequential final
        phase), in one group per slot, balanced by expected cost, each paying the worker group's start once
        (`harness.scheduling.balanced_groups`), storing each row as it lands."""
        from harness.final_groups import FinalGroups
        from harness.final_runs import GroupRun, Workers

        final = self.suite.final
        jobs = self.plan.final_jobs() if jobs is None else list(jobs)
        self.progress.start("final", len(jobs))
        workers = Workers(final.workers, final.cpus_per_worker, final.worker_gpus)
        slots = self.cluster.slots(workers.count * workers.cpus, workers.count * workers.gpus)
        queue, twins = self._due_final_jobs(jobs, best)
        # teachers train while the first runs do; a group trains a distillation run once its teacher is
        # ready (`harness.final_runs`), its other runs meanwhile. The teachers' tasks are submitted before
        # any group, on a cluster the tuning phase left idle, so they hold their CPUs first: a group that
        # waits for a teacher holding its slot waits for a task that is training, not one queued behind it
        teachers = {(job.cell.benchmark.name, job.seed): self.teachers.source(job.cell.benchmark, "final", job.seed)
                    for job in queue if job.cell.needs_teacher}
        queue.sort(key=lambda job: job.cell.needs_teacher)  # equal costs: runs needing no teacher first

        def run_for(job: FinalJob) -> GroupRun:
            params = best[job.study_key]
            spec = RunSpec(benchmark=job.cell.benchmark, method=job.cell.method, seed=job.seed, hyperparams=params,
                           protocol=job.cell.protocol, split_seed=self.seeds.final_split,
                           metrics=self.suite.evaluation.metrics, threads=workers.threads,
                           data=self.shared.final(job.cell.benchmark.dataset, self._test_sets(job)))
            name = f"{final_row_id(job).replace(':', '-')}-{final_config_hash(job, params)[:8]}"
            # the teacher's weights, or the ref of the task training them
            return GroupRun(name, spec, teachers.get((job.cell.benchmark.name, job.seed)))

        def land(job: FinalJob, metrics: Mapping[str, Any] | None, error: str | None, started_at: str,
                 wall_s: float) -> None:
            params = best[job.study_key]
            stored = self._store_final(job, params, metrics, error, started_at, wall_s)
            self._store_twins(job, params, twins.pop((final_config_hash(job, params), job.seed), []), stored)

        groups = FinalGroups(run_for, land, storage=self.scratch.child("ray_train"), workers=workers,
                             checkpoint_every=final.checkpoint_every, max_failures=final.max_failures)
        def cost(job: FinalJob) -> float:
            return expected_cost(job, lambda dataset: self.shared.share(dataset, "train").examples)

        groups.run(balanced_groups(queue, slots, cost), slots)
        self.teachers.settle()

    def _due_final_jobs(self, jobs: Sequence[FinalJob],
                        best: Mapping[str, Params]) -> tuple[list[FinalJob], dict[tuple[str, int], list[FinalJob]]]:
        """The jobs still to train, and their twins; stores the rows of the others (already stored, no tuned
        config, or a twin of a stored run) as it goes."""
        queue: list[FinalJob] = []
        # protocols that select the same config share its final runs: training is seeded, so a second
        # run would only repeat the first; the copies say which row they reuse
        twins: dict[tuple[str, int], list[FinalJob]] = {}
        stored_runs = self._stored_final_runs()
        for job in jobs:
            label, params = f"{escape(job.study_key)} seed {job.seed}", best.get(job.study_key)
            if self.store.completed(final_row_id(job)):
                self.progress.advance("final", f"{label}: already stored", skipped=True)
                continue
            if params is None:
                self.store.write(final_row(self.suite, job, None, started_at=now(),
                                           error="no successful tuning trial to take a config from"))
                self.progress.advance("final", f"{label}: [red]failed[/red] (no tuned config)")
                continue
            twin_key = (final_config_hash(job, params), job.seed)
            if twin_key in stored_runs:  # the same config and seed already ran under another protocol
                self._store_twin(job, params, stored_runs[twin_key])
                continue
            if twin_key in twins:
                twins[twin_key].append(job)
                continue
            twins[twin_key] = []
            queue.append(job)
        return queue, twins

    def _test_sets(self, job: FinalJob) -> tuple[str, ...]:
        """The other datasets whose test splits a final run evaluates on (its OOD sets)."""
        return job.cell.benchmark.evaluation.ood_sets if "ood" in self.suite.evaluation.metrics else ()

    def _stored_final_runs(self) -> dict[tuple[str, int], dict[str, Any]]:
        frame = self.store.read()
        if "phase" not in frame or "config_hash" not in frame:
            return {}
        ok = frame[(frame["phase"] == "final") & (frame["status"] == "ok")]
        return {(str(r["config_hash"]), int(r["seed"])): r for r in ok.to_dict("records")}

    def _label(self, job: FinalJob) -> str:
        where = f" ({job.cell.protocol})" if len(self.suite.protocols) > 1 else ""
        return f"{escape(job.cell.benchmark.name)}/{escape(job.cell.method.label)}{where} seed {job.seed}"

    def _store_twin(self, job: FinalJob, params: Params, source: Mapping[str, Any]) -> None:
        """Store `job`'s row with the results of `source`, the identical run (same config and seed) of another protocol."""
        self.store.write(final_row(self.suite, job, params, started_at=now(), error=None, results=run_results(source),
                                   reused_from=source["row_id"], node_id=source.get("node_id")))
        primary = job.cell.benchmark.primary_metric
        self.progress.advance("final", f"{escape(job.cell.benchmark.name)}/{escape(job.cell.method.label)} "
                                       f"({job.cell.protocol}) seed {job.seed}: "
                                       f"{primary}={source.get(primary, float('nan')):.4f} "
                                       f"(same config as {escape(source['row_id'])})")

    def _store_final(self, job: FinalJob, params: Params, metrics: Mapping[str, Any] | None, error: str | None,
                     started_at: str, wall_s: float) -> dict[str, Any] | None:
        """Store a landed final run's row (failed with `error`, else ok with `metrics`); return it, or None
        when the run failed."""
        if error is not None or metrics is None:
            error = error or "the run finished without reporting metrics"
            self.store.write(final_row(self.suite, job, params, started_at=started_at, error=error, wall_s=wall_s))
            self.progress.advance("final", f"{self._label(job)}: [red]failed[/red] {escape(error[:200])}")
            return None
        row = final_row(self.suite, job, params, started_at=started_at, error=None, results=metrics, wall_s=wall_s)
        self.store.write(row)
        primary = job.cell.benchmark.primary_metric
        self.progress.advance("final", f"{self._label(job)}: {primary}={metrics.get(primary, float('nan')):.4f}")
        return row.to_row()

    def _store_twins(self, job: FinalJob, params: Params, twins: list[FinalJob], stored: Mapping[str, Any] | None) -> None:
        """Store the rows of `job`'s twins (the same config and seed under other protocols) once it landed."""
        for twin in twins:
            if stored is not None:
                self._store_twin(twin, params, stored)
            else:  # the run failed: its twins would fail the same way, so say so
                self.store.write(final_row(self.suite, twin, params, started_at=now(),
                                           error=f"the same run {final_row_id(job)} failed"))
                self.progress.advance("final", f"{escape(final_row_id(twin))}: [red]failed[/red] (as its twin)")

    def run(self) -> None:
        best = self.tune_all()
        self.final_all(best, self.plan.look_jobs(1))
        for look in range(2, len(self.plan.looks) + 1):  # a sequential final phase: seeds where still unresolved
            cells = continuing_cells(self.store.read(), self.suite.model_dump(mode="json"), declared_claims(),
                                     dataset_classes())
            if not cells:
                break
            self.final_all(best, self.plan.look_jobs(look, cells))
        self.store.consolidate()
