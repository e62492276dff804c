"""Tests of the attacks and the robustness metrics: known answers on linear models, the shape of the
accuracy-perturbation curves of a small MLP trained on scikit-learn digits, agreement with torchattacks,
and EOT. The digits model trains in well under a second, once per module."""

from __future__ import annotations

import sys

import pydantic
import pytest
import torch
import torch.nn.functional as F
import torchattacks  # a dev dependency (pip install --no-deps torchattacks): the agreement test must run
from torch import nn

from harness.data import dataset_info, load_split
from harness.evaluation import (
    ATTACKS,
    METRICS,
    EvalInputs,
    EvaluationSettings,
    auac,
    epsilon_label,
    evaluate,
    expected_prediction,
    fgsm_linf,
    pgd_l2,
    pgd_linf,
    robust_subset_indices,
    run_attack,
)
from harness.models import Normalize

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    train, test = load_split("digits", "train"), load_split("digits", "test")
    return {
        "train_images": train.images,
        "train_labels": train.labels,
        "images": test.images,
        "labels": test.labels,
    }


@pytest.fixture(scope="module")
def mlp(digits: dict[str, torch.Tensor]) -> nn.Module:
    """64-64-10 ReLU MLP, ~98% test accuracy after 150 full-batch Adam steps."""
    info = dataset_info("digits")
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize(info.mean, info.std), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, labels = digits["train_images"].float() / 255, digits["train_labels"]
    for _ in range(150):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def settings(**overrides: object) -> EvaluationSettings:
    return EvaluationSettings(**({"batch_size": 400, "curve_subset": 400} | overrides))


def eval_inputs(model: nn.Module, digits: dict[str, torch.Tensor], **overrides: object) -> EvalInputs:
    stochastic = bool(overrides.pop("stochastic", False))
    return EvalInputs(
        model=model, images=digits["images"], labels=digits["labels"], device=torch.device("cpu"),
        settings=settings(**overrides), num_classes=NUM_CLASSES, stochastic=stochastic,
    )  # fmt: skip


@pytest.fixture(scope="module")
def curve(mlp: nn.Module, digits: dict[str, torch.Tensor]) -> dict[str, float]:
    return evaluate(eval_inputs(mlp, digits), ["robustness_curve"])


def accuracy(model: nn.Module, images01: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images01).argmax(1) == labels).double().mean().item()


def attack(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, **kw):
    return run_attack(
        name, model, images, labels, epsilon=epsilon, steps=kw.pop("steps", 10),
        generator=kw.pop("generator", torch.Generator().manual_seed(0)), **kw,
    )  # fmt: skip


def per_example(tensor: torch.Tensor, norm: str) -> torch.Tensor:
    flat = tensor.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


# ---------------------------------------------------------------- the attacks


RADII = {"linf": (0.05, 0.3), "l2": (0.5, 2.0)}  # a small and a large radius of each norm


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("size", [0, 1])
def test_attacks_stay_in_their_ball_and_in_0_1_and_leave_the_model_alone(
    name: str, size: int, mlp: nn.Module, digits: dict[str, torch.Tensor]
) -> None:
    images, labels = digits["images"].float() / 255, digits["labels"]
    epsilon = RADII[ATTACKS[name]][size]
    for mode in (True, False):
        mlp.train(mode)
        adversarial = attack(name, mlp, images, labels, epsilon)
        assert mlp.training is mode
    assert all(parameter.grad is None for parameter in mlp.parameters())
    assert not adversarial.requires_grad
    assert adversarial.min().item() >= 0.0 and adversarial.max().item() <= 1.0
    distance = per_example(adversarial - images, ATTACKS[name])
    assert distance.max().item() <= epsilon * (1 + 1e-5)
    # the budget is used (clipping to [0,1] keeps L2 perturbations a little inside the sphere)
    assert (distance >= 0.9 * epsilon).double().mean().item() > 0.9
    assert accuracy(mlp, adversarial, labels) < accuracy(mlp, images, labels)


def linear_two_class(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear model and, per example, the direction w and offset c of its margin z_label - z_other = w.x + c."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    images = 0.3 + 0.4 * torch.rand(16, 1, 8, 8, generator=generator)  # interior: small steps never clip
    labels = torch.randint(2, (16,), generator=generator)
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    sign = torch.where(labels == 0, 1.0, -1.0)[:, None]
    return model, images, labels, sign * (weight[0] - weight[1]), sign[:, 0] * (bias[0] - bias[1])


def test_pgd_l2_finds_the_analytic_worst_case_of_a_linear_model() -> None:
    """Inside the box, the smallest margin over the L2 ball is w.x + c - epsilon * |w|, at x - epsilon w/|w|."""
    model, images, labels, w, c = linear_two_class(seed=0)
    epsilon = 0.1
    adversarial = pgd_l2(
        model, images, labels, epsilon=epsilon, steps=10, step_size=0.025, random_start=False
    )
    expected = images.flatten(1) - epsilon * w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(adversarial.flatten(1), expected, atol=1e-5)
    margin = (w * adversarial.flatten(1)).sum(1) + c
    assert torch.allclose(margin, (w * images.flatten(1)).sum(1) + c - epsilon * w.norm(dim=1), atol=1e-4)


def test_fgsm_is_one_signed_step_of_size_epsilon() -> None:
    model, images, labels, w, _ = linear_two_class(seed=1)
    adversarial = fgsm_linf(model, images, labels, epsilon=0.05)
    assert torch.allclose(adversarial.flatten(1), images.flatten(1) - 0.05 * w.sign(), atol=1e-6)


def test_random_starts_are_seeded_and_uniform_in_the_ball(mlp: nn.Module, digits) -> None:
    """With no steps the attack returns its start: the same for the same seed, another for another seed;
    uniform in the 64-d L2 ball puts radius < 0.9 epsilon with probability 0.9^64 ~ 0.001."""
    images = (0.3 + 0.4 * torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))).float()
    labels = torch.zeros(200, dtype=torch.long)
    for name, attack_fn in (("linf", pgd_linf), ("l2", pgd_l2)):
        starts = [
            attack_fn(
                mlp,
                images,
                labels,
                epsilon=0.1,
                steps=0,
                step_size=0.01,
                generator=torch.Generator().manual_seed(s),
            )
            for s in (7, 7, 8)
        ]
        assert torch.equal(starts[0], starts[1]) and not torch.equal(starts[0], starts[2])
        distance = per_example(starts[0] - images, name)
        assert distance.max().item() <= 0.1 * (1 + 1e-5)
        if name == "l2":
            assert (distance < 0.09).double().mean().item() < 0.02
        else:
            assert (starts[0] - images).mean().abs().item() < 2e-3  # centred: uniform in [-eps, eps]


def test_pgd_agrees_with_itself_under_the_same_generator_seed(mlp: nn.Module, digits) -> None:
    images, labels = digits["images"][:64].float() / 255, digits["labels"][:64]
    for name in ("pgd_linf", "pgd_l2"):
        first, second = (
            attack(name, mlp, images, labels, 0.2 if name == "pgd_linf" else 1.0) for _ in range(2)
        )
        assert torch.equal(first, second)


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_linf_robust_accuracy_agrees_with_torchattacks(
    random_start: bool, mlp: nn.Module, digits: dict[str, torch.Tensor]
) -> None:
    """Same model, the 359 digits test images, eps 0.1, alpha 0.025, 10 steps: within one point."""
    images, labels = digits["images"].float() / 255, digits["labels"]
    epsilon, step_size, steps = 0.1, 0.025, 10
    reference = torchattacks.PGD(mlp, eps=epsilon, alpha=step_size, steps=steps, random_start=random_start)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = accuracy(mlp, reference(images, labels), labels)
    ours = accuracy(
        mlp,
        pgd_linf(
            mlp,
            images,
            labels,
            epsilon=epsilon,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            generator=torch.Generator().manual_seed(0),
        ),  # fmt: skip
        labels,
    )
    clean = accuracy(mlp, images, labels)
    assert ours < clean - 0.3, "eps 0.1 should break a large part of the digits MLP, else the test is vacuous"
    assert abs(ours - theirs) <= 0.01


# ---------------------------------------------------------------- EOT


class Cycling(nn.Module):
    """A 'stochastic' model whose passes cycle through fixed members, so EOT has a known answer."""

    def __init__(self, *members: nn.Module) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        member = self.members[self.calls % len(self.members)]
        self.calls += 1
        return member(images)


def linear(weight: list[float]) -> nn.Module:
    """Two logits, [0, w.x], on 2x2 images."""
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0] * 4, weight]))
    return nn.Sequential(nn.Flatten(), layer)


def test_eot_steps_along_the_gradient_summed_over_the_passes() -> None:
    """At x = 0.5 both members give w.x = 0, so the label-0 loss softplus(w.x) has gradient w / 2 for each:
    one pass follows sign(w1), two passes follow sign(w1 + w2) = (+,-,+,-), unlike either member alone."""
    images, labels = torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, dtype=torch.long)
    model = Cycling(linear([3.0, -1.0, -1.0, -1.0]), linear([-1.0, -1.0, 3.0, -1.0]))
    one = fgsm_linf(model, images, labels, epsilon=0.1, eot_samples=1)
    model.calls = 0
    two = fgsm_linf(model, images, labels, epsilon=0.1, eot_samples=2)
    assert torch.allclose(one.flatten(), torch.tensor([0.6, 0.4, 0.4, 0.4]))
    assert torch.allclose(two.flatten(), torch.tensor([0.6, 0.4, 0.6, 0.4]))


def test_eot_prediction_is_the_argmax_of_the_mean_softmax_not_a_majority_vote() -> None:
    confident_0 = nn.Sequential(nn.Flatten(), nn.Linear(1, 3))
    weak_1 = nn.Sequential(nn.Flatten(), nn.Linear(1, 3))
    with torch.no_grad():
        for module, logits in ((confident_0, [10.0, 0.0, 0.0]), (weak_1, [0.0, 0.2, 0.0])):
            module[1].weight.zero_()
            module[1].bias.copy_(torch.tensor(logits))
    model = Cycling(confident_0, weak_1, weak_1)  # votes 0, 1, 1; mean softmax favours 0 (0.54 vs 0.25)
    assert expected_prediction(model, torch.zeros(1, 1, 1, 1), eot_samples=3).item() == 0
    model.calls = 1
    assert expected_prediction(model, torch.zeros(1, 1, 1, 1), eot_samples=1).item() == 1


@pytest.mark.parametrize("name", list(ATTACKS))
def test_eot_with_a_deterministic_model_equals_no_eot(name: str, mlp: nn.Module, digits) -> None:
    images, labels = digits["images"][:100].float() / 255, digits["labels"][:100]
    epsilon = 0.1 if ATTACKS[name] == "linf" else 0.5
    plain = attack(name, mlp, images, labels, epsilon, eot_samples=1)
    assert torch.equal(plain, attack(name, mlp, images, labels, epsilon, eot_samples=2))
    assert torch.equal(expected_prediction(mlp, plain, 1), expected_prediction(mlp, plain, 3))


def without_cost(columns: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in columns.items() if not name.startswith("cost/")}


def test_the_curve_of_a_deterministic_model_does_not_change_with_eot(mlp, digits, curve) -> None:
    with_eot = evaluate(eval_inputs(mlp, digits, stochastic=True, eot_samples=2), ["robustness_curve"])
    assert without_cost(with_eot) == without_cost(curve)


class CountingMLP(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(images)


@pytest.mark.parametrize(("stochastic", "passes"), [(False, 1), (True, 3)])
def test_eot_samples_apply_to_stochastic_models_only(stochastic: bool, passes: int, mlp, digits) -> None:
    """One batch, grids (0, 0.1) and (0, 0.5), 2 PGD steps: clean 1 + FGSM 1+1 + PGD-L-inf 2+1 + PGD-L2 2+1
    = 9 prediction or gradient rounds, each of `passes` forward passes."""
    model = CountingMLP(mlp)
    inputs = eval_inputs(
        model, digits, stochastic=stochastic, eot_samples=3, linf_epsilons=(0.0, 0.1), l2_epsilons=(0.0, 0.5),
        pgd_steps=2, curve_subset=50,
    )  # fmt: skip
    evaluate(inputs, ["robustness_curve"])
    assert model.calls == 9 * passes


@pytest.mark.parametrize(("stochastic", "passes"), [(False, 1), (True, 3)])
def test_the_pgd_linf_metric_uses_eot_for_stochastic_models(stochastic: bool, passes: int, mlp, digits) -> None:
    """One batch, 2 PGD steps: clean prediction 1 + gradients 2 + adversarial prediction 1 = 4 rounds, each of
    `passes` forward passes (before the fix the metric attacked a random defence with one sample)."""
    model = CountingMLP(mlp)
    inputs = eval_inputs(model, digits, stochastic=stochastic, eot_samples=3, pgd_steps=2, robust_subset=50)
    evaluate(inputs, ["pgd_linf"])
    assert model.calls == 4 * passes


def test_ani_is_attacked_with_eot() -> None:
    """ani's noisy BatchNorm makes its predictions random: its MethodInfo says so, and that flag is what the
    final run passes to EvalInputs.stochastic (harness/jobs.py), which sets every attack's EOT passes."""
    from harness.evaluation.metrics import eot_samples_of
    from harness.method import METHODS
    from harness.plugins import discover_methods

    discover_methods()
    ani = METHODS.get("ani").info
    assert ani.stochastic
    inputs = EvalInputs(
        model=nn.Identity(), images=torch.zeros(1, 1, 2, 2, dtype=torch.uint8), labels=torch.zeros(1, dtype=torch.long),
        device=torch.device("cpu"), settings=settings(eot_samples=4), stochastic=ani.stochastic,
    )  # fmt: skip
    assert eot_samples_of(inputs) == 4


# ---------------------------------------------------------------- the curves and AUAC


def test_auac_has_known_values_and_rejects_bad_grids() -> None:
    assert auac((0.0, 0.02, 0.05, 0.1, 0.2), [0.7] * 5) == pytest.approx(0.7)
    assert auac((0.0, 0.1, 0.2), [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert auac((0.0, 0.1, 0.4), [1.0, 1.0, 0.0]) == pytest.approx((0.1 + 0.15) / 0.4)
    with pytest.raises(ValueError, match="0.0 first"):
        auac((0.1, 0.2), [1.0, 1.0])
    with pytest.raises(ValueError, match="one accuracy per epsilon"):
        auac((0.0, 0.1), [1.0])


def test_epsilon_grids_are_validated_and_labelled() -> None:
    assert [epsilon_label(e) for e in (0.0, 0.05, 0.1, 2.0, 8 / 255)] == ["0", "0p05", "0p1", "2", "0p031373"]
    assert EvaluationSettings(linf_epsilons=[0, 0.1]).linf_epsilon_labels == ("0", "0p1")
    for bad, message in (
        ((0.05, 0.1), "0.0 first"), ((0.0, 0.1, 0.1), "increase strictly"), ((0.0, 0.5, 1.5), "pixel units"),
        ((0.0, 1e-7, 0.1), "share a column name"),
    ):  # fmt: skip
        with pytest.raises(pydantic.ValidationError, match=message):
            EvaluationSettings(linf_epsilons=bad)


def test_curve_returns_every_declared_column(curve) -> None:
    declared = METRICS.get("robustness_curve").column_names("test", settings())
    assert set(curve) == set(declared) | {"cost/robustness_curve_s"}
    assert len(declared) == 5 + 5 + 5 + 3
    assert "test/adv_pgd_linf_e0p05_accuracy" in declared and "test/adv_pgd_l2_e0p25_accuracy" in declared
    assert all(0.0 <= curve[f"test/adv_{name}_auac"] <= 1.0 for name in ATTACKS)


def test_epsilon_zero_is_the_clean_accuracy_on_the_subset_exactly(mlp, digits, curve) -> None:
    subset = robust_subset_indices(digits["labels"], 400, seed=0)
    clean = accuracy(mlp, digits["images"][subset].float() / 255, digits["labels"][subset])
    assert clean > 0.95
    for name in ATTACKS:
        assert curve[f"test/adv_{name}_e0_accuracy"] == clean


def column(name: str, epsilon: float) -> str:
    return f"test/adv_{name}_e{epsilon_label(epsilon)}_accuracy"


@pytest.mark.parametrize("name", ["pgd_linf", "pgd_l2"])
def test_pgd_curves_fall_with_epsilon(name: str, curve) -> None:
    grid = settings().linf_epsilons if ATTACKS[name] == "linf" else settings().l2_epsilons
    accuracies = [curve[column(name, epsilon)] for epsilon in grid]
    assert all(later <= earlier for earlier, later in zip(accuracies, accuracies[1:], strict=False)), (
        accuracies
    )
    assert accuracies[-1] < 0.05 < 0.9 < accuracies[0]  # the grid spans intact to broken
    assert curve[f"test/adv_{name}_auac"] == pytest.approx(auac(grid, accuracies))


def test_pgd_is_at_least_as_strong_as_fgsm(curve) -> None:
    for epsilon in settings().linf_epsilons:
        assert curve[column("pgd_linf", epsilon)] <= curve[column("fgsm_linf", epsilon)] + 0.01
    assert curve["test/adv_pgd_linf_auac"] < curve["test/adv_fgsm_linf_auac"]


def test_an_abstain_logit_is_ignored_by_the_attacks(mlp, digits, curve) -> None:
    """A K+1-th logit that always wins would make every prediction wrong if the attack looked at it."""

    class WithAbstain(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            logits = mlp(images)
            return torch.cat([logits, logits.detach().amax(1, keepdim=True) + 100.0], dim=1)

    with_abstain = evaluate(eval_inputs(WithAbstain(), digits), ["robustness_curve"])
    assert without_cost(with_abstain) == without_cost(curve)


# ---------------------------------------------------------------- AutoAttack


def test_autoattack_is_at_least_as_strong_as_pgd_and_keeps_the_global_rng(mlp, digits) -> None:
    inputs = eval_inputs(
        mlp, digits, autoattack_epsilon=0.15, autoattack_subset=20, pgd_epsilon=0.15, robust_subset=20
    )
    rng_before = torch.random.get_rng_state()
    results = evaluate(inputs, ["autoattack", "pgd_linf"])
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert set(results) == {"test/autoattack_linf_accuracy", "cost/autoattack_s"} | {
        "test/pgd_linf_accuracy", "test/pgd_linf_clean_accuracy_subset", "cost/pgd_linf_s",
    }  # fmt: skip
    assert results["test/autoattack_linf_accuracy"] <= results["test/pgd_linf_accuracy"]
    assert results["test/autoattack_linf_accuracy"] < results["test/pgd_linf_clean_accuracy_subset"]


def test_autoattack_without_torchattacks_names_the_install_command(mlp, digits, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # makes `import torchattacks` fail
    with pytest.raises(ImportError, match=r"pip install --no-deps torchattacks"):
        evaluate(eval_inputs(mlp, digits, autoattack_subset=5), ["autoattack"])
