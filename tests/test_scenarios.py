"""Scenarios: label noise, long-tail imbalance, few data, few labels and class-incremental task streams on
training splits, with known answers.

Pure functions are checked on a synthetic 10-class, 10k-label fixture whose images encode each
example's index (so a subset can be traced back); DataAccess is checked on scikit-learn digits.
Fast, no Ray, no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import harness.jobs
from harness.data import (
    DataAccess,
    ImageArrays,
    ScenarioError,
    ScenarioSpec,
    apply_scenario,
    asymmetric_label_noise,
    class_counts,
    clear_cache,
    few_data,
    load_split,
    long_tail_counts,
    long_tail_imbalance,
    symmetric_label_noise,
)
from harness.data.scenarios import few_labels
from harness.data.sources import UNLABELLED
from harness.data.tasks import TaskStreamError, task_classes
from harness.jobs import RunSpec, final_run
from harness.suite import BenchmarkSpec, Budget, MethodEntry, TrainSpec, validate_suite

K = 10
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    clear_cache()
    yield
    clear_cache()


def synthetic(per_class: int = 1000, num_classes: int = K) -> ImageArrays:
    """`per_class` examples of each class, interleaved; image i holds i as two bytes (high, low)."""
    n = per_class * num_classes
    index = torch.arange(n)
    images = torch.stack([index // 256, index % 256], dim=1).to(torch.uint8).reshape(n, 1, 1, 2)
    return ImageArrays(images, index % num_classes)


def source_index(arrays: ImageArrays) -> torch.Tensor:
    """The original position of every example of a subset of `synthetic()`."""
    pixels = arrays.images.reshape(len(arrays), 2).long()
    return pixels[:, 0] * 256 + pixels[:, 1]


def scenario(**fields: Any) -> ScenarioSpec:
    return ScenarioSpec.model_validate(fields)


# ---------------------------------------------------------------- label noise


def test_symmetric_noise_flips_the_rate_of_every_class_to_other_classes_uniformly() -> None:
    clean = synthetic()
    noisy, record = symmetric_label_noise(clean, 0.2, K, seed=0)

    changed = noisy.labels != clean.labels
    assert int(changed.sum()) == 2000  # exactly 20% of 10k: no flip drew the label's own class
    assert abs(record["measured_rate"] - 0.2) <= 0.01 and record["flipped"] == 2000
    assert record["per_class_rate"] == [0.2] * K
    transitions = torch.zeros(K, K, dtype=torch.int64)
    transitions.index_put_((clean.labels[changed], noisy.labels[changed]), torch.tensor(1), accumulate=True)
    assert transitions.diagonal().sum() == 0
    assert transitions.sum(dim=1).tolist() == [200] * K
    expected = 200 / (K - 1)  # each of the 9 other classes, about 22 times
    off_diagonal = transitions[~torch.eye(K, dtype=torch.bool)].double()
    assert off_diagonal.min() >= 8 and off_diagonal.max() <= 40, transitions
    chi_square = float(((off_diagonal - expected) ** 2 / expected).sum())
    assert chi_square < 150, chi_square  # 90 cells, 80 degrees of freedom: ~80 when uniform
    assert torch.equal(noisy.images, clean.images)


def test_asymmetric_noise_flips_the_rate_of_every_class_to_the_next_class() -> None:
    clean = synthetic()
    noisy, record = asymmetric_label_noise(clean, 0.3, K, seed=0)

    changed = noisy.labels != clean.labels
    assert torch.equal(noisy.labels[changed], (clean.labels[changed] + 1) % K)
    assert class_counts(clean.labels[changed], K) == [300] * K
    assert record["kind"] == "asymmetric" and record["measured_rate"] == pytest.approx(0.3)
    assert record["mapping"] == {str(c): (c + 1) % K for c in range(K)}


def test_asymmetric_noise_with_a_mapping_flips_only_the_mapped_classes() -> None:
    clean = synthetic()
    noisy, record = asymmetric_label_noise(clean, 0.25, K, seed=3, mapping={3: 5, 9: 1})

    changed = noisy.labels != clean.labels
    assert class_counts(clean.labels[changed], K) == [0, 0, 0, 250, 0, 0, 0, 0, 0, 250]
    assert set(noisy.labels[changed & (clean.labels == 3)].tolist()) == {5}
    assert set(noisy.labels[changed & (clean.labels == 9)].tolist()) == {1}
    assert record["per_class_rate"][3] == record["per_class_rate"][9] == 0.25
    assert record["measured_rate"] == pytest.approx(0.05)


@pytest.mark.parametrize("mapping", [{3: 3}, {3: 10}, {-1: 2}])
def test_asymmetric_noise_rejects_mappings_that_are_not_flips_in_this_dataset(mapping: dict[int, int]) -> None:
    with pytest.raises(ScenarioError, match="label_noise.mapping"):
        asymmetric_label_noise(synthetic(10), 0.2, K, seed=0, mapping=mapping)


@pytest.mark.parametrize("noise", [symmetric_label_noise, asymmetric_label_noise])
def test_zero_rate_changes_nothing(noise: Any) -> None:
    clean = synthetic()
    noisy, record = noise(clean, 0.0, K, seed=0)
    assert torch.equal(noisy.labels, clean.labels)
    assert record["flipped"] == 0 and record["measured_rate"] == 0.0


@pytest.mark.parametrize("noise", [symmetric_label_noise, asymmetric_label_noise])
def test_noise_is_a_pure_function_of_the_seed(noise: Any) -> None:
    clean = synthetic()
    first, _ = noise(clean, 0.2, K, seed=7)
    again, _ = noise(clean, 0.2, K, seed=7)
    other, _ = noise(clean, 0.2, K, seed=8)
    assert torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)
    assert not torch.equal(first.labels != clean.labels, other.labels != clean.labels)  # other positions


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_noise_rate_outside_zero_one_is_refused(rate: float) -> None:
    with pytest.raises(ScenarioError, match=r"must be in \[0, 1\]"):
        symmetric_label_noise(synthetic(10), rate, K, seed=0)


def test_no_step_writes_into_its_input() -> None:
    clean = synthetic(100)
    before = (clean.images.clone(), clean.labels.clone())
    full = scenario(few_data={"n_per_class": 50}, imbalance={"ratio": 5}, label_noise={"kind": "symmetric", "rate": 1})
    for step in (lambda a: symmetric_label_noise(a, 1.0, K, 0), lambda a: asymmetric_label_noise(a, 1.0, K, 0),
                 lambda a: few_data(a, 10, K, 0), lambda a: long_tail_imbalance(a, 10, K, 0),
                 lambda a: apply_scenario(a, full, K)):
        step(clean)
        assert torch.equal(clean.labels, before[1]) and torch.equal(clean.images, before[0])


# ---------------------------------------------------------------- subsampling


def test_long_tail_profile_reproduces_the_published_cifar_lt_sizes() -> None:
    assert long_tail_counts(5000, 100, 10) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(long_tail_counts(5000, 100, 10)) == 12406  # CIFAR-10-LT, ratio 100 (Cao et al. 2019)
    assert sum(long_tail_counts(5000, 10, 10)) == 20431  # CIFAR-10-LT, ratio 10
    assert sum(long_tail_counts(500, 100, 100)) == 10847  # CIFAR-100-LT, ratio 100
    assert long_tail_counts(300, 1, 10) == [300] * 10


def test_imbalance_ratio_ten_follows_the_exponential_profile() -> None:
    clean = synthetic()
    skewed, record = long_tail_imbalance(clean, 10, K, seed=0)

    counts = class_counts(skewed.labels, K)
    assert counts == [1000, 774, 599, 464, 359, 278, 215, 166, 129, 100]
    assert max(counts) / min(counts) == 10 == record["measured_ratio"]
    assert record["n_max"] == 1000
    assert torch.equal(skewed.labels, clean.labels[source_index(skewed)])  # images travel with their labels


def test_imbalance_takes_n_max_from_the_smallest_class_and_refuses_a_ratio_it_cannot_reach() -> None:
    clean = synthetic(50).subset(torch.arange(499))  # class 9 has 49 examples
    skewed, record = long_tail_imbalance(clean, 7, K, seed=0)
    assert record["n_max"] == 49 and class_counts(skewed.labels, K) == long_tail_counts(49, 7, K)
    with pytest.raises(ScenarioError, match="imbalance.ratio=100 needs at least 100 examples"):
        long_tail_imbalance(clean, 100, K, seed=0)


def test_few_data_keeps_exactly_n_of_every_class_seeded() -> None:
    clean = synthetic()
    small, record = few_data(clean, 13, K, seed=0)
    assert class_counts(small.labels, K) == [13] * K and record == {"n_per_class": 13}
    assert torch.equal(small.labels, clean.labels[source_index(small)])
    assert torch.equal(few_data(clean, 13, K, seed=0)[0].images, small.images)
    assert not torch.equal(few_data(clean, 13, K, seed=1)[0].images, small.images)


def test_few_data_beyond_the_smallest_class_says_how_many_there_are() -> None:
    with pytest.raises(ScenarioError, match="few_data.n_per_class=60 .* use at most 50"):
        few_data(synthetic(50), 60, K, seed=0)


def test_a_combined_scenario_subsamples_first_then_corrupts_labels() -> None:
    clean = synthetic()
    spec = scenario(seed=4, few_data={"n_per_class": 100}, imbalance={"ratio": 10},
                    label_noise={"kind": "asymmetric", "rate": 0.5})
    corrupted, record = apply_scenario(clean, spec, K)

    assert record["steps"] == ["few_data", "imbalance", "label_noise"]
    assert record["imbalance"]["n_max"] == 100  # imbalance saw the few-data subset
    profile = long_tail_counts(100, 10, K)
    assert class_counts(clean.labels[source_index(corrupted)], K) == profile
    assert record["size_before"] == 10_000 and record["size_after"] == sum(profile) == len(corrupted)
    changed = corrupted.labels != clean.labels[source_index(corrupted)]
    assert int(changed.sum()) == record["label_noise"]["flipped"] == sum(int(n * 0.5 + 0.5) for n in profile)
    assert record["class_counts"] == class_counts(corrupted.labels, K)
    assert json.loads(json.dumps(record)) == record
    again, _ = apply_scenario(clean, spec, K)
    assert torch.equal(again.labels, corrupted.labels) and torch.equal(again.images, corrupted.images)


# ---------------------------------------------------------------- DataAccess

NOISE = {"label_noise": {"kind": "symmetric", "rate": 0.4}}
FEW = {"few_data": {"n_per_class": 20}}


def test_tuning_handle_corrupts_tune_train_only() -> None:
    plain = DataAccess("digits", "tune")
    noisy = DataAccess("digits", "tune", scenario=scenario(**NOISE))

    clean_train, noisy_train = plain.split("tune_train"), noisy.split("tune_train")
    assert torch.equal(noisy_train.images, clean_train.images)
    changed = noisy_train.labels != clean_train.labels
    counts = class_counts(clean_train.labels, K)
    assert class_counts(clean_train.labels[changed], K) == [int(0.4 * n + 0.5) for n in counts]
    for name in ("images", "labels"):
        assert torch.equal(getattr(noisy.split("tune_val"), name), getattr(plain.split("tune_val"), name))
    assert noisy.splits_read == ("tune_train", "tune_val")


def test_final_handle_corrupts_train_only_and_leaves_test_and_the_cache_alone() -> None:
    raw_train = load_split("digits", "train")
    raw_labels = raw_train.labels.clone()
    plain = DataAccess("digits", "final")
    small = DataAccess("digits", "final", scenario=scenario(**FEW, **NOISE))

    train = small.split("train")
    assert len(train) == 200 and small.scenario_record["class_counts_before"] == class_counts(raw_labels, K)
    for name in ("images", "labels"):
        assert torch.equal(getattr(small.split("test"), name), getattr(plain.split("test"), name))
    assert torch.equal(load_split("digits", "train").labels, raw_labels)
    assert load_split("digits", "train") is raw_train
    assert torch.equal(plain.split("train").labels, raw_labels)


def test_scenario_applies_after_the_carve_and_the_tune_train_cap() -> None:
    access = DataAccess("digits", "tune", tune_train_size=300, scenario=scenario(imbalance={"ratio": 5}))
    record = access.scenario_record
    assert record["split"] == "tune_train" and record["size_before"] == 300
    assert record["size_after"] == len(access.split("tune_train")) == sum(long_tail_counts(record["imbalance"]["n_max"], 5, K))
    assert len(access.split("tune_val")) == len(DataAccess("digits", "tune").split("tune_val"))


def test_every_handle_with_the_same_scenario_sees_the_same_labels() -> None:
    spec = scenario(seed=5, **FEW, **NOISE)
    first, second = DataAccess("digits", "tune", scenario=spec), DataAccess("digits", "tune", scenario=spec)
    assert torch.equal(first.split("tune_train").labels, second.split("tune_train").labels)
    assert torch.equal(first.split("tune_train").images, second.split("tune_train").images)
    reseeded = DataAccess("digits", "tune", scenario=scenario(seed=6, **FEW, **NOISE))
    assert not torch.equal(first.split("tune_train").images, reseeded.split("tune_train").images)


def test_scenario_record_is_json_and_empty_without_a_scenario() -> None:
    assert DataAccess("digits", "final").scenario_record == {}
    access = DataAccess("digits", "final", scenario=scenario(seed=2, **NOISE))
    record = access.scenario_record
    assert access.splits_read == ()  # describing the scenario is not reading the split
    assert json.loads(json.dumps(record)) == record
    assert record["split"] == "train" and record["seed"] == 2 and record["steps"] == ["label_noise"]
    assert record["label_noise"]["kind"] == "symmetric" and record["label_noise"]["rate"] == 0.4
    assert record["label_noise"]["measured_rate"] == pytest.approx(0.4, abs=0.01)
    assert access.split("train").labels.tolist() != load_split("digits", "train").labels.tolist()


def test_an_impossible_scenario_is_an_input_error_that_names_the_key() -> None:
    access = DataAccess("digits", "tune", scenario=scenario(few_data={"n_per_class": 500}))
    with pytest.raises(ScenarioError, match="few_data.n_per_class=500"):
        access.split("tune_train")


# ---------------------------------------------------------------- the suite and the jobs


def smoke_dict() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())


def with_scenario(value: Any) -> dict[str, Any]:
    raw = smoke_dict()
    raw["benchmarks"][0]["scenario"] = value
    return raw


def test_suite_scenario_parses_and_changes_the_hash_only_when_present() -> None:
    plain = validate_suite(smoke_dict())
    spec = {"label_noise": {"kind": "asymmetric", "rate": 0.3, "mapping": {3: 5}}, "imbalance": {"ratio": 10}}
    noisy = validate_suite(with_scenario(spec))
    parsed = noisy.benchmarks[0].scenario
    assert parsed is not None and parsed.seed == 0 and parsed.label_noise is not None
    assert parsed.label_noise.mapping == {3: 5} and parsed.imbalance is not None and parsed.few_data is None
    assert noisy.hash != plain.hash
    assert "scenario" not in plain.benchmarks[0].model_dump(mode="json")  # hashes of older suites are kept
    assert validate_suite(with_scenario({**spec, "seed": 1})).hash != noisy.hash


def test_mapping_survives_the_json_round_trip_of_the_frozen_suite() -> None:
    noisy = validate_suite(with_scenario({"label_noise": {"kind": "asymmetric", "rate": 0.3, "mapping": {3: 5}}}))
    again = validate_suite(json.loads(json.dumps(noisy.model_dump(mode="json"))))
    assert again == noisy and again.hash == noisy.hash


class _Stop(Exception):
    pass


def test_every_job_hands_the_benchmark_scenario_to_its_data(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, Any]] = []

    def recording(dataset: str, phase: str, **kwargs: Any) -> Any:
        seen.append((phase, kwargs.get("scenario")))
        raise _Stop

    monkeypatch.setattr(harness.jobs, "DataAccess", recording)
    raw = with_scenario(NOISE)["benchmarks"][0]
    bench = BenchmarkSpec.model_validate(raw)
    run = harness.jobs.RunSpec(benchmark=bench, method=validate_suite(smoke_dict()).methods[0], seed=0)
    for job in (lambda: harness.jobs.tuning_trial(run, report=lambda _: None),
                lambda: harness.jobs.final_run(run),
                lambda: harness.jobs.train_teacher(bench, "tune", 0),
                lambda: harness.jobs.train_teacher(bench, "final", 0)):
        with pytest.raises(_Stop):
            job()
    assert [phase for phase, _ in seen] == ["tune", "final", "tune", "final"]
    assert all(spec is bench.scenario is not None for _, spec in seen)


def digits() -> ImageArrays:
    return load_split("digits", "train")


def tiny_bench(**changes: Any) -> BenchmarkSpec:
    fields = dict(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(epochs=1), augment=False,
                  train=TrainSpec(batch_size=64), tune_val_size=100)
    fields.update(changes)
    return BenchmarkSpec(**fields)


# ---------------------------------------------------------------- few labels and class-incremental task streams


def test_few_labels_hides_all_but_n_per_class() -> None:
    data = digits()
    hidden, record = few_labels(data, 5, 10, seed=0)
    visible = hidden.labels[hidden.labels != UNLABELLED]
    assert len(hidden) == len(data) and torch.equal(hidden.images, data.images)
    assert torch.bincount(visible, minlength=10).tolist() == [5] * 10
    assert record == {"n_per_class": 5, "labelled": 50, "unlabelled": len(data) - 50}
    assert bool((data.labels != UNLABELLED).all())  # the input is untouched
    kept = hidden.labels != UNLABELLED
    assert torch.equal(hidden.labels[kept], data.labels[kept])


def test_task_split_errors_teach() -> None:
    with pytest.raises(TaskStreamError, match="2..10"):
        task_classes(10, 11)
    assert task_classes(10, 4) == ((0, 1, 2), (3, 4, 5), (6, 7), (8, 9))


# ---------------------------------------------------------------- few labels and task streams through a final run


def test_a_few_labels_scenario_trains_on_the_labelled_few() -> None:
    few = final_run(RunSpec(benchmark=tiny_bench(scenario=ScenarioSpec(few_labels={"n_per_class": 2})),
                            method=MethodEntry(name="erm"), seed=0, metrics=("accuracy",),
                            hyperparams={"train.lr": 0.05}))
    record = json.loads(few["scenario_record"])
    assert record["few_labels"]["labelled"] == 20 and record["class_counts"] == [2] * 10
    assert few["train/samples_seen"] > 20  # every image is still seen: the unlabelled pool


def test_a_continual_final_run_reports_the_accuracy_matrix_scores() -> None:
    bench = tiny_bench(budget=Budget(epochs=4), scenario=ScenarioSpec(continual={"tasks": 2}))
    row = final_run(RunSpec(benchmark=bench, method=MethodEntry(name="erm"), seed=0, metrics=("accuracy",),
                            hyperparams={"train.lr": 0.05}))
    assert 0.0 <= row["continual/forgetting"] <= 1.0
    # plain ERM forgets: after the second task it classifies the first task's classes far worse
    assert row["continual/task0_accuracy"] < row["continual/task1_accuracy"]
    assert row["continual/forgetting"] > 0.3
    assert row["continual/avg_accuracy"] == pytest.approx(
        (row["continual/task0_accuracy"] + row["continual/task1_accuracy"]) / 2)
