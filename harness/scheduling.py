"""Runs Ray tasks at most `slots` at a time, handling each as it finishes (first done, first handled).

The suite's final runs go through here, in groups (`balanced_groups`): one group is one Ray Train fit that
trains its runs one after another, so the worker group's start (about 10 s of Ray Train's fixed cost)
is paid once per group rather than once per run. The cluster holds `slots` groups at once, so none
waits in Ray's queue holding nothing, and `poll` lets the caller store each run's row the moment it
lands, not when its whole group has.

How runs are grouped: one group per slot (fewer when there are fewer runs), whatever their cell, since
every final run of a suite asks for the same workers (`final.workers` x `final.cpus_per_worker`), so
runs of different benchmarks, methods and seeds share a fit as well as seeds of one cell do. The groups
are balanced by each run's expected cost (`harness.final_costs`) with longest-processing-time-first:
the costliest run goes to the group with the least cost so far, then the next, so the slots finish
close together. Inside a group, `next_in_group` picks the run to train next: the interrupted one, else
the first whose teacher is ready, so a slot never idles on a teacher while another of its runs could train.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness.rows import now

Job = TypeVar("Job")
POLL_EVERY_S = 0.5  # how often `run_in_slots` calls `poll` while jobs run: rows land within this


def balanced_groups(jobs: Sequence[Job], slots: int, cost: Callable[[Job], float]) -> list[tuple[Job, ...]]:
    """`jobs` in at most `slots` groups of near-equal total `cost` (longest processing time first: each
    job, costliest first and ties in the order given, joins the group with the least cost so far, the
    first such group on a tie); inside a group the jobs keep that order, costliest first."""
    ordered = sorted(jobs, key=lambda job: -cost(job))  # stable: equal costs keep the order given
    groups: list[list[Job]] = [[] for _ in range(min(max(1, slots), len(ordered)))]
    totals = [0.0] * len(groups)
    for job in ordered:
        lightest = totals.index(min(totals))
        groups[lightest].append(job)
        totals[lightest] += cost(job)
    return [tuple(group) for group in groups]


def next_in_group(pending: Sequence[str], current: str | None, ready: Callable[[str], bool]) -> str | None:
    """Which of a group's `pending` runs (by name, in the group's order) trains next: `current` (the run a
    restarted worker group was interrupted in) if pending, else the first that is `ready` (its teacher's
    weights are at hand, or it needs none); None when every pending run still waits for its teacher."""
    if current is not None and current in pending:
        return current
    return next((name for name in pending if ready(name)), None)


def run_in_slots(jobs: Sequence[Job], slots: int, submit: Callable[[Job], Any],
                 on_done: Callable[[Job, Any, str, float], Sequence[Job] | None],
                 poll: Callable[[], None] | None = None) -> None:
    """Submit `jobs` in order, keeping at most `slots` running; `submit(job)` starts one and returns its
    ObjectRef, and `on_done(job, ref, started_at, wall_s)` is called as each finishes (or fails); the
    jobs it returns (work the finished one left undone) are submitted next. With `poll`, it is called
    every `POLL_EVERY_S` while jobs run, and once before each `on_done`."""
    import ray

    queue = list(jobs)
    running: dict[Any, tuple[Job, str, float]] = {}
    while queue or running:
        while queue and len(running) < max(1, slots):
            job = queue.pop(0)
            running[submit(job)] = (job, now(), time.monotonic())
        if poll is None:
            done, _ = ray.wait(list(running), num_returns=1)
        else:
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_EVERY_S)
            poll()
            if not done:
                continue
        job, started_at, started = running.pop(done[0])
        queue[:0] = on_done(job, done[0], started_at, time.monotonic() - started) or ()
