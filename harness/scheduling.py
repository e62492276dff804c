"""Runs Ray tasks at most `slots` at a time, handling each as it finishes (first done, first handled).

The suite's final runs go through here, in groups (`group_jobs`): one group is one Ray Train fit that
trains its runs one after another, so the worker group's start (about 10 s of Ray Train's fixed cost)
is paid once per group rather than once per run. The cluster holds `slots` groups at once, so none
waits in Ray's queue holding nothing, and `poll` lets the caller store each run's row the moment it
lands, not when its whole group has.

How runs are grouped: runs of one key (the suite's cell: the same benchmark and method, so the same
cost per run and the same need for a teacher) share a group, in the order given. When there are fewer
keys than slots, each key's runs are split into near-equal groups so that every slot has one (for
example 1 cell x 5 seeds on 2 slots: groups of 3 and 2); otherwise a key is one group, and the slots
take the groups in the order given (the caller puts the costliest first, so the tail is short).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from harness.rows import now

Job = TypeVar("Job")
POLL_EVERY_S = 0.5  # how often `run_in_slots` calls `poll` while jobs run: rows land within this


def group_jobs(jobs: Sequence[Job], slots: int, key: Callable[[Job], Hashable]) -> list[tuple[Job, ...]]:
    """`jobs` in groups of one `key` each (order kept), split so that there are at least `slots` groups
    where the jobs allow it; see the module docstring for why."""
    buckets: dict[Hashable, list[Job]] = {}
    for job in jobs:
        buckets.setdefault(key(job), []).append(job)
    if not buckets:
        return []
    pieces = max(1, math.ceil(max(1, slots) / len(buckets)))
    groups: list[tuple[Job, ...]] = []
    for bucket in buckets.values():
        count = min(pieces, len(bucket))
        size, extra = divmod(len(bucket), count)
        start = 0
        for index in range(count):  # the first `extra` groups take one more run
            end = start + size + (1 if index < extra else 0)
            groups.append(tuple(bucket[start:end]))
            start = end
    return groups


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
