"""The driver's side of grouped final runs: submit the groups, land each run the moment it finishes.

A group (`harness.scheduling.balanced_groups`) is one `fit_final_group` task holding one slot. Its runs hand
their metrics to an inbox actor as each finishes; the driver drains it while the groups run, so rows
land one by one. A run's `wall_s` is the time since the previous run of its group landed (the first run
of a group also carries the worker group's start), so a group's walls add up to the group's wall.

When a group fails (a run raised, or a worker died more often than the group may restart), its runs
that landed stay as they are; the run it had started and not landed (the inbox knows which: runs train
one at a time, not always in the group's order) is the one that failed, its row is failed with the
group's error, and the group's other runs that had not landed start again as a new group. A group that
failed before starting any run fails its first run that had not landed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from harness.final_runs import GroupRun, drain_inbox, open_inbox, started_runs, submit_final_group
from harness.plan import FinalJob
from harness.rows import error_text, now
from harness.scheduling import run_in_slots

Land = Callable[[FinalJob, Mapping[str, Any] | None, str | None, str, float], None]


@dataclass
class _Clock:
    """When a group's previous run landed (or the group was submitted)."""

    started_at: str
    started: float

    def lap(self) -> tuple[str, float]:
        """(when the lap began, its seconds), and a new lap begins."""
        lap = (self.started_at, time.monotonic() - self.started)
        self.started_at, self.started = now(), time.monotonic()
        return lap


class FinalGroups:
    """Runs groups of final jobs in `slots`: `run_for(job)` is what a job trains, and `land(job, metrics,
    error, started_at, wall_s)` stores its row (once per job, with metrics or with an error)."""

    def __init__(self, run_for: Callable[[FinalJob], GroupRun], land: Land, **fit_kwargs: Any) -> None:
        self.run_for, self.store_landed, self.fit_kwargs = run_for, land, fit_kwargs
        self.runs: dict[str, tuple[FinalJob, _Clock]] = {}
        self.group_names: dict[Any, list[str]] = {}  # a submitted group's ref -> its runs' names, in order
        self.landed: set[str] = set()

    def run(self, groups: Sequence[tuple[FinalJob, ...]], slots: int) -> None:
        inbox = open_inbox()
        try:
            run_in_slots(groups, slots, lambda group: self._submit(group, inbox),
                         lambda group, ref, started_at, wall_s: self._finished(group, ref, inbox),
                         poll=lambda: self._land_messages(inbox))
        finally:
            ray.kill(inbox)

    def _submit(self, group: tuple[FinalJob, ...], inbox: Any) -> Any:
        clock, runs = _Clock(now(), time.monotonic()), [self.run_for(job) for job in group]
        for job, run in zip(group, runs, strict=True):
            self.runs[run.name] = (job, clock)
        name = runs[0].name + (f"-group{len(runs)}" if len(runs) > 1 else "")
        ref = submit_final_group(runs, name=name, inbox=inbox, **self.fit_kwargs)
        self.group_names[ref] = [run.name for run in runs]
        return ref

    def _land(self, name: str, metrics: Mapping[str, Any] | None, error: str | None) -> None:
        if name in self.landed:  # a restarted worker group repeated a run that had already landed
            return
        self.landed.add(name)
        job, clock = self.runs[name]
        started_at, wall_s = clock.lap()
        self.store_landed(job, metrics, error, started_at, wall_s)

    def _land_messages(self, inbox: Any) -> None:
        for name, metrics, error in drain_inbox(inbox):
            self._land(name, metrics, error)

    def _finished(self, group: tuple[FinalJob, ...], ref: Any, inbox: Any) -> list[tuple[FinalJob, ...]]:
        """Land what the group's result holds; after a failure, fail the run it stopped in and return its
        other runs still to land, to run as a new group."""
        names = self.group_names.pop(ref)
        try:
            finished = ray.get(ref)
        except Exception as error:  # the group stopped in the run it had started and not landed
            left = [(name, job) for name, job in zip(names, group, strict=True) if name not in self.landed]
            if not left:
                return []
            started = started_runs(inbox)
            failed = next((name for name, _ in left if name in started), left[0][0])
            self._land(failed, None, error_text(error))
            rest = tuple(job for name, job in left if name != failed)
            return [rest] if rest else []
        for name in names:
            if name in finished:
                self._land(name, finished[name], None)
            else:
                self._land(name, None, "the group finished without reporting this run")
        return []
