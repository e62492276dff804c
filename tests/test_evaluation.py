"""Tests of harness.evaluation: hand-checked FLOPs and calibration, PGD against the analytic linear
worst case, and the evaluate() contract. Self-contained synthetic data; no harness.data."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UnknownNameError
from harness.evaluation import (
    DEFAULT_METRICS,
    METRICS,
    EvalInputs,
    EvaluationSettings,
    brier_score,
    cpu_latency_ms,
    evaluate,
    expected_calibration_error,
    forward_flops,
    images_per_second,
    negative_log_likelihood,
    pgd_linf,
    robust_subset_indices,
)
from harness.evaluation.continual import continual_scores, task_accuracies

NUM_CLASSES, SIDE = 4, 8


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits-like data: one fixed random 8x8 template per class plus per-example noise, as uint8."""
    templates = torch.rand(NUM_CLASSES, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(123))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(NUM_CLASSES, (n,), generator=generator)
    noisy = templates[labels] + 0.25 * torch.randn(n, 1, SIDE, SIDE, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8), labels


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * SIDE * SIDE, NUM_CLASSES),
    )


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs = images.float() / 255
    model.train()
    for step in range(steps):
        batch = slice((step * 64) % len(labels), (step * 64) % len(labels) + 64)
        loss = F.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    return make_images(200, seed=1)


@pytest.fixture(scope="module")
def trained_cnn() -> nn.Module:
    torch.manual_seed(0)
    return train(small_cnn(), *make_images(512, seed=0))


def tiny_settings(**overrides: object) -> EvaluationSettings:
    values = dict(
        batch_size=64, pgd_steps=3, robust_subset=48, latency_warmup=2, latency_iters=5, throughput_batch=16
    )
    return EvaluationSettings(**(values | overrides))


def accuracy(model: nn.Module, images01: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images01).argmax(1) == labels).double().mean().item()


# ---------------------------------------------------------------- FLOPs


def test_flops_of_linear_conv_and_sequential_match_hand_counts() -> None:
    assert forward_flops(nn.Linear(10, 5, bias=False), (10,)) == 2 * 10 * 5
    assert forward_flops(nn.Conv2d(1, 2, 3, padding=1), (1, 4, 4)) == 2 * (2 * 1 * 9 * 16)
    both = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 5, bias=False))
    both.train()
    assert forward_flops(both, (1, 4, 4)) == 576 + 2 * 32 * 5
    assert both.training, "forward_flops must restore train mode"


def test_flops_of_resnet18_match_published_count() -> None:
    """Takes a few seconds: a real ResNet-18 forward at 224x224 (1.814 G multiply-adds)."""
    torchvision = pytest.importorskip("torchvision")
    flops = forward_flops(torchvision.models.resnet18(num_classes=1000), (3, 224, 224))
    assert flops == pytest.approx(3.628e9, rel=0.01)


# ---------------------------------------------------------------- calibration


def logits_from_probabilities(probabilities: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probabilities, dtype=torch.float64).log()


def test_ece_matches_hand_computed_fixture() -> None:
    # bin (14/15, 1]: confidences 0.95, 0.95, one right -> |0.5 - 0.95| * 2/4 = 0.225
    # bin (9/15, 10/15]: confidences 0.65, 0.65, both right -> |1.0 - 0.65| * 2/4 = 0.175
    logits = logits_from_probabilities([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.65, 0.35]])
    labels = torch.tensor([0, 1, 1, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.4, abs=1e-9)
    # three classes, top label only: confidences 0.7 (wrong) and 0.5 (right) in different bins
    logits = logits_from_probabilities([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.5 * 0.7 + 0.5 * 0.5, abs=1e-9)


def test_ece_is_zero_when_calibrated_and_matches_a_naive_loop() -> None:
    # in each bin the accuracy equals the confidence: 0.75 with 3/4 right; 0.5 with 1/2 right
    logits = logits_from_probabilities([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2)
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-9)

    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 10, generator=generator)
    labels = torch.randint(10, (500,), generator=generator)
    confidence, prediction = logits.double().softmax(1).max(1)
    naive = 0.0
    for b in range(15):
        in_bin = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if in_bin.any():
            gap = (prediction[in_bin] == labels[in_bin]).double().mean() - confidence[in_bin].mean()
            naive += in_bin.double().mean().item() * abs(gap.item())
    assert expected_calibration_error(logits, labels, n_bins=15) == pytest.approx(naive, abs=1e-9)


def test_nll_equals_cross_entropy_and_brier_matches_hand_values() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 7, generator=generator)
    labels = torch.randint(7, (64,), generator=generator)
    assert negative_log_likelihood(logits, labels) == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )
    # [1, 0] on label 0 scores 0; [0.5, 0.5] scores 0.25 + 0.25
    logits = torch.tensor([[50.0, -50.0], [0.0, 0.0]])
    assert brier_score(logits, torch.tensor([0, 0])) == pytest.approx(0.25, abs=1e-9)


# ---------------------------------------------------------------- PGD


def test_pgd_stays_in_the_ball_lowers_accuracy_and_leaves_the_model_alone(trained_cnn, test_split) -> None:
    images, labels = test_split
    images01 = images.float() / 255
    epsilon = 0.1
    model = trained_cnn
    grads_before = [parameter.grad for parameter in model.parameters()]
    for mode in (False, True):
        model.train(mode)
        adversarial = pgd_linf(
            model, images01, labels, epsilon=epsilon, steps=5, step_size=0.05,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert model.training is mode
        assert [parameter.grad for parameter in model.parameters()] == grads_before  # all None
        assert not adversarial.requires_grad
        assert (adversarial - images01).abs().max().item() <= epsilon + 1e-6
        assert adversarial.min().item() >= 0.0 and adversarial.max().item() <= 1.0
    model.eval()
    clean = accuracy(model, images01, labels)
    robust = accuracy(model, adversarial, labels)
    assert clean > 0.8, "the fixture model should have learnt the synthetic classes"
    assert robust < clean
    same = pgd_linf(model, images01, labels, epsilon=0.0, steps=5, step_size=0.05)
    assert torch.equal(same, images01) and accuracy(model, same, labels) == clean


def test_pgd_leaves_existing_parameter_grads_untouched(trained_cnn, test_split) -> None:
    images, labels = test_split
    model = trained_cnn
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    try:
        pgd_linf(model, images[:16].float() / 255, labels[:16], epsilon=0.1, steps=2, step_size=0.05)
        assert all(
            torch.equal(parameter.grad, torch.ones_like(parameter)) for parameter in model.parameters()
        )
    finally:
        for parameter in model.parameters():
            parameter.grad = None


def test_pgd_finds_the_analytic_worst_case_of_a_linear_model() -> None:
    """Two-class linear model: the margin z_y - z_other = w.x + c is minimised over the box
    [x - eps, x + eps] intersected with [0,1] by moving every pixel to the bound opposite to sign(w)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 2)).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(32, 1, SIDE, SIDE, generator=generator)  # some pixels near 0 or 1 get clipped
    labels = torch.randint(2, (32,), generator=generator)
    epsilon = 0.05
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    sign = torch.where(labels == 0, 1.0, -1.0)[:, None]
    w = sign * (weight[0] - weight[1])  # per example: margin = w . x + c
    c = sign[:, 0] * (bias[0] - bias[1])
    flat = images.flatten(1)
    worst = torch.where(w > 0, (flat - epsilon).clamp(0, 1), (flat + epsilon).clamp(0, 1))
    analytic_margin = (w * worst).sum(1) + c

    adversarial = pgd_linf(model, images, labels, epsilon=epsilon, steps=10, step_size=2.5 * epsilon / 10)
    pgd_margin = (w * adversarial.flatten(1)).sum(1) + c
    assert torch.allclose(pgd_margin, analytic_margin, atol=1e-4)
    assert (pgd_margin < (w * flat).sum(1) + c).all()


def test_robust_subset_is_seeded_balanced_and_nested() -> None:
    labels = torch.arange(100) % 4
    first = robust_subset_indices(labels, 40, seed=3)
    assert torch.equal(first, robust_subset_indices(labels, 40, seed=3))
    assert not torch.equal(first, robust_subset_indices(labels, 40, seed=4))
    assert len(set(first.tolist())) == 40
    assert torch.bincount(labels[first], minlength=4).tolist() == [10, 10, 10, 10]
    assert torch.equal(robust_subset_indices(labels, 10, seed=3), first[:10])
    assert len(robust_subset_indices(labels, 1000, seed=3)) == 100


# ---------------------------------------------------------------- evaluate()


def test_evaluate_returns_every_declared_column_and_restores_train_mode(trained_cnn, test_split) -> None:
    images, labels = test_split
    trained_cnn.train()
    inputs = EvalInputs(trained_cnn, images, labels, torch.device("cpu"), tiny_settings(), split="val")
    results = evaluate(inputs, DEFAULT_METRICS)
    assert trained_cnn.training
    trained_cnn.eval()
    assert set(DEFAULT_METRICS) <= set(METRICS.names())
    expected = {column for name in DEFAULT_METRICS for column in METRICS.get(name).column_names("val")}
    expected |= {f"cost/{name}_s" for name in DEFAULT_METRICS}
    assert set(results) == expected
    assert all(isinstance(value, float) and math.isfinite(value) for value in results.values())
    assert results["val/pgd_linf_accuracy"] <= results["val/pgd_linf_clean_accuracy_subset"]
    assert results["val/accuracy"] > 0.8
    assert results["model/params"] == sum(parameter.numel() for parameter in trained_cnn.parameters())
    conv_and_linear = 2 * (4 * 9 * SIDE * SIDE) + 2 * (4 * SIDE * SIDE * NUM_CLASSES)
    assert results["model/fwd_flops_2xmac_per_image"] == conv_and_linear
    assert all(results[f"cost/{name}_s"] >= 0 for name in DEFAULT_METRICS)


def test_evaluate_rejects_unknown_metrics_before_running_anything(trained_cnn, test_split) -> None:
    images, labels = test_split
    calls = []
    hook = trained_cnn.register_forward_hook(lambda *args: calls.append(1))
    try:
        inputs = EvalInputs(trained_cnn, images, labels, torch.device("cpu"), tiny_settings())
        with pytest.raises(UnknownNameError, match="known: accuracy, ") as error:
            evaluate(inputs, ["accuracy", "acuracy"])
    finally:
        hook.remove()
    assert "did you mean 'accuracy'" in str(error.value)
    assert calls == []


def test_evaluate_is_deterministic_for_a_seed(trained_cnn, test_split) -> None:
    images, labels = test_split
    selected = ["gaussian_noise", "pgd_linf"]
    columns = [
        "test/gaussian_noise_accuracy",
        "test/pgd_linf_accuracy",
        "test/pgd_linf_clean_accuracy_subset",
    ]
    settings = tiny_settings(noise_std=0.3, seed=7)
    runs = [
        evaluate(EvalInputs(trained_cnn, images, labels, torch.device("cpu"), settings), selected)
        for _ in range(2)
    ]
    assert [runs[0][column] for column in columns] == [runs[1][column] for column in columns]


def test_evaluation_settings_are_frozen_and_strict() -> None:
    settings = EvaluationSettings()
    assert settings.ece_bins == 15 and settings.pgd_step_size is None
    with pytest.raises(pydantic.ValidationError):
        EvaluationSettings(pgd_epsilon_typo=0.1)
    with pytest.raises(pydantic.ValidationError):
        settings.seed = 1  # type: ignore[misc]
    assert all(field.description for field in EvaluationSettings.model_fields.values())


# ---------------------------------------------------------------- latency and throughput


def test_latency_and_throughput_are_positive_and_ordered(trained_cnn, test_split) -> None:
    images, labels = test_split
    timings = cpu_latency_ms(trained_cnn, images[:1].float() / 255, warmup=2, iters=10)
    assert len(timings) == 10 and all(math.isfinite(t) and t > 0 for t in timings)
    assert images_per_second(trained_cnn, images[:32].float() / 255, warmup=1, iters=3) > 0
    inputs = EvalInputs(trained_cnn, images, labels, torch.device("cpu"), tiny_settings())
    results = evaluate(inputs, ["latency", "throughput"])
    assert 0 < results["latency/cpu_b1_median_ms"] <= results["latency/cpu_b1_p95_ms"] < math.inf
    assert 0 < results["throughput/images_per_s"] < math.inf
    assert results["latency/threads"] == torch.get_num_threads() and results["latency/iters"] == 5
    assert results["throughput/batch_size"] == 16


def test_class_metrics_ignore_an_abstain_output(trained_cnn, test_split) -> None:
    """A model with K+1 outputs whose last (abstain) logit dominates: accuracy, NLL, noise and PGD
    accuracy are those of its K class logits, as if the abstain output were not there."""
    images, labels = test_split

    class Abstaining(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.inner(x)
            return torch.cat([logits, logits.max(dim=1, keepdim=True).values + 100.0], dim=1)

    names = ["accuracy", "nll", "gaussian_noise", "pgd_linf"]
    plain = evaluate(EvalInputs(trained_cnn.eval(), images, labels, torch.device("cpu"), tiny_settings()), names)
    wrapped = Abstaining(trained_cnn).eval()
    abstaining = evaluate(EvalInputs(wrapped, images, labels, torch.device("cpu"), tiny_settings(), num_classes=NUM_CLASSES),
                          names)
    for column in ("test/accuracy", "test/nll", "test/gaussian_noise_accuracy", "test/pgd_linf_accuracy"):
        assert abstaining[column] == pytest.approx(plain[column], abs=1e-6), column
    assert plain["test/accuracy"] > 0.8


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_returns_exactly_its_declared_columns(name: str, trained_cnn, test_split) -> None:
    """The registry-wide contract: each metric alone yields its declared columns (as floats) and its cost."""
    images, labels = test_split
    settings = tiny_settings(corruption_subset=16, curve_subset=16, autoattack_subset=4, ood_synthetic_size=16,
                             calibration_size=0)
    inputs = EvalInputs(trained_cnn.eval(), images, labels, torch.device("cpu"), settings, num_classes=NUM_CLASSES,
                        val_images=images[:64], val_labels=labels[:64])
    results = evaluate(inputs, [name])
    spec = METRICS.get(name)
    assert set(results) == set(spec.column_names("test", settings)) | {f"cost/{name}_s"}
    assert all(isinstance(value, float) for value in results.values())
    assert any(math.isfinite(v) for k, v in results.items() if not k.startswith("cost/")), results
    assert results[f"cost/{name}_s"] >= 0


# ---------------------------------------------------------------- continual-learning scores


def test_continual_scores_of_a_known_matrix() -> None:
    matrix = [[0.9], [0.5, 0.8], [0.3, 0.6, 0.7]]
    scores = continual_scores(matrix)
    assert scores["continual/avg_accuracy"] == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert scores["continual/avg_incremental_accuracy"] == pytest.approx((0.9 + 0.65 + (1.6 / 3)) / 3)
    # forgetting: task 0 peaked at 0.9 and ends at 0.3; task 1 peaked at 0.8 and ends at 0.6
    assert scores["continual/forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)
    assert scores["continual/task2_accuracy"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="lower triangle|row t"):
        continual_scores([[0.9, 0.1]])


def test_task_accuracies_mask_unseen_classes() -> None:
    # class 2 is unseen after task 0; its huge logit must not steal the prediction
    logits = torch.tensor([[1.0, 0.0, 9.0], [0.0, 1.0, 9.0], [0.0, 0.0, 9.0]])
    labels = torch.tensor([0, 1, 2])
    assert task_accuracies(logits, labels, ((0, 1), (2,)), 0) == [1.0]
    assert task_accuracies(logits, labels, ((0, 1), (2,)), 1) == [0.0, 1.0]
