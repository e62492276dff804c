"""Resources in the suite: CPUs, GPUs and workers per tuning trial and per final run.

Most of this is arithmetic and configuration, tested without a cluster (GPU paths included, since
building a GPU ScalingConfig needs no GPU); one test runs a 2-worker tuning trial through a real
`TorchTrainer` inside Ray Tune.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import harness.tuning as tuning_module
from harness.cluster import ClusterInfo, slots
from harness.errors import HarnessInputError, SuiteError
from harness.final_runs import Workers, trainer
from harness.jobs import RunSpec
from harness.progress import Progress
from harness.run import EXIT_BAD_INPUT, check_cluster_fits, main
from harness.runner import SuiteRunner
from harness.storage import local_storage
from harness.store import read_results
from harness.suite import FinalSpec, TuningSpec, load_suite
from harness.tuning import (
    CELL_KEY,
    DRIVER_RESOURCES,
    TRIAL_KEY,
    trial_concurrency,
    trial_resources,
    trial_training,
)

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"


# ---------------------------------------------------------------- the suite keys


def test_default_resources_leave_the_suite_hash_alone() -> None:
    plain = load_suite(SMOKE)
    spelled_out = load_suite(SMOKE, ["tuning.workers=1", "tuning.gpus_per_trial=0", "final.gpus_per_worker=0"])
    dumped = plain.model_dump(mode="json")
    assert "workers" not in dumped["tuning"] and "gpus_per_trial" not in dumped["tuning"]
    assert "gpus_per_worker" not in dumped["final"]
    assert spelled_out.hash == plain.hash  # existing result directories stay resumable
    assert load_suite(SMOKE, ["tuning.workers=2", "tuning.cpus_per_trial=2"]).hash != plain.hash


@pytest.mark.parametrize(("overrides", "path", "says"), [
    (["tuning.workers=2"], "tuning.cpus_per_trial", "need at least one CPU each"),
    (["tuning.gpus_per_trial=2"], "tuning.gpus_per_trial", "raise tuning.workers"),
    (["tuning.workers=2", "tuning.cpus_per_trial=2", "tuning.gpus_per_trial=1"], "tuning.gpus_per_trial",
     "whole GPU each"),
    (["final.workers=2", "final.gpus_per_worker=0.5"], "final.gpus_per_worker", "whole GPU each"),
    (["final.gpus_per_worker=2"], "final.gpus_per_worker", "raise final.workers"),
    (["tuning.gpus_per_trial=-0.5"], "tuning.gpus_per_trial", "greater than or equal to 0"),
    (["tuning.workers=0"], "tuning.workers", "greater than 0"),
    (["tuning.worker=2"], "tuning.worker", "did you mean 'workers'"),
])
def test_impossible_resources_name_their_key(overrides: list[str], path: str, says: str) -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(SMOKE, overrides)
    assert caught.value.key_path == path
    assert says in str(caught.value)


def test_the_cli_refuses_impossible_resources_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([str(SMOKE), "--out", str(tmp_path), "--set", "tuning.gpus_per_trial=1.5"])
    assert code == EXIT_BAD_INPUT
    assert "tuning.gpus_per_trial" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_fractional_gpus_are_allowed_for_one_worker() -> None:
    suite = load_suite(SMOKE, ["tuning.gpus_per_trial=0.25", "final.gpus_per_worker=0.5"])
    assert suite.tuning.gpus_per_worker == 0.25 and suite.final.worker_gpus == 0.5
    assert FinalSpec(use_gpu=True).worker_gpus == 1.0  # `use_gpu: true` alone is one GPU per worker


# ---------------------------------------------------------------- arithmetic: how much runs at once


@pytest.mark.parametrize(("cluster", "each", "expected"), [
    ((2, 0), (1, 0), 2),          # today's default on this machine: one trial per CPU
    ((2, 0), (2, 0), 1),          # a 2-worker trial takes both CPUs
    ((16, 1), (1, 0.25), 4),      # four quarter-GPU trials share one GPU
    ((16, 2), (2, 1), 2),         # GPUs are the scarcer resource
    ((3, 1), (1, 0.1), 3),        # CPUs are
    ((1, 1), (1, 0.3333), 1),
    ((4, 0), (8, 0), 1),          # never below one (check_cluster_fits refuses what cannot fit)
])
def test_slots_follow_the_scarcer_resource(cluster: tuple, each: tuple, expected: int) -> None:
    assert slots(*cluster, *each) == expected
    assert ClusterInfo("addr", cluster[0], cluster[1], 1).slots(*each) == expected


def test_tuning_concurrency_counts_every_worker_of_a_trial() -> None:
    assert trial_concurrency(TuningSpec(), 2) == 2
    assert trial_concurrency(TuningSpec(workers=2, cpus_per_trial=2), 2) == 1
    assert trial_concurrency(TuningSpec(workers=2, cpus_per_trial=4, gpus_per_trial=2), 32, 4) == 2
    assert trial_concurrency(TuningSpec(gpus_per_trial=0.25), 8, 1) == 4
    assert trial_concurrency(TuningSpec(max_concurrent=3), 64, 8) == 3


def test_a_cluster_without_the_gpus_a_suite_asks_for_is_refused() -> None:
    cpu_only = ClusterInfo("addr", 8, 0, 2)
    check_cluster_fits(load_suite(SMOKE), cpu_only)
    with pytest.raises(HarnessInputError, match=r"tuning\.cpus_per_trial / tuning\.gpus_per_trial.*0\.25 GPU"):
        check_cluster_fits(load_suite(SMOKE, ["tuning.gpus_per_trial=0.25"]), cpu_only)
    with pytest.raises(HarnessInputError, match=r"final\.workers.*needs 16 CPUs but the cluster has 8"):
        check_cluster_fits(load_suite(SMOKE, ["final.workers=4", "final.cpus_per_worker=4"]), cpu_only)


def test_a_teacher_trains_on_one_final_workers_share_gpu_included(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A distillation teacher is a Ray task holding a final worker's CPUs and GPUs, so it trains on a GPU."""
    import ray

    asked: dict[str, Any] = {}

    def remote(**options: Any) -> Any:
        asked.update(options)
        return lambda fn: type("Task", (), {"remote": staticmethod(lambda *args: ("weights", "metrics"))})

    monkeypatch.setattr(ray, "remote", remote)
    suite = load_suite(SMOKE.parent / "distillation.yaml", ["final.cpus_per_worker=2", "final.gpus_per_worker=1"])
    runner = SuiteRunner(suite, tmp_path, Progress(quiet=True), ClusterInfo("addr", 4, 1, 1))
    assert runner.teachers.source(suite.benchmarks[0], "final", 0) == "weights"
    assert (asked["num_cpus"], asked["num_gpus"]) == (2, 1.0)


# ---------------------------------------------------------------- what Tune and Train are asked for


def test_a_single_worker_trial_holds_its_resources_itself() -> None:
    assert trial_resources(TuningSpec()) == {"cpu": 1}
    assert trial_resources(TuningSpec(cpus_per_trial=2, gpus_per_trial=0.25)) == {"cpu": 2, "gpu": 0.25}
    assert trial_training(TuningSpec(gpus_per_trial=0.25), None).workers is None  # in place, no TorchTrainer


def test_a_multi_worker_trial_is_a_light_driver_and_its_workers_hold_the_resources(tmp_path: Path) -> None:
    spec = TuningSpec(workers=2, cpus_per_trial=4, gpus_per_trial=2)
    assert trial_resources(spec) == DRIVER_RESOURCES
    assert DRIVER_RESOURCES.get("cpu", 0) == 0 and "gpu" not in DRIVER_RESOURCES
    training = trial_training(spec, local_storage(tmp_path))
    assert training.workers == Workers(count=2, cpus=2.0, gpus=1.0)


def test_gpu_workers_get_a_gpu_scaling_config_and_nccl() -> None:
    built = trainer(lambda config: None, {}, Workers(count=2, cpus=4, gpus=1), _run_config())
    assert built.scaling_config.num_workers == 2 and built.scaling_config.use_gpu
    assert built.scaling_config.resources_per_worker == {"CPU": 4, "GPU": 1}
    assert built.backend_config.backend == "nccl"
    shared = Workers(count=1, cpus=1, gpus=0.25).scaling_config()
    assert shared.use_gpu and shared.resources_per_worker == {"CPU": 1, "GPU": 0.25}


def test_cpu_workers_get_gloo_and_no_gpu() -> None:
    built = trainer(lambda config: None, {}, Workers(count=2, cpus=1), _run_config())
    assert not built.scaling_config.use_gpu and built.scaling_config.resources_per_worker == {"CPU": 1}
    assert built.backend_config.backend == "gloo"
    assert Workers(count=2, cpus=2.5).threads == 2 and Workers(cpus=0.5).threads == 1


def _run_config() -> Any:
    from ray.train import RunConfig

    return RunConfig(name="unit", storage_path="/tmp/harness-unit-never-written")


def test_the_trial_function_trains_in_place_by_default_and_through_train_with_workers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(tuning_module, "tuning_trial", lambda spec, report, teacher: calls.append(("in place", spec)))
    import harness.final_runs

    monkeypatch.setattr(harness.final_runs, "fit_tuning_trial",
                        lambda spec, teacher, **kwargs: calls.append(("train", kwargs)))
    monkeypatch.setattr(tuning_module.tune, "get_context", lambda: type("C", (), {"get_trial_id": lambda s: "t1"})())
    spec = RunSpec(benchmark=load_suite(SMOKE).benchmarks[0], method=load_suite(SMOKE).methods[0], seed=0)
    config = {CELL_KEY: "holdout:digits:erm", TRIAL_KEY: 3, "train.lr": 0.1}
    cells = {"holdout:digits:erm": (spec, None)}

    tuning_module._trial_function(config, cells, trial_training(TuningSpec(), None))
    assert calls[-1][0] == "in place" and calls[-1][1].hyperparams == {"train.lr": 0.1}

    storage = local_storage(tmp_path)
    tuning_module._trial_function(config, cells, trial_training(TuningSpec(workers=2, cpus_per_trial=2), storage))
    kind, kwargs = calls[-1]
    assert kind == "train" and kwargs["workers"] == Workers(count=2, cpus=1.0, gpus=0.0)
    assert kwargs["name"] == "tune-holdout_digits_erm-0003-t1" and kwargs["storage"] == storage


# ---------------------------------------------------------------- through real Ray


@pytest.mark.ray
def test_a_two_worker_tuning_trial_trains_through_torch_trainer(repo_root: Path, tmp_path: Path) -> None:
    """A small suite whose trials have 2 workers: the trial runs as a 2-worker TorchTrainer inside Tune,
    reports every epoch back to Tune, and its Ray Train / Tune scratch goes to the file:// storage."""
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    overrides = ["methods=[{name: erm}]", "tuning.trials=1", "final.seeds=[0]", "tuning.workers=2",
                 "tuning.cpus_per_trial=2", "final.checkpoint_every=0", f"output.storage=file://{scratch}"]
    args = [sys.executable, "-m", "harness.run", "suites/smoke.yaml", "--out", str(out), "--no-dashboard"]
    for override in overrides:
        args += ["--set", override]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    run_dir = out / suite.name / suite.hash
    rows = read_results(run_dir)
    trial = rows[rows["phase"] == "tune"].iloc[0]
    assert trial["status"] == "ok" and trial["tune/workers"] == 2.0  # reported from inside the 2-worker group
    assert trial["tune/iterations"] == 2.0  # both epochs reached Tune, one report each
    assert 0.0 < trial["val/accuracy"] <= 1.0 and trial["node_id"]
    assert (rows[rows["phase"] == "final"]["status"] == "ok").all()
    # the trial's Ray Train run, the final run and Tune's experiment live in the storage, not the run dir
    scratch_root = scratch / suite.name / suite.hash
    assert [p.name for p in (scratch_root / "ray_train").iterdir() if p.name.startswith("tune-holdout_digits_erm-0000")]
    assert any(p.name.startswith("final-holdout-digits-erm-s0") for p in (scratch_root / "ray_train").iterdir())
    assert any((scratch_root / "ray_tune").iterdir())
    assert not (run_dir / "ray_train").exists() and not (run_dir / "ray_tune").exists()
    assert (run_dir / "results.parquet").exists()


@pytest.mark.ray
def test_an_ended_trials_worker_group_gives_its_resources_back() -> None:
    """What the driver does when a multi-worker trial ends: a placement group its Train run left behind
    (as when ASHA stops the trial mid-fit) is removed, so the next trial's workers can be placed."""
    import ray
    from ray.util.placement_group import placement_group

    from harness import cluster
    from harness.tuning import _release_workers

    cluster.connect(num_cpus=2)
    try:
        group = placement_group([{"CPU": 1}, {"CPU": 1}])
        ray.get(group.ready(), timeout=60)
        assert ray.available_resources().get("CPU", 0) == 0
        _release_workers({"train_placement_group": group.id.hex(), "val/accuracy": 0.5})
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 2
        _release_workers({"train_placement_group": group.id.hex()})  # already gone: nothing to do
        _release_workers({"val/accuracy": 0.5})  # a single-worker trial reports no group
    finally:
        cluster.shutdown()
