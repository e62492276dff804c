"""Distillation teachers: each (benchmark, phase, seed) teacher trains once, as its own Ray task, while
other work goes on; its weights are kept beside the results and its row in the store, so a resumed
suite reuses it, and the students of that phase and seed learn from it.

A tune-phase teacher trains on tune_train (the tuning split, test sealed) with the teachers' seed; a
final-phase teacher trains on the full training split with the final run's seed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness import cluster
from harness.data.shared import SharedSplits, SplitHandles
from harness.plan import Seeds
from harness.progress import Progress
from harness.row_builders import teacher_row, teacher_row_id
from harness.rows import error_text, now
from harness.store import ResultStore
from harness.suite import BenchmarkSpec, Suite, stable_hash


class Teachers:
    """The suite's teachers: cached weights, the tasks training the others, and their rows."""

    def __init__(self, suite: Suite, run_dir: Path, store: ResultStore, progress: Progress, seeds: Seeds,
                 shared: SharedSplits | None = None) -> None:
        self.suite, self.run_dir, self.store, self.progress, self.seeds = suite, run_dir, store, progress, seeds
        self.shared = shared  # the object-store splits teachers map (None: each task reads the files)
        self._weights: dict[str, bytes] = {}
        self._training: dict[str, tuple[Any, str]] = {}  # row id -> (the task's refs, when it started)
        self._jobs: dict[str, tuple[BenchmarkSpec, str, int]] = {}  # teachers under way, by row id

    def weights_file(self, bench: BenchmarkSpec, phase: str, seed: int) -> Path:
        """Where the teacher's weights are kept; the digest tells apart teachers a suite edit changed."""
        assert bench.teacher is not None
        digest = stable_hash({"teacher": bench.teacher.model_dump(mode="json"), "dataset": bench.dataset,
                              "scenario": bench.scenario.model_dump(mode="json") if bench.scenario else None}, 8)
        return self.run_dir / "teachers" / f"{phase}-{bench.name}-{bench.dataset}-s{seed}-{digest}.pt"

    def source(self, bench: BenchmarkSpec, phase: str, seed: int) -> Any:
        """The teacher's weights if cached, else an ObjectRef of the task training them (started once)."""
        row_id, path = teacher_row_id(bench, phase, seed), self.weights_file(bench, phase, seed)
        if row_id in self._weights:
            return self._weights[row_id]
        if row_id not in self._training:
            if path.exists() and self.store.completed(row_id):
                self._weights[row_id] = path.read_bytes()
                return self._weights[row_id]
            final = self.suite.final
            split_seed = self.seeds.tuning_split if phase == "tune" else self.seeds.final_split
            refs = cluster.submit_teacher(bench, phase, seed, split_seed, final.cpus_per_worker, final.worker_gpus,
                                          self._data(bench, phase))
            self._training[row_id] = (refs, now())
            self._jobs[row_id] = (bench, phase, seed)
        return self._training[row_id][0][0]  # the weights' ref

    def _data(self, bench: BenchmarkSpec, phase: str) -> SplitHandles | None:
        """The object-store splits a teacher of `phase` may map (None: its task reads the files)."""
        if self.shared is None:
            return None
        return self.shared.tuning(bench.dataset) if phase == "tune" else self.shared.final(bench.dataset)

    def weights(self, bench: BenchmarkSpec, phase: str, seed: int) -> bytes:
        """The teacher's weights: cached, or trained (once), then stored with its row and cached."""
        import ray

        row_id, path = teacher_row_id(bench, phase, seed), self.weights_file(bench, phase, seed)
        self.source(bench, phase, seed)
        if row_id in self._weights:
            return self._weights[row_id]
        refs, started = self._training.pop(row_id)
        del self._jobs[row_id]
        try:
            state, metrics = ray.get(list(refs))
        except Exception as error:
            self.store.write(teacher_row(self.suite, bench, phase, seed, started_at=started, error=error_text(error)))
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state)
        tmp.replace(path)
        self.store.write(teacher_row(self.suite, bench, phase, seed, started_at=started, error=None, results=metrics))
        scores = {k: round(v, 4) for k, v in metrics.items() if k.endswith("accuracy")}
        self.progress.say(f"  teacher {escape(bench.name)} on {escape(bench.dataset)} ({phase}, seed {seed}): "
                          f"{json.dumps(scores)}")
        self._weights[row_id] = state
        return state

    def settle(self) -> None:
        """Store the row of every teacher started so far (a failed teacher is stored, not raised)."""
        for bench, phase, seed in list(self._jobs.values()):
            with contextlib.suppress(Exception):  # its row says why; the students that needed it failed too
                self.weights(bench, phase, seed)
