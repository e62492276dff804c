"""Runs Ray tasks at most `slots` at a time, handling each as it finishes (first done, first handled).

The suite's final runs go through here: the cluster holds `slots` of them at once, so none waits in
Ray's queue holding nothing, and each run's row is stored the moment it lands, not when all have.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness.rows import now

Job = TypeVar("Job")


def run_in_slots(jobs: Sequence[Job], slots: int, submit: Callable[[Job], Any],
                 on_done: Callable[[Job, Any, str, float], None]) -> None:
    """Submit `jobs` in order, keeping at most `slots` running; `submit(job)` starts one and returns its
    ObjectRef, and `on_done(job, ref, started_at, wall_s)` is called as each finishes (or fails)."""
    import ray

    queue = list(jobs)
    running: dict[Any, tuple[Job, str, float]] = {}
    while queue or running:
        while queue and len(running) < max(1, slots):
            job = queue.pop(0)
            running[submit(job)] = (job, now(), time.monotonic())
        done, _ = ray.wait(list(running), num_returns=1)
        job, started_at, started = running.pop(done[0])
        on_done(job, done[0], started_at, time.monotonic() - started)
