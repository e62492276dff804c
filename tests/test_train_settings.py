"""Run settings have one home: the suite's `train:` block, the tunable keys, a trial's overrides and the
engine's loop all go through `harness.train_settings` (no copies of the fields anywhere else)."""

from __future__ import annotations

import pydantic
import pytest

from harness import engine, suite
from harness.search_space import Choice, FloatRange
from harness.train_settings import Budget, TrainSettings, TrainSpec


def test_the_engine_and_the_suite_use_the_same_settings_type() -> None:
    assert engine.TrainSettings is TrainSettings and suite.TrainSpec is TrainSpec
    assert set(TrainSpec.model_fields) < set(TrainSettings.model_fields)
    assert set(Budget.model_fields) < set(TrainSettings.model_fields)


def test_the_suite_block_dumps_only_what_a_suite_declares() -> None:
    # the suite hash is computed over this dump: a run-only field here would change every published hash
    assert list(TrainSpec().model_dump()) == ["optimizer", "lr", "weight_decay", "momentum", "batch_size",
                                              "warmup_fraction"]


def test_default_engine_space_is_read_from_the_tunable_declarations() -> None:
    space = suite.TuningSpec().engine_space
    assert list(space) == ["lr", "weight_decay"]  # order kept: the sampler draws in this order
    assert space["lr"] == FloatRange(low=0.01, high=0.3, log=True)
    assert space["weight_decay"] == FloatRange(low=1e-5, high=2e-3, log=True)


@pytest.mark.parametrize("key", ["lr", "weight_decay", "momentum", "warmup_fraction"])
def test_every_tunable_field_can_be_searched(key: str) -> None:
    tuning = suite.TuningSpec(engine_space={key: FloatRange(low=0.01, high=0.1)})
    assert list(tuning.engine_space) == [key]


@pytest.mark.parametrize("key", ["optimizer", "batch_size", "seed", "nesterov", "steps"])
def test_fields_not_marked_tunable_are_refused(key: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"cannot tune '{key}'"):
        suite.TuningSpec(engine_space={key: Choice(choices=(1, 2))})


def test_a_range_reaching_outside_the_field_is_refused_when_the_suite_is_read() -> None:
    with pytest.raises(pydantic.ValidationError, match="'warmup_fraction' cannot be 1.0"):
        suite.TuningSpec(engine_space={"warmup_fraction": FloatRange(low=0.0, high=1.0)})
    with pytest.raises(pydantic.ValidationError, match="'lr' cannot be 0"):
        suite.TuningSpec(engine_space={"lr": Choice(choices=(0.1, 0))})


def test_a_run_takes_the_spec_the_tuned_values_the_budget_and_the_seed() -> None:
    spec = TrainSpec(optimizer="adamw", lr=0.1, batch_size=32)
    settings = TrainSettings.for_run(spec, Budget(steps=7), seed=3, tuned={"lr": 1, "momentum": 0.5})
    assert (settings.optimizer, settings.batch_size, settings.weight_decay) == ("adamw", 32, 5e-4)
    assert settings.lr == 1.0 and isinstance(settings.lr, float) and settings.momentum == 0.5
    assert (settings.steps, settings.epochs, settings.seed) == (7, None, 3)
    assert settings.total_steps(num_samples=10_000) == 7


def test_tuned_values_are_validated_like_the_suite_values() -> None:
    with pytest.raises(pydantic.ValidationError, match="less than 1"):
        TrainSettings.for_run(TrainSpec(), Budget(epochs=1), seed=0, tuned={"momentum": 1.5})
    with pytest.raises(pydantic.ValidationError, match="momentun"):
        TrainSettings.for_run(TrainSpec(), Budget(epochs=1), seed=0, tuned={"momentun": 0.5})


def test_replace_validates_the_changed_settings() -> None:
    settings = TrainSettings(batch_size=64, epochs=2.0)
    assert settings.total_steps(num_samples=640) == 20
    assert settings.replace(steps=5, epochs=None).total_steps(num_samples=640) == 5
    with pytest.raises(pydantic.ValidationError, match="exactly one of 'epochs' or 'steps'"):
        settings.replace(steps=5)
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        settings.replace(batch_size=0)
