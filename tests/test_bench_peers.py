"""bench/peers.py at toy size (digits, 2 trials, one seed), in-process parts only, so the bench cannot rot:
the Optuna peer trains what a harness trial trains, the in-process final phase runs every method and
teacher, and the report renders its ratios and lands between its markers."""

from __future__ import annotations

import importlib
import math
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from harness.errors import SuiteError
from harness.jobs import RunSpec, tuning_trial

ROOT = Path(__file__).resolve().parent.parent
TOY = ["final.seeds=[0]", "benchmarks[0].augment=false", "methods=[{name: erm}, {name: kd}]",
       "benchmarks[0].budget.epochs=1", "benchmarks[0].tuning_budget.epochs=1",
       "benchmarks[0].teacher.budget.epochs=1", "evaluation.metrics=[accuracy, nll]"]


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))  # the bench scripts import their siblings by name
        return importlib.import_module("peers")


@pytest.fixture(scope="module")
def suites(peers: ModuleType):
    return peers.load_peer_suites(ROOT / "suites" / "smoke.yaml", "erm", 2, TOY)


def test_optuna_peer_trains_what_a_harness_trial_trains(peers: ModuleType, suites) -> None:
    peer = peers.optuna_alone(suites)
    assert len(peer.trials) == 2 and peer.wall_s > 0
    for trial in peer.trials:
        assert set(trial.params) == set(suites.space)
        for key, value in trial.params.items():
            assert suites.space[key].low <= value <= suites.space[key].high
    cell, seeds = suites.cell, suites.seeds
    spec = RunSpec(benchmark=cell.tune_benchmark, method=cell.method, seed=seeds.trial, protocol=cell.protocol,
                   split_seed=seeds.tuning_split, threads=1)
    reports: list[dict] = []
    tuning_trial(replace(spec, hyperparams=peer.trials[0].params), reports.append)
    # same init, data order and schedule; only the thread count differs, so within a sample or two
    assert peer.trials[0].accuracy == pytest.approx(reports[-1]["val/accuracy"], abs=0.03)


def test_sequential_final_runs_every_method_and_renders(peers: ModuleType, suites, tmp_path: Path) -> None:
    configs = peers.final_configs(suites.final, {})
    phase = peers.sequential_final(suites.final, configs)
    assert [run.label for run in phase.runs] == ["digits/erm seed 0", "digits/kd seed 0"]
    assert all(0 < run.loop_s <= run.wall_s and 0 < run.accuracy <= 1 for run in phase.runs)
    assert phase.teachers_s > 0 and phase.wall_s >= sum(run.wall_s for run in phase.runs)

    optuna_peer = peers.TuningPeer("(a) Optuna alone", 10.0, [peers.Trial({"train.lr": 0.1}, 0.9)], "toy")
    ray_peer = replace(optuna_peer, label="(b) Ray defaults", wall_s=30.0, trials=[peers.Trial({"train.lr": 0.1}, 0.8)])
    harness_peer = replace(optuna_peer, label="(c) harness", wall_s=12.0, parts={"`tune_all`": 9.0})
    harness_final = replace(phase, label="(c) harness", wall_s=phase.wall_s / 2 * 1.5)
    results = peers.Results("python bench/peers.py --toy", suites, [optuna_peer, ray_peer, harness_peer],
                            harness_final, phase, 2, {"cores": "2", "cpu": "cpu", "memory": "1 GiB", "python": "3",
                                                      "torch": "t", "ray": "r", "load_start": "1.00",
                                                      "load_end": "2.00"})
    assert results.ratios() == pytest.approx({"vs_optuna": 1.2, "vs_ray_defaults": 0.4, "final": 1.5})
    assert peers.same_config_gaps(results.tuning) == (1, pytest.approx(0.1))
    section = peers.report_markdown(results)
    assert "| harness tuning wall / Optuna alone | 12.0 / 10.0 s = 1.20 | <= 1.1 | **missed** |" in section
    assert "| harness tuning wall / Ray Tune with its defaults | 12.0 / 30.0 s = 0.40 | <= 0.5 | met |" in section
    assert "load average 1.00 at the start, 2.00 at the end" in section
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    peers.write_section(doc, section, peers.SECTION)
    text = doc.read_text()
    assert "kept" in text and text.count("<!-- peers:start -->") == 1 and peers.SECTION_TITLE in text
    assert not math.isnan(results.ratios()["final"])


@pytest.mark.parametrize(("overrides", "method", "key"), [
    (["benchmarks[0].augment=true"], "erm", "benchmarks[0].augment"),
    (TOY, "nope", "methods"),
    (TOY, "kd", "methods[0].name"),
])
def test_a_job_the_plain_loop_cannot_train_is_refused(peers: ModuleType, overrides: list[str], method: str,
                                                      key: str) -> None:
    with pytest.raises(SuiteError) as error:
        peers.load_peer_suites(ROOT / "suites" / "smoke.yaml", method, 2, overrides)
    assert error.value.key_path == key
