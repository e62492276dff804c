"""Tuning protocols as classes (`harness.protocols`): what each built-in declares, and that a protocol
from outside the harness (`tests/toy_protocol.py`, one class) validates in a suite, raises its own
checks with the key path, and decides what the plan and the tuning trial read. No Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import harness.jobs
import tests.toy_protocol  # noqa: F401  (registers small_holdout in this process, as $HARNESS_PLUGINS would)
from dashboards.protocols import protocol_class
from harness.data import DataAccess, ImageArrays, test_split_sealed
from harness.errors import SuiteError
from harness.jobs import RunSpec, tuning_trial
from harness.plan import Cell, suite_cells
from harness.plugins import PLUGINS_ENV
from harness.protocols import (
    PROTOCOLS,
    CrossDataset,
    Holdout,
    Oracle,
    TuningProtocol,
    get_protocol,
    is_honest,
    must_not_read_test,
    protocol_label,
    protocol_sort_key,
    vouched_honest,
)
from harness.suite import BenchmarkSpec, Budget, MethodEntry, TrainSpec, load_suite
from tests.toy_protocol import SmallHoldout

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"


def digits_bench(**changes: Any) -> BenchmarkSpec:
    fields: dict[str, Any] = dict(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(epochs=1),
                                  augment=False, train=TrainSpec(batch_size=64))
    fields.update(changes)
    return BenchmarkSpec(**fields)


# ---------------------------------------------------------------- what the built-ins declare


def test_the_built_in_protocols_declare_their_splits_honesty_and_seal() -> None:
    holdout, cross, oracle = (get_protocol(name) for name in ("holdout", "cross_dataset", "oracle"))
    assert holdout.tuning_splits == cross.tuning_splits == ("tune_train", "tune_val")
    assert holdout.honest and cross.honest and holdout.seals_test and cross.seals_test
    assert oracle.tuning_splits == ("tune_train", "test") and not oracle.honest and not oracle.seals_test
    assert oracle.label == "oracle (tuned on test)" and oracle.caveat
    assert isinstance(oracle, Oracle) and isinstance(holdout, Holdout) and isinstance(cross, CrossDataset)


def test_cross_dataset_tunes_on_the_tune_dataset_and_the_others_on_the_dataset() -> None:
    bench = digits_bench(tune_dataset="digits28")
    assert get_protocol("cross_dataset").tuning_dataset(bench) == "digits28"
    assert get_protocol("holdout").tuning_dataset(bench) == get_protocol("oracle").tuning_dataset(bench) == "digits"


def test_a_protocol_that_reads_test_cannot_call_itself_honest() -> None:
    with pytest.raises(TypeError, match="cannot be honest"):
        class Peeking(TuningProtocol):  # noqa: F841 - defining it is what fails
            name, label, summary = "peeking", "peeking", "scores on test"
            tuning_splits = ("tune_train", "test")


def test_protocols_are_ordered_honest_first_oracle_last_and_unknown_names_after() -> None:
    names = ["oracle", "retired_protocol", "cross_dataset", "small_holdout", "holdout"]
    assert sorted(names, key=protocol_sort_key) == ["holdout", "small_holdout", "cross_dataset", "oracle",
                                                    "retired_protocol"]
    assert protocol_label("retired_protocol") == "retired_protocol"
    assert not is_honest("oracle") and protocol_label("small_holdout") == SmallHoldout.label


def test_an_unregistered_protocol_is_neither_vouched_for_nor_excused_from_the_seal() -> None:
    """A row whose protocol plugin is not loaded here: its honesty is unknown, so displays flag it like the
    oracle, and verification still demands that its tuning never read test."""
    assert is_honest("retired_protocol") is None
    assert not vouched_honest("retired_protocol") and must_not_read_test("retired_protocol")
    assert vouched_honest("holdout") and must_not_read_test("holdout")
    assert not vouched_honest("oracle") and not must_not_read_test("oracle")
    assert protocol_class("retired_protocol") == protocol_class("oracle") != protocol_class("holdout")


# ---------------------------------------------------------------- a protocol from a plugin


def test_a_plugin_protocol_validates_in_a_suite_and_plans_its_cells() -> None:
    suite = load_suite(SMOKE, ["protocols=[holdout, small_holdout]", "methods=[{name: erm}]"])
    assert "small_holdout" in PROTOCOLS and suite.protocols == ("holdout", "small_holdout")
    cells = suite_cells(suite)
    assert [cell.key for cell in cells] == ["holdout:digits:erm", "small_holdout:digits:erm"]
    assert cells[1].tune_benchmark == cells[1].benchmark  # it tunes on the benchmark's own dataset


def test_a_plugin_protocols_check_raises_a_suite_error_with_the_key_path() -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(SMOKE, ["protocols=[small_holdout]", "benchmarks[0].tune_val_size=50"])
    assert caught.value.key_path == "benchmarks[0].tune_val_size" and "would repeat holdout" in caught.value.message
    load_suite(SMOKE, ["protocols=[holdout]", "benchmarks[0].tune_val_size=50"])  # only small_holdout minds


def test_an_unknown_protocol_name_is_refused_with_the_nearest_registered_one() -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(SMOKE, ["protocols=[holdout, small_holdot]"])
    assert caught.value.key_path == "protocols[1]" and "did you mean 'small_holdout'?" in caught.value.message


class RecordingAccess(DataAccess):
    """A DataAccess that records how it was opened, what it handed out, and whether the seal was on."""

    opened: list[RecordingAccess] = []

    def __init__(self, dataset: str, phase: Any, **kwargs: Any) -> None:
        super().__init__(dataset, phase, **kwargs)
        self.sizes_handed: dict[str, int] = {}
        self.sealed_while_open = test_split_sealed()
        RecordingAccess.opened.append(self)

    def split(self, name: str) -> ImageArrays:
        arrays = super().split(name)
        self.sizes_handed[name] = len(arrays)
        return arrays


@pytest.mark.parametrize(("protocol", "phase", "scored_on", "sealed"), [
    ("holdout", "tune", "tune_val", True),
    ("small_holdout", "tune", "tune_val", True),
    ("oracle", "oracle", "test", False),
])
def test_the_tuning_trial_reads_the_splits_its_protocol_declares(
    protocol: str, phase: str, scored_on: str, sealed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.jobs, "DataAccess", RecordingAccess)
    monkeypatch.setattr(RecordingAccess, "opened", [])
    reports: list[dict] = []
    spec = RunSpec(benchmark=digits_bench(), method=MethodEntry(name="erm"), seed=0, protocol=protocol,
                   hyperparams={"train.lr": 0.05})
    outcome = tuning_trial(spec, reports.append)
    (access,) = RecordingAccess.opened
    assert (access.phase, access.sealed_while_open) == (phase, sealed)
    assert set(access.sizes_handed) == {"tune_train", scored_on}
    assert outcome["splits_read"] == ",".join(sorted({"tune_train", scored_on}))
    if protocol == "small_holdout":  # scored on its 64 examples, trained on exactly what holdout trains on
        assert access.sizes_handed["tune_val"] == SmallHoldout.val_size
        assert access.sizes_handed["tune_train"] == len(DataAccess("digits", "tune").split("tune_train"))
        assert float(reports[-1]["val/accuracy"] * SmallHoldout.val_size).is_integer()


def test_a_holdout_cell_and_a_small_holdout_cell_share_the_training_split() -> None:
    """So a tune-phase teacher (trained on the holdout tune_train) never saw small_holdout's selection split."""
    bench = digits_bench()
    small = get_protocol("small_holdout").tuning_data(bench, split_seed=3)
    held = get_protocol("holdout").tuning_data(bench, split_seed=3)
    assert (small.val_fraction, small.split_seed, small.tune_train_size) == (held.val_fraction, 3, None)
    assert small.tune_val_size == SmallHoldout.val_size and held.tune_val_size is None
    assert Cell(bench, "small_holdout", MethodEntry(name="erm")).tune_benchmark == bench


@pytest.mark.parametrize("plugins", ["tests.toy_protocol", ""])
def test_the_cli_discovers_plugin_protocols_before_it_validates_protocol_names(plugins: str, tmp_path: Path) -> None:
    """In a fresh process: with $HARNESS_PLUGINS the toy protocol is known (its own check fails, exit 2);
    without it, the same suite names an unknown protocol. Both exit before anything runs."""
    root = SMOKE.parent.parent
    env = {**os.environ, PLUGINS_ENV: plugins, "PYTHONPATH": os.pathsep.join(filter(None, [str(root),
                                                                                          os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "harness.run", str(SMOKE), "--out", str(tmp_path), "--set",
               "protocols=[small_holdout]", "--set", "benchmarks[0].tune_val_size=50"]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    expected = "benchmarks[0].tune_val_size: small_holdout scores on 64" if plugins else "protocols[0]: unknown protocol"
    assert expected in done.stderr and not any(tmp_path.iterdir())
