"""Grouped final runs (`fit_final_group`): several runs in one Ray Train fit give each run the metrics its
own `fit_final` would, hand each to the driver's inbox once as it finishes, and a worker killed in the
middle of one run resumes that run from its own checkpoint while the runs already finished are skipped.
Through the runner, a run that raises is a failed row and the runs grouped with it still train and store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.store import read_results
from harness.suite import load_suite

pytestmark = pytest.mark.ray
SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
REPO = SMOKE.parent.parent
# the clocks, the place and the resume point: everything else a run reports is its result
NOT_RESULTS = ("wall_s", "cost/", "latency", "throughput", "node_id", "hardware", "resumed_from_epoch")


def deterministic(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if not any(word in key for word in NOT_RESULTS)}


def test_a_group_trains_each_run_as_its_own_fit_and_resumes_a_killed_run_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """88 steps a run (22 an epoch), a checkpoint each epoch; `dies` kills its worker at step 50, after the
    epoch-2 checkpoint, while `lives` (the same run, whose marker exists) has already finished."""
    monkeypatch.setenv("HARNESS_PLUGINS", "tests.failing_plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    import tests.failing_plugin  # noqa: F401  (registers dies_once here too, to resolve the suite)
    from harness import cluster
    from harness.final_runs import GroupRun, Workers, drain_inbox, fit_final, fit_final_group, open_inbox
    from harness.jobs import RunSpec
    from harness.storage import local_storage

    died, spared = tmp_path / "died", tmp_path / "spared"
    spared.touch()
    suite = load_suite(SMOKE, [f"methods=[{{name: erm}}, {{name: dies_once, label: dies, config: {{step: 50, "
                               f"marker: '{died}'}}}}, {{name: dies_once, label: lives, config: {{step: 50, "
                               f"marker: '{spared}'}}}}]"])
    erm, dies, lives = suite.methods

    def spec(method: Any, seed: int) -> RunSpec:
        return RunSpec(benchmark=suite.benchmarks[0], method=method, seed=seed, metrics=("accuracy", "nll"))

    runs = [GroupRun("lives", spec(lives, 0)), GroupRun("dies", spec(dies, 0)), GroupRun("erm-s1", spec(erm, 1))]
    storage = local_storage(tmp_path / "scratch")
    cluster.connect(num_cpus=2)
    try:
        inbox = open_inbox()
        grouped = fit_final_group(runs, storage=storage, name="group", workers=Workers(), checkpoint_every=1,
                                  max_failures=1, inbox=inbox)
        messages = drain_inbox(inbox)
        alone = fit_final(spec(erm, 1), None, storage=storage, name="erm-s1", workers=Workers(), checkpoint_every=1)
    finally:
        cluster.shutdown()
    assert died.exists()  # the worker did die, in the group's second run
    # each run reached the driver once, in order: the restarted worker group skipped `lives`, already finished
    assert [(name, error) for name, _, error in messages] == [("lives", None), ("dies", None), ("erm-s1", None)]
    assert {name: metrics for name, metrics, _ in messages} == grouped
    # the killed run resumed from its own checkpoint (epoch 2's, or epoch 1's if Train had not registered
    # the newer one when the worker died) and ended exactly where the run that never died did
    assert grouped["dies"]["train/resumed_from_epoch"] in (1, 2)
    assert grouped["lives"]["train/resumed_from_epoch"] == -1
    assert deterministic(grouped["dies"]) == deterministic(grouped["lives"])
    # a run trained after others in the same worker process gets the metrics of its own fit
    assert grouped["erm-s1"]["train/resumed_from_epoch"] == -1
    assert deterministic(grouped["erm-s1"]) == deterministic(alone)
    assert 0.5 < grouped["erm-s1"]["test/accuracy"] <= 1.0 and grouped["erm-s1"]["world_size"] == 1


def test_a_seed_that_raises_fails_alone_and_the_seeds_grouped_after_it_still_run(tmp_path: Path) -> None:
    """One cell on 2 slots: seeds [1, 2] are one group and [0] another (equal costs dealt round the slots);
    seed 1 raises at step 40 (of 88), so its group stops there, and seed 2 trains as a new group."""
    overrides = ("methods=[{name: fails_at_step, label: flaky, config: {step: 40, seed: 1}}]", "tuning.trials=1",
                 "final.seeds=[1, 0, 2]", "final.max_failures=0")
    env = {**os.environ, "HARNESS_PLUGINS": "tests.failing_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "harness.run", "suites/smoke.yaml", "--out", str(tmp_path), "--no-dashboard"]
    for override in overrides:
        args += ["--set", override]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # done, with a failed run
    import tests.failing_plugin  # noqa: F401

    suite = load_suite(SMOKE, overrides)
    rows = read_results(tmp_path / suite.name / suite.hash)
    final = rows[rows["phase"] == "final"].set_index("seed")
    assert final.loc[1, "status"] == "failed" and "injected failure at step 40" in final.loc[1, "error"]
    assert final.loc[0, "status"] == "ok" and final.loc[2, "status"] == "ok"
    assert final.loc[0, "train/steps"] == final.loc[2, "train/steps"] == 88
    fits = sorted(path.name for path in (tmp_path / suite.name / suite.hash / "ray_train").iterdir() if path.is_dir())
    assert sum(name.endswith("-group2") for name in fits) == 1 and len(fits) == 3, fits  # [1, 2], [0], then [2]


def test_a_run_waiting_for_its_teacher_lets_its_group_mates_train_first(tmp_path: Path) -> None:
    """A group [kd-s0, kd-s1, erm-s0]: kd-s0's teacher is held until erm-s0 has landed, kd-s1's fails. The
    group trains erm-s0 first (a slot never idles on a teacher while another run could train), fails
    kd-s1 alone with its teacher's error, and trains kd-s0 once its teacher's weights are ready."""
    import io
    import time

    import ray
    import torch

    from harness import cluster
    from harness.data.access import dataset_info
    from harness.final_runs import GroupRun, Workers, drain_inbox, open_inbox, submit_final_group
    from harness.jobs import RunSpec, build_for
    from harness.storage import local_storage

    suite = load_suite(SMOKE, ["methods=[{name: erm}, {name: kd}]"])
    bench, (erm, kd) = suite.benchmarks[0], suite.methods
    assert bench.teacher is not None
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(build_for(bench, dataset_info(bench.dataset), bench.teacher.model).state_dict(), buffer)
    release = tmp_path / "release"

    def held_teacher(weights: bytes) -> bytes:  # defined here so Ray pickles it by value, not by module
        """A teacher still training: its weights come once `release` exists (or after 40 s, so a group
        that waits for it at its start still ends, in the wrong order, instead of hanging the test)."""
        deadline = time.monotonic() + 40
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return weights

    def broken_teacher() -> bytes:
        raise RuntimeError("injected teacher failure")

    def spec(method: Any) -> RunSpec:
        return RunSpec(benchmark=bench, method=method, seed=0, metrics=("accuracy",))

    cluster.connect(num_cpus=2)
    try:
        held = ray.remote(num_cpus=0)(held_teacher).remote(buffer.getvalue())
        broken = ray.remote(num_cpus=0, max_retries=0)(broken_teacher).remote()
        runs = [GroupRun("kd-s0", spec(kd), held), GroupRun("kd-s1", spec(kd), broken), GroupRun("erm-s0", spec(erm))]
        inbox = open_inbox()
        ref = submit_final_group(runs, storage=local_storage(tmp_path / "scratch"), name="group", workers=Workers(),
                                 inbox=inbox)
        messages: list[tuple[str, Any, Any]] = []
        while not ray.wait([ref], timeout=0.2)[0]:
            messages += drain_inbox(inbox)
            if any(name == "erm-s0" for name, _, _ in messages):
                release.touch()
        finished = ray.get(ref)
        messages += drain_inbox(inbox)
    finally:
        cluster.shutdown()
    order = [name for name, _, _ in messages]
    assert sorted(order) == ["erm-s0", "kd-s0", "kd-s1"], order  # each run reached the driver once
    assert order.index("erm-s0") < order.index("kd-s0"), messages
    errors = {name: error for name, _, error in messages}
    assert errors["erm-s0"] is None and errors["kd-s0"] is None
    assert "injected teacher failure" in errors["kd-s1"]
    assert set(finished) == {"erm-s0", "kd-s0"} and finished["kd-s0"]["train/steps"] == finished["erm-s0"]["train/steps"]


def test_a_group_whose_fit_returns_an_error_raises_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit that returns (not raises) an error must not read as a group whose runs all finished: the
    driver needs the error to fail the run it stopped in and restart the others."""
    from types import SimpleNamespace

    from harness import final_runs
    from harness.final_runs import GroupRun, fit_final_group
    from harness.storage import local_storage

    class Broken(RuntimeError):
        pass

    fit = SimpleNamespace(fit=lambda: SimpleNamespace(error=Broken("worker lost"), checkpoint=None))
    monkeypatch.setattr(final_runs, "trainer", lambda *args, **kwargs: fit)
    with pytest.raises(Broken, match="worker lost"):
        fit_final_group([GroupRun("a", None)], storage=local_storage(tmp_path), name="group")  # type: ignore[arg-type]
