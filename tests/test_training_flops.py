"""Training FLOPs are counted from what ran (`harness.compute`): attack steps, teacher passes, candidate batches
and a pre-training in `prepare_model` all show in `train/flops`, which no constant factor guesses any more."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.compute import ComputeMeter
from harness.data import load_split
from harness.engine import TrainSettings, train
from harness.evaluation.efficiency import forward_flops
from harness.jobs import RunSpec, final_run
from harness.method import build_method
from harness.models import build_model
from harness.suite import BenchmarkSpec, MethodEntry
from harness.train_settings import Budget, TrainSpec

CPU = torch.device("cpu")


def digits_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,))


def trained_flops(method: str, config: dict[str, object] | None = None, steps: int = 2) -> float:
    stats = train(digits_model(), build_method(method, config), load_split("digits", "train"),
                  TrainSettings(lr=0.05, batch_size=32, steps=steps, seed=0), num_classes=10, device=CPU)
    return stats.flops


def test_the_meter_counts_outermost_forwards_inside_counting_only() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    per_sample = forward_flops(model, (4,))
    meter = ComputeMeter()
    meter.watch([model, model[0]])  # a watched submodule inside a watched model counts once
    model(torch.randn(5, 4))
    assert meter.take() == 0.0  # outside counting(): an evaluation, not training
    with meter.counting():
        model(torch.randn(5, 4))              # gradients on: forward + backward
        with torch.no_grad():
            model(torch.randn(3, 4))          # a side pass: forward only
        nn.Linear(4, 4)(torch.randn(7, 4))    # not watched: not the run's
    assert meter.take() == pytest.approx(3 * 5 * per_sample + 3 * per_sample)
    assert meter.take() == 0.0
    assert not model._forward_hooks and not model._forward_pre_hooks  # a copy of the model carries nothing


def test_erm_counts_one_forward_and_backward_per_sample() -> None:
    per_sample = forward_flops(digits_model(), (1, 8, 8))
    assert trained_flops("erm") == pytest.approx(3 * per_sample * 2 * 32)


def test_pgd_at_flops_grow_with_its_attack_steps() -> None:
    erm = trained_flops("erm")
    flops = [trained_flops("pgd_at", {"steps": steps}) for steps in (1, 2, 4)]
    assert erm < flops[0] < flops[1] < flops[2]
    assert flops[2] - flops[1] == pytest.approx(2 * (flops[1] - flops[0]))  # each attack step costs the same


def test_hard_batch_pays_for_the_candidates_it_scores() -> None:
    assert trained_flops("hard_batch", {"delta": 3}) > trained_flops("hard_batch", {"delta": 2}) > trained_flops("erm")


def tiny_run(method: str, config: dict[str, object] | None = None) -> float:
    bench = BenchmarkSpec(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(steps=2), augment=False,
                          train=TrainSpec(batch_size=32), tune_val_size=100)
    row = final_run(RunSpec(benchmark=bench, method=MethodEntry(name=method, config=config or {}), seed=0,
                            metrics=("accuracy",)))
    return row["train/flops"]


def test_a_final_runs_train_flops_grow_with_pgd_ats_steps() -> None:
    assert tiny_run("pgd_at", {"steps": 1}) < tiny_run("pgd_at", {"steps": 3})


def test_prepare_models_pre_training_is_charged() -> None:
    erm = tiny_run("erm")
    short, longer = tiny_run("perlin_init", {"steps": 2}), tiny_run("perlin_init", {"steps": 6})
    assert erm < short < longer
