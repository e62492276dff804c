"""The final runs' groups and slots, without a cluster: `ray.wait` is replaced by a stand-in that finishes
the running job chosen by the test, so the order of submits and completions is exact."""

from __future__ import annotations

from typing import Any

import pytest

from harness.scheduling import group_jobs, run_in_slots


class Refs:
    """Fake ObjectRefs: `finish_order` says which running job `ray.wait` hands back next."""

    def __init__(self, finish_order: list[str]) -> None:
        self.finish_order, self.running, self.most_running = list(finish_order), set(), 0

    def submit(self, job: str) -> str:
        self.running.add(job)
        self.most_running = max(self.most_running, len(self.running))
        return f"ref-{job}"

    def wait(self, refs: list[str], num_returns: int = 1, timeout: float | None = None) -> tuple[list[str], list[str]]:
        assert num_returns == 1
        job = next(j for j in self.finish_order if f"ref-{j}" in refs)
        self.finish_order.remove(job)
        self.running.discard(job)
        return [f"ref-{job}"], [r for r in refs if r != f"ref-{job}"]


def test_at_most_slots_run_at_once_and_each_is_handled_as_it_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    refs = Refs(finish_order=["b", "a", "d", "c", "e"])
    monkeypatch.setattr(ray, "wait", refs.wait)
    handled: list[tuple[str, Any]] = []
    run_in_slots(["a", "b", "c", "d", "e"], 2, refs.submit,
                 lambda job, ref, started_at, wall_s: handled.append((job, ref)))
    assert refs.most_running == 2
    assert handled == [("b", "ref-b"), ("a", "ref-a"), ("d", "ref-d"), ("c", "ref-c"), ("e", "ref-e")]


def test_no_jobs_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "wait", lambda *a, **k: pytest.fail("waited with nothing running"))
    run_in_slots([], 4, lambda job: pytest.fail("submitted nothing"), lambda *args: None)


def test_a_finished_jobs_leftover_work_runs_next_and_poll_runs_before_each_handling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    refs = Refs(finish_order=["a", "b", "b2", "c"])
    monkeypatch.setattr(ray, "wait", refs.wait)
    events: list[str] = []

    def on_done(job: str, ref: Any, started_at: str, wall_s: float) -> list[str]:
        events.append(f"done {job}")
        return ["b2"] if job == "b" else []  # b left work undone: it goes before c

    run_in_slots(["a", "b", "c"], 1, lambda job: events.append(f"submit {job}") or refs.submit(job), on_done,
                 poll=lambda: events.append("poll"))
    assert events == ["submit a", "poll", "done a", "submit b", "poll", "done b", "submit b2", "poll", "done b2",
                      "submit c", "poll", "done c"]


def cell(job: str) -> str:
    return job.split("/")[0]


@pytest.mark.parametrize(("jobs", "slots", "expected"), [
    # fewer cells than slots: a cell's seeds split into near-equal groups, one per slot
    (["x/0", "x/1", "x/2", "x/3", "x/4"], 2, [("x/0", "x/1", "x/2"), ("x/3", "x/4")]),
    (["x/0", "x/1", "y/0", "y/1"], 4, [("x/0",), ("x/1",), ("y/0",), ("y/1",)]),
    # at least as many cells as slots: one group per cell, in the order given (not the cells' order of names)
    (["y/0", "x/0", "y/1", "x/1", "z/0"], 2, [("y/0", "y/1"), ("x/0", "x/1"), ("z/0",)]),
    (["x/0", "x/1"], 1, [("x/0", "x/1")]),
    ([], 3, []),
])
def test_runs_of_a_cell_share_a_group_split_so_every_slot_has_one(jobs: list[str], slots: int,
                                                                   expected: list[tuple[str, ...]]) -> None:
    groups = group_jobs(jobs, slots, key=cell)
    assert groups == expected
    assert sorted(job for group in groups for job in group) == sorted(jobs)  # every job once
