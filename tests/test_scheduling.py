"""The final runs' groups and slots, without a cluster: `ray.wait` is replaced by a stand-in that finishes
the running job chosen by the test, so the order of submits and completions is exact."""

from __future__ import annotations

from typing import Any

import pytest

from harness.scheduling import balanced_groups, next_in_group, run_in_slots


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


COSTS = {"kd": 1.3, "pgd": 3.0}  # a job "method/seed" costs its method's factor, 1 when it has none


def cost(job: str) -> float:
    return COSTS.get(job.split("/")[0], 1.0)


@pytest.mark.parametrize(("jobs", "slots", "expected"), [
    # one group per slot, whatever the cell: smoke's 4 methods x 2 seeds on 2 slots is 2 fits, not 4
    (["erm/0", "erm/1", "ls/0", "ls/1", "kd/0", "kd/1", "pgd/0", "pgd/1"], 2,
     [("pgd/0", "kd/0", "erm/0", "ls/0"), ("pgd/1", "kd/1", "erm/1", "ls/1")]),
    # longest first, each to the lightest group: 3 + 1.3 against 3 + 1 + 1
    (["erm/0", "pgd/0", "kd/0", "erm/1", "pgd/1"], 2, [("pgd/0", "kd/0"), ("pgd/1", "erm/0", "erm/1")]),
    # equal costs: the order given, dealt round the slots
    (["x/1", "x/0", "x/2"], 2, [("x/1", "x/2"), ("x/0",)]),
    (["x/0", "x/1"], 4, [("x/0",), ("x/1",)]),  # fewer runs than slots: one run a group
    (["x/0", "x/1"], 1, [("x/0", "x/1")]),
    ([], 3, []),
])
def test_groups_mix_cells_one_per_slot_balanced_longest_first(jobs: list[str], slots: int,
                                                               expected: list[tuple[str, ...]]) -> None:
    groups = balanced_groups(jobs, slots, cost)
    assert groups == expected
    assert sorted(job for group in groups for job in group) == sorted(jobs)  # every job once


def test_the_next_run_of_a_group_is_the_interrupted_one_else_the_first_whose_teacher_is_ready() -> None:
    ready = {"erm": True, "kd-s0": False, "kd-s1": True}.__getitem__
    assert next_in_group(["kd-s0", "erm"], None, ready) == "erm"  # kd-s0's teacher still trains
    assert next_in_group(["kd-s0", "kd-s1", "erm"], None, ready) == "kd-s1"
    assert next_in_group(["kd-s0", "erm"], "kd-s0", ready) == "kd-s0"  # a restart resumes its run first
    assert next_in_group(["erm"], "kd-s0", ready) == "erm"  # the interrupted run is no longer pending
    assert next_in_group(["kd-s0"], None, ready) is None  # nothing can train: wait for a teacher
