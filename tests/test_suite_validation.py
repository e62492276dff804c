"""Suite validation through the CLI: every malformed suite exits 2, names the YAML key path (with a
"did you mean" for typos) and writes nothing; valid suites freeze and hash deterministically.

No Ray: every CLI call here fails validation before `execute` could connect to a cluster.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

import harness.run
from harness.errors import SuiteError
from harness.run import EXIT_BAD_INPUT, main, run_dir_for
from harness.search_space import Choice, FloatRange, IntRange
from harness.suite import Suite, apply_overrides, load_suite, suite_as_yaml, validate_suite

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SUITES = sorted((ROOT / "suites").glob("*.yaml"))

Raw = dict[str, Any]


def smoke_dict() -> Raw:
    """The shipped smoke suite as a plain dict: erm, label_smoothing, kd, pgd_at on digits, with a teacher."""
    return yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())


@dataclass(frozen=True)
class Bad:
    """A malformed suite: how to break the base dict (or the raw file text), and what the error must say."""

    path: str                                     # the YAML key path the error must name
    says: str                                     # a fragment of the message
    mutate: Callable[[Raw], Any] | None = None    # edits the base dict in place, or returns a replacement
    text: str | None = None                       # raw file content instead of a dict
    overrides: tuple[str, ...] = ()
    suggestion: str | None = None                 # the "did you mean" target
    missing_file: bool = False


def _rename(key: str, new: str) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        raw[new] = raw.pop(key)
    return mutate


def _set(*path: Any, value: Any) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        node = raw
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


def _drop(*path: Any) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        node = raw
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return mutate


def _scenario(**scenario: Any) -> Callable[[Raw], None]:
    return _set("benchmarks", 0, "scenario", value=scenario)


def _add_method(name: str, **benchmark: Any) -> Callable[[Raw], None]:
    """Append method `name` to the suite (and change the first benchmark's keys)."""
    def mutate(raw: Raw) -> None:
        raw["methods"].append({"name": name})
        raw["benchmarks"][0].update(benchmark)
    return mutate


BAD_SUITES: dict[str, Bad] = {
    "unknown-top-level-key": Bad("benchmark", "unknown key", _rename("benchmarks", "benchmark"),
                                 suggestion="benchmarks"),
    "unknown-nested-key": Bad("tuning.trails", "unknown key", _set("tuning", "trails", value=3), suggestion="trials"),
    "unknown-key-in-benchmark-evaluation": Bad(
        "benchmarks[0].evaluation.pgd_stps", "unknown key",
        _set("benchmarks", 0, "evaluation", "pgd_stps", value=3), suggestion="pgd_steps"),
    "wrong-type": Bad("tuning.trials", "valid integer", _set("tuning", "trials", value="many")),
    "zero-trials": Bad("tuning.trials", "greater than 0", _set("tuning", "trials", value=0)),
    "negative-val-fraction": Bad("benchmarks[0].val_fraction", "greater than 0",
                                 _set("benchmarks", 0, "val_fraction", value=-0.1)),
    "missing-required-key": Bad("benchmarks[0].model", "required key is missing", _drop("benchmarks", 0, "model")),
    "no-methods": Bad("methods", "at least 1", _set("methods", value=[])),
    "unknown-dataset": Bad("benchmarks[0].dataset", "unknown dataset 'fashion_mnst'",
                           _set("benchmarks", 0, "dataset", value="fashion_mnst"), suggestion="fashion_mnist"),
    "unknown-model": Bad("benchmarks[0].model", "unknown model 'tiny_cnnn'",
                         _set("benchmarks", 0, "model", value="tiny_cnnn"), suggestion="tiny_cnn"),
    "unknown-method": Bad("methods[1].name", "unknown method 'label_smothing'",
                          _set("methods", 1, "name", value="label_smothing"), suggestion="label_smoothing"),
    "unknown-method-config-key": Bad("methods[2].config.temprature", "unknown key",
                                     _set("methods", 2, "config", value={"temprature": 2.0}),
                                     suggestion="temperature"),
    "method-config-wrong-type": Bad("methods[2].config.temperature", "valid number",
                                    _set("methods", 2, "config", value={"temperature": "hot"})),
    "method-config-out-of-range": Bad("methods[1].config.smoothing", "less than 1",
                                      _set("methods", 1, "config", value={"smoothing": 1.5})),
    "search-space-key-not-a-hyper-parameter": Bad(
        "methods[1].search_space.smoothin", "'label_smoothing' has no hyper-parameter 'smoothin'",
        _set("methods", 1, "search_space", value={"smoothin": {"low": 0.0, "high": 0.2}}), suggestion="smoothing"),
    "search-space-on-method-without-hyper-parameters": Bad(
        "methods[0].search_space.lr", "its hyper-parameters: (none)",
        _set("methods", 0, "search_space", value={"lr": {"low": 0.01, "high": 0.1}})),
    "search-dimension-low-above-high": Bad(
        "methods[1].search_space.smoothing", "low (0.3) must be below high (0.2)",
        _set("methods", 1, "search_space", value={"smoothing": {"low": 0.3, "high": 0.2}})),
    "search-dimension-log-without-positive-low": Bad(
        "methods[2].search_space.temperature", "a log range needs low > 0",
        _set("methods", 2, "search_space", value={"temperature": {"low": 0.0, "high": 4.0, "log": True}})),
    "search-dimension-not-a-mapping": Bad(
        "methods[2].search_space.temperature", "a search dimension is a mapping",
        _set("methods", 2, "search_space", value={"temperature": 3.0})),
    "search-dimension-empty-choices": Bad(
        "methods[2].search_space.alpha.choices", "at least 1",
        _set("methods", 2, "search_space", value={"alpha": {"choices": []}})),
    "engine-space-untunable-key": Bad("tuning.engine_space", "cannot tune 'lrr'",
                                      _set("tuning", "engine_space", value={"lrr": {"low": 0.01, "high": 0.1}}),
                                      suggestion="lr"),
    "engine-space-range-outside-the-field": Bad("tuning.engine_space", "'momentum' cannot be 1.2",
                                                _set("tuning", "engine_space",
                                                     value={"momentum": {"low": 0.5, "high": 1.2}})),
    "budget-with-epochs-and-steps": Bad("benchmarks[0].budget", "exactly one of 'epochs' or 'steps'",
                                        _set("benchmarks", 0, "budget", value={"epochs": 1, "steps": 10})),
    "budget-with-neither": Bad("benchmarks[0].budget", "exactly one of 'epochs' or 'steps'",
                               _set("benchmarks", 0, "budget", value={})),
    "kd-without-teacher": Bad("benchmarks[0].teacher", "method 'kd' (methods[2]) needs a teacher",
                              _drop("benchmarks", 0, "teacher")),
    "mean-teacher-without-few-labels": Bad("benchmarks[0].scenario.few_labels",
                                           "method 'mean_teacher' (methods[4]) learns from unlabelled images",
                                           _add_method("mean_teacher")),
    "er-without-task-stream": Bad("benchmarks[0].scenario.continual", "method 'er' (methods[4]) trains on a task "
                                  "stream", _add_method("er", scenario={"few_labels": {"n_per_class": 5}})),
    "weight-aligning-without-task-stream": Bad("benchmarks[0].scenario.continual",
                                               "method 'weight_aligning' (methods[4]) trains on a task stream",
                                               _add_method("weight_aligning")),
    "unknown-teacher-model": Bad("benchmarks[0].teacher.model", "unknown model 'wide_cn'",
                                 _set("benchmarks", 0, "teacher", "model", value="wide_cn"), suggestion="wide_cnn"),
    "duplicate-method-labels": Bad("methods[4].label", "duplicate method label 'erm'",
                                   lambda raw: raw["methods"].append({"name": "erm"})),
    "duplicate-benchmark-names": Bad("benchmarks[1].name", "duplicate benchmark name 'digits'",
                                     lambda raw: raw["benchmarks"].append(copy.deepcopy(raw["benchmarks"][0]))),
    "duplicate-seeds": Bad("final.seeds", "seeds must be distinct", _set("final", "seeds", value=[0, 1, 0])),
    "unknown-metric": Bad("evaluation.metrics[1]", "unknown metric 'acuracy'",
                          _set("evaluation", value={"metrics": ["nll", "acuracy"]}), suggestion="accuracy"),
    "unknown-optimizer": Bad("benchmarks[0].train.optimizer", "'sgd' or 'adamw'",
                             _set("benchmarks", 0, "train", "optimizer", value="adamx")),
    "bad-suite-name": Bad("name", "should match pattern", _set("name", value="smoke test!")),
    "yaml-list-not-mapping": Bad("<suite>", "a suite is a YAML mapping", lambda raw: [raw]),
    "invalid-yaml": Bad("<suite>", "not valid YAML", text="name: [smoke\nbenchmarks: {\n"),
    "yaml-tag-is-not-executed": Bad("<suite>", "not valid YAML", text="name: !!python/object/apply:os.getcwd []\n"),
    "file-not-found": Bad("<suite>", "suite file not found", missing_file=True),
    "set-without-equals": Bad("tuning.trials", "an override is KEY.PATH=VALUE", overrides=("tuning.trials",)),
    "set-past-list-end": Bad("methods[9]", "no item 9 here (the list has 4)", overrides=("methods[9].config.x=1",)),
    "set-unknown-key": Bad("tuning.trails", "unknown key", overrides=("tuning.trails=3",), suggestion="trials"),
    "set-bad-value": Bad("methods[1].config.smoothing", "less than 1",
                         overrides=("methods.1.config.smoothing=2",)),
    "scenario-negative-noise-rate": Bad("benchmarks[0].scenario.label_noise.rate", "greater than or equal to 0",
                                        _scenario(label_noise={"kind": "symmetric", "rate": -0.1})),
    "scenario-noise-rate-above-one": Bad("benchmarks[0].scenario.label_noise.rate", "less than or equal to 1",
                                         _scenario(label_noise={"kind": "asymmetric", "rate": 1.2})),
    "scenario-unknown-noise-kind": Bad("benchmarks[0].scenario.label_noise.kind", "'symmetric' or 'asymmetric'",
                                       _scenario(label_noise={"kind": "symetric", "rate": 0.2})),
    "scenario-unknown-key": Bad("benchmarks[0].scenario.label_nosie", "unknown key",
                                _scenario(label_nosie={"kind": "symmetric", "rate": 0.2}), suggestion="label_noise"),
    "scenario-unknown-noise-key": Bad("benchmarks[0].scenario.label_noise.rat", "unknown key",
                                      _scenario(label_noise={"kind": "symmetric", "rat": 0.2}), suggestion="rate"),
    "scenario-imbalance-ratio-below-one": Bad("benchmarks[0].scenario.imbalance.ratio", "greater than or equal to 1",
                                              _scenario(imbalance={"ratio": 0.5})),
    "scenario-zero-examples-per-class": Bad("benchmarks[0].scenario.few_data.n_per_class", "greater than 0",
                                            _scenario(few_data={"n_per_class": 0})),
    "scenario-mapping-to-itself": Bad("benchmarks[0].scenario.label_noise.mapping", "class 3 maps to itself",
                                      _scenario(label_noise={"kind": "asymmetric", "rate": 0.2, "mapping": {3: 3}})),
    "scenario-mapping-on-symmetric-noise": Bad(
        "benchmarks[0].scenario.label_noise", "'mapping' needs kind 'asymmetric'",
        _scenario(label_noise={"kind": "symmetric", "rate": 0.2, "mapping": {3: 5}})),
    "scenario-without-steps": Bad("benchmarks[0].scenario", "give at least one of", _scenario(seed=1)),
    "scenario-mapping-class-out-of-range": Bad(
        "benchmarks[0].scenario.label_noise.mapping", "class 12 does not exist",
        _scenario(label_noise={"kind": "asymmetric", "rate": 0.2, "mapping": {3: 12}})),
    "unknown-protocol": Bad("protocols[0]", "unknown protocol 'holdot'", _set("protocols", value=["holdot"]),
                            suggestion="holdout"),
    "oracle-not-allowed": Bad("protocols[1]", "set allow_oracle: true", _set("protocols", value=["holdout", "oracle"])),
    "protocol-twice": Bad("protocols", "each protocol may appear once", _set("protocols", value=["holdout", "holdout"])),
    "cross-dataset-without-tune-dataset": Bad("benchmarks[0].tune_dataset", "tunes on another dataset",
                                              _set("protocols", value=["cross_dataset"])),
    "tune-dataset-without-cross-dataset": Bad("benchmarks[0].tune_dataset", "add it to `protocols`",
                                              _set("benchmarks", 0, "tune_dataset", value="digits28")),
    "tune-dataset-of-another-shape": Bad(
        "benchmarks[0].tune_dataset", "not the same task shape",
        lambda raw: raw.update(protocols=["cross_dataset"], benchmarks=[{**raw["benchmarks"][0], "tune_dataset": "digits28"}])),
    "tune-dataset-unknown": Bad(
        "benchmarks[0].tune_dataset", "unknown dataset",
        lambda raw: raw.update(protocols=["cross_dataset"], benchmarks=[{**raw["benchmarks"][0], "tune_dataset": "digitz"}]),
        suggestion="digits"),
    "ood-set-unknown": Bad("benchmarks[0].evaluation.ood_sets[0]", "unknown OOD set",
                           _set("benchmarks", 0, "evaluation", "ood_sets", value=["noise_unform"]),
                           suggestion="noise_uniform"),
    "ood-set-of-another-shape": Bad("benchmarks[0].evaluation.ood_sets[0]", "must look like the benchmark's inputs",
                                    _set("benchmarks", 0, "evaluation", "ood_sets", value=["digits28"])),
    "tuning-objective-unknown-metric": Bad("tuning.objective.metric", "not a score a tuning trial can compute",
                                           _set("tuning", "objective", value={"metric": "val/pgd_linf_acuracy"}),
                                           suggestion="val/pgd_linf_accuracy"),
    "tuning-objective-floor-on-test": Bad("methods[1].tuning_objective.floor.test/accuracy", "measured after training",
                                          _set("methods", 1, "tuning_objective",
                                               value={"metric": "val/aurc", "floor": {"test/accuracy": 0.5}})),
    "tuning-objective-with-metric": Bad("tuning", "set either `objective` or `metric`/`mode`",
                                        _set("tuning", "metric", value="val/nll"),
                                        overrides=("tuning.objective={metric: val/nll, mode: min}",)),
    "tuning-repeats-zero": Bad("tuning.repeats", "greater than or equal to 1", _set("tuning", "repeats", value=0)),
    "tuning-repeats-with-sequential-seeds": Bad("tuning.repeats", "sequential final phase",
                                                _set("tuning", "repeats", value=2),
                                                overrides=("final.seeds={min: 3, max: 5}",)),
    "tuning-sampler-unknown": Bad("tuning.sampler", "'tpe' or 'sobol_tpe'", _set("tuning", "sampler", value="qmc")),
    "set-scenario-bad-rate": Bad("benchmarks[0].scenario.label_noise.rate", "less than or equal to 1",
                                 overrides=("benchmarks.0.scenario={label_noise: {kind: symmetric, rate: 2}}",)),
}


@pytest.fixture(autouse=True)
def executions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Suite, Path]]:
    """Stand-in for `harness.run.execute`: records what the CLI would run, so no test can start Ray."""
    calls: list[tuple[Suite, Path]] = []

    def record(suite: Suite, run_dir: Path, args: Any, console: Any, lock: Any = None) -> int:
        calls.append((suite, run_dir))
        return 0

    monkeypatch.setattr(harness.run, "execute", record)
    return calls


def write_suite(directory: Path, bad: Bad) -> Path:
    path = directory / "suite.yaml"
    if bad.missing_file:
        return path
    if bad.text is not None:
        path.write_text(bad.text)
        return path
    raw = smoke_dict()
    replaced = bad.mutate(raw) if bad.mutate else None
    path.write_text(yaml.safe_dump(raw if replaced is None else replaced, sort_keys=False))
    return path


@pytest.mark.parametrize("bad", list(BAD_SUITES.values()), ids=list(BAD_SUITES))
def test_malformed_suite_exits_2_names_the_key_and_writes_nothing(
    bad: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str], executions: list[tuple[Suite, Path]]
) -> None:
    suite_path = write_suite(tmp_path, bad)
    out = tmp_path / "out"
    argv = [str(suite_path), "--out", str(out)]
    for item in bad.overrides:
        argv += ["--set", item]

    code = main(argv)

    captured = capsys.readouterr()
    err = captured.err
    assert code == EXIT_BAD_INPUT == 2
    assert executions == []
    assert captured.out == ""
    # the path is a whole segment: preceded by "error: " or by the file name, followed by ": "
    assert re.search(rf"(?:^error: |\.yaml: ){re.escape(bad.path)}: ", err), err
    assert bad.says in err, err
    if bad.suggestion is not None:
        assert f"did you mean '{bad.suggestion}'?" in err, err
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if bad.missing_file else ["suite.yaml"])


def test_there_are_at_least_twenty_malformed_suites() -> None:
    assert len(BAD_SUITES) >= 20


def test_suite_error_carries_key_path_and_source(tmp_path: Path) -> None:
    path = write_suite(tmp_path, BAD_SUITES["unknown-method-config-key"])
    with pytest.raises(SuiteError) as raised:
        load_suite(path)
    assert raised.value.key_path == "methods[2].config.temprature"
    assert raised.value.source == str(path)
    assert str(raised.value).startswith(f"{path}: methods[2].config.temprature: unknown key; did you mean")


def test_unavailable_dataset_exits_2_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    executions: list[tuple[Suite, Path]],
) -> None:
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "empty"))
    out = tmp_path / "out"
    code = main([str(ROOT / "suites" / "smoke.yaml"), "--out", str(out), "--set", "benchmarks[0].dataset=cifar10"])
    err = capsys.readouterr().err
    assert code == 2 and executions == []
    assert err.startswith("error: benchmarks[0].dataset (cifar10): dataset 'cifar10' is not available")
    assert "HARNESS_DATA_DIR" in err
    assert not out.exists()


def test_existing_results_without_resume_exit_2_and_are_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], executions: list[tuple[Suite, Path]]
) -> None:
    suite_path = ROOT / "suites" / "smoke.yaml"
    out = tmp_path / "out"
    rows = run_dir_for(load_suite(suite_path), out) / "rows"
    rows.mkdir(parents=True)
    (rows / "final_digits_erm_s0.parquet").write_bytes(b"earlier results")

    code = main([str(suite_path), "--out", str(out)])

    assert code == 2 and executions == []
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert [p.name for p in rows.iterdir()] == ["final_digits_erm_s0.parquet"]
    assert (rows / "final_digits_erm_s0.parquet").read_bytes() == b"earlier results"
    assert main([str(suite_path), "--out", str(out), "--resume"]) == 0
    assert [run_dir for _, run_dir in executions] == [rows.parent]


def test_cli_runs_the_overridden_suite_in_a_directory_named_by_its_hash(
    tmp_path: Path, executions: list[tuple[Suite, Path]]
) -> None:
    out = tmp_path / "out"
    assert main([str(ROOT / "suites" / "smoke.yaml"), "--out", str(out), "--set", "tuning.trials=4"]) == 0
    [(suite, run_dir)] = executions
    assert suite.tuning.trials == 4
    assert run_dir == out / "smoke" / suite.hash
    assert suite.hash != load_suite(ROOT / "suites" / "smoke.yaml").hash


# ---------------------------------------------------------------- valid suites


@pytest.mark.parametrize("suite_file", SHIPPED_SUITES, ids=[p.stem for p in SHIPPED_SUITES])
def test_shipped_suites_validate(suite_file: Path) -> None:
    suite = load_suite(suite_file)
    assert isinstance(suite, Suite)
    assert suite.name == suite_file.stem
    assert re.fullmatch(r"[0-9a-f]{16}", suite.hash)
    assert len(suite.benchmarks) >= 1 and len(suite.methods) >= 1
    assert "erm" in [entry.name for entry in suite.methods]  # every claim is judged against the tuned baseline


def test_shipped_suites_include_smoke() -> None:
    assert "smoke" in [p.stem for p in SHIPPED_SUITES]


def test_smoke_suite_resolves_defaults_and_labels() -> None:
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    assert [m.label for m in suite.methods] == ["erm", "label_smoothing", "kd", "pgd_at"]
    assert suite.methods[3].config == {"steps": 2}
    assert suite.benchmarks[0].name == "digits"
    assert suite.benchmarks[0].budget.epochs == 4 and suite.benchmarks[0].budget.steps is None
    assert suite.benchmarks[0].teacher is not None and suite.benchmarks[0].teacher.model == "small_cnn"
    assert suite.tuning.trials == 2
    assert suite.final.seeds == (0, 1)


def test_benchmark_name_defaults_to_dataset_and_model() -> None:
    raw = smoke_dict()
    del raw["benchmarks"][0]["name"]
    assert validate_suite(raw).benchmarks[0].name == "digits-tiny_cnn"


def test_set_override_changes_value_and_hash() -> None:
    path = ROOT / "suites" / "smoke.yaml"
    plain = load_suite(path)
    changed = load_suite(path, ["tuning.trials=4"])
    assert plain.tuning.trials == 2
    assert changed.tuning.trials == 4
    assert changed.hash != plain.hash
    assert load_suite(path, ["tuning.trials=2"]).hash == plain.hash


def test_set_override_parses_values_as_yaml() -> None:
    suite = load_suite(ROOT / "suites" / "smoke.yaml", ["final.seeds=[3, 4, 5]", "benchmarks[0].augment=false"])
    assert suite.final.seeds == (3, 4, 5)
    assert suite.benchmarks[0].augment is False


def test_same_suite_loaded_twice_has_same_hash() -> None:
    first = load_suite(ROOT / "suites" / "smoke.yaml")
    second = load_suite(ROOT / "suites" / "smoke.yaml")
    assert first is not second
    assert first == second
    assert first.hash == second.hash


def test_hash_ignores_key_order_in_the_file(tmp_path: Path) -> None:
    raw = smoke_dict()
    reordered = dict(reversed(list(raw.items())))
    path = tmp_path / "reordered.yaml"
    path.write_text(yaml.safe_dump(reordered, sort_keys=False))
    assert load_suite(path).hash == load_suite(ROOT / "suites" / "smoke.yaml").hash


def test_suite_objects_are_frozen() -> None:
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        suite.name = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        suite.tuning.trials = 99  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        suite.benchmarks[0].budget.epochs = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        suite.methods[0] = suite.methods[1]  # type: ignore[index]
    assert suite.name == "smoke" and suite.tuning.trials == 2


def test_output_dir_and_description_do_not_change_the_hash() -> None:
    raw = smoke_dict()
    base = validate_suite(raw)
    moved = validate_suite(apply_overrides(raw, ["output.dir=/somewhere/else", "description=another text"]))
    assert moved.output.dir == "/somewhere/else"
    assert moved.hash == base.hash
    reseeded = validate_suite(apply_overrides(raw, ["final.seeds=[0, 2]"]))
    assert reseeded.hash != base.hash


@pytest.mark.parametrize("key", ["methods.1.config.smoothing", "methods[1].config.smoothing"])
def test_apply_overrides_accepts_dotted_and_bracketed_indices(key: str) -> None:
    raw = smoke_dict()
    updated = apply_overrides(raw, [f"{key}=0.2"])
    assert updated["methods"][1] == {"name": "label_smoothing", "config": {"smoothing": 0.2}}
    assert "config" not in raw["methods"][1]  # the input is not modified
    suite = validate_suite(updated)
    assert suite.methods[1].config == {"smoothing": 0.2}


def test_both_index_spellings_give_the_same_hash() -> None:
    raw = smoke_dict()
    dotted = validate_suite(apply_overrides(raw, ["methods.1.config.smoothing=0.2"]))
    bracketed = validate_suite(apply_overrides(raw, ["methods[1].config.smoothing=0.2"]))
    assert dotted.hash == bracketed.hash
    assert dotted.hash != validate_suite(raw).hash


def test_search_space_dimensions_are_parsed() -> None:
    raw = smoke_dict()
    raw["methods"][1]["search_space"] = {"smoothing": {"choices": [0.0, 0.1]}}
    raw["methods"][2]["search_space"] = {"temperature": {"low": 1.0, "high": 8.0, "log": True}, "alpha": None}
    raw["methods"][3]["search_space"] = {"steps": {"low": 1, "high": 3, "integer": True}}
    suite = validate_suite(raw)
    assert suite.methods[1].search_space == {"smoothing": Choice(choices=(0.0, 0.1))}
    assert suite.methods[2].search_space == {"temperature": FloatRange(low=1.0, high=8.0, log=True), "alpha": None}
    assert suite.methods[3].search_space == {"steps": IntRange(low=1, high=3)}


def test_resolved_suite_round_trips_through_yaml() -> None:
    raw = apply_overrides(smoke_dict(), ["methods[1].config.smoothing=0.2", "tuning.trials=3"])
    raw["methods"][1]["search_space"] = {"smoothing": {"choices": [0.0, 0.1]}}
    raw["methods"][2]["search_space"] = {"temperature": {"low": 1.0, "high": 8.0, "log": True}, "alpha": None}
    raw["methods"][3]["search_space"] = {"steps": {"low": 1, "high": 3, "integer": True}}
    raw["evaluation"] = {"metrics": ["accuracy", "ece"]}
    suite = validate_suite(raw)

    text = suite_as_yaml(suite)
    again = validate_suite(yaml.safe_load(text))

    assert again == suite
    assert again.hash == suite.hash
    assert suite_as_yaml(again) == text
    assert "!!python" not in text  # plain data only


# ---------------------------------------------------------------- scenarios


def test_suite_rejects_more_tasks_than_classes() -> None:
    suite = {"name": "s", "benchmarks": [{"dataset": "digits", "model": "tiny_cnn", "budget": {"epochs": 1},
                                          "scenario": {"continual": {"tasks": 11}}}],
             "methods": [{"name": "erm"}]}
    with pytest.raises(SuiteError, match=r"benchmarks\[0\]\.scenario\.continual\.tasks"):
        validate_suite(suite)
