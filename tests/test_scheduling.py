"""The final runs' slots, without a cluster: `ray.wait` is replaced by a stand-in that finishes the
running job chosen by the test, so the order of submits and completions is exact."""

from __future__ import annotations

from typing import Any

import pytest

from harness.scheduling import run_in_slots


class Refs:
    """Fake ObjectRefs: `finish_order` says which running job `ray.wait` hands back next."""

    def __init__(self, finish_order: list[str]) -> None:
        self.finish_order, self.running, self.most_running = list(finish_order), set(), 0

    def submit(self, job: str) -> str:
        self.running.add(job)
        self.most_running = max(self.most_running, len(self.running))
        return f"ref-{job}"

    def wait(self, refs: list[str], num_returns: int = 1) -> tuple[list[str], list[str]]:
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
