"""Mechanism tests of the adversarial-robustness methods (trades, xat, adv_finetune, ani): the
attacks stay in their ball or box, the losses match values worked out by hand, the methods that start
from the teacher copy it, and the noise has the statistics it promises. CPU, no Ray."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.evaluation.attacks import pgd_linf
from harness.method import TrainContext, build_method
from methods.adv_finetune import slow_start_fast_decay
from methods.ani import NoisyBatchNorm2d, adaptive_noise
from methods.trades import kl_attack, kl_divergence, trades_objective
from methods.xat import multiplicative_attack
from tests.method_fixtures import net, tiny, tiny_images

CPU = torch.device("cpu")
CLASSES = 10


def frozen_teacher(name: str = "fast_cnn", seed: int = 123) -> nn.Module:
    teacher = net(name, seed).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def context(teacher: nn.Module | None = None, teacher_model: str | None = "fast_cnn",
            build: object = None) -> TrainContext:
    return TrainContext(step=0, total_steps=2, epoch=0, num_classes=CLASSES, device=CPU, teacher=teacher,
                        num_samples=64, input_shape=(1, 8, 8), teacher_model=teacher_model,
                        build_model=build or (lambda name=None: net(name or "fast_cnn", seed=7)))


def classes_context(num_classes: int, teacher: nn.Module | None = None, step: int = 0,
                    total_steps: int = 1) -> TrainContext:
    return TrainContext(step=step, total_steps=total_steps, epoch=0, num_classes=num_classes, device=CPU,
                        teacher=teacher)


# ---------------------------------------------------------------- trades


def test_trades_kl_term_vanishes_when_the_adversarial_input_is_the_clean_one() -> None:
    model, batch, labels = tiny().train(), torch.rand(6, 1, 8, 8), torch.arange(6)
    out = trades_objective(model, batch, batch.clone(), labels, beta=6.0)
    assert out.parts["robust_kl"].item() == 0.0
    assert out.loss.item() == pytest.approx(F.cross_entropy(model(batch), labels).item(), rel=1e-6)


def test_trades_attack_stays_in_the_ball_raises_the_kl_and_leaves_the_model_alone() -> None:
    model, batch = tiny().train(), torch.rand(6, 1, 8, 8)
    running_mean = model[1].features[0][1].running_mean.clone()
    torch.manual_seed(1)
    adversarial = kl_attack(model, batch, epsilon=0.1, steps=3, step_size=0.05)
    assert (adversarial - batch).abs().max() <= 0.1 + 1e-6
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    assert model.training  # handed back in train mode
    assert torch.equal(model[1].features[0][1].running_mean, running_mean)  # the attack ran in eval mode
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        near = kl_divergence(model(batch), model((batch + 0.001 * torch.randn_like(batch)).clamp(0, 1)))
        attacked = kl_divergence(model(batch), model(adversarial))
    assert attacked > 10 * near


# ---------------------------------------------------------------- xat


def test_xat_perturbation_is_a_per_pixel_factor_in_the_box() -> None:
    model = tiny(channels=3).train()
    batch = torch.rand(4, 3, 8, 8) * 0.4 + 0.01  # at most 0.41 * 1.5 < 1: no clipping
    batch[:, :, 0, 0] = 0.0
    torch.manual_seed(0)
    perturbed = multiplicative_attack(model, batch, torch.arange(4), epsilon=0.5, steps=2, step_size=0.3)
    assert torch.all(perturbed[:, :, 0, 0] == 0.0)  # a black pixel stays black
    factor = perturbed[:, :, 1:, 1:] / batch[:, :, 1:, 1:]
    assert factor.min() >= 0.5 - 1e-5 and factor.max() <= 1.5 + 1e-5
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), rtol=1e-4)  # shared by the channels


def test_xat_with_a_vanishing_box_is_cross_entropy_on_the_clean_images() -> None:
    model, batch, labels = tiny().eval(), torch.rand(4, 1, 8, 8), torch.arange(4)
    out = build_method("xat", {"epsilon": 1e-6, "adversarial_weight": 0.5}).training_loss(model, batch, labels,
                                                                                          classes_context(10))
    assert out.loss.item() == pytest.approx(F.cross_entropy(model(batch), labels).item(), rel=1e-4)
    assert out.parts["clean"].item() == pytest.approx(out.parts["perturbed"].item(), rel=1e-4)


# ---------------------------------------------------------------- adv_finetune


def test_slow_start_fast_decay_schedule_values() -> None:
    factor = slow_start_fast_decay(10, 0.7)
    values = [factor(step) for step in range(10)]
    assert values == pytest.approx([1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 1.0, 1.0, 2 / 3, 1 / 3])
    assert factor(10) == 0.0
    method = build_method("adv_finetune", {"slow_start_fraction": 0.5})
    schedule = method.lr_schedule(lambda step: -1.0, dataclasses.replace(context(), total_steps=4))
    assert [schedule(step) for step in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert slow_start_fast_decay(1, 0.7)(0) == 1.0  # a one-step run still takes its step


def test_adv_finetune_starts_from_a_copy_of_the_teacher() -> None:
    teacher = frozen_teacher()
    model = build_method("adv_finetune").prepare_model(net(seed=0), context(teacher))
    for (key, value), (teacher_key, teacher_value) in zip(model.state_dict().items(), teacher.state_dict().items(),
                                                          strict=True):
        assert key == teacher_key and torch.equal(value, teacher_value)
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a copy, not an alias: the teacher stays as it was
    assert not torch.equal(next(model.parameters()), next(teacher.parameters()))


def test_adv_finetune_refuses_a_teacher_of_another_architecture() -> None:
    with pytest.raises(ValueError, match="teacher.model equal to its model"):
        build_method("adv_finetune").prepare_model(net(), context(frozen_teacher("fast_cnn_wide"), "fast_cnn_wide"))
    with pytest.raises(RuntimeError, match="teacher"):
        build_method("adv_finetune").prepare_model(net(), context(None))


def test_adv_finetune_loss_is_the_cross_entropy_on_pgd_examples() -> None:
    method = build_method("adv_finetune", {"epsilon": 0.2, "steps": 2})
    teacher = frozen_teacher()
    model = method.prepare_model(net(), context(teacher)).eval()  # eval: BN statistics stay put
    data = tiny_images(8)
    images, labels = data.images.float() / 255.0, data.labels
    torch.manual_seed(3)
    loss = method.training_loss(model, images, labels, context(teacher)).loss
    torch.manual_seed(3)
    adversarial = pgd_linf(model, images, labels, epsilon=0.2, steps=2, step_size=0.25, random_start=True)
    assert loss.item() == pytest.approx(F.cross_entropy(model(adversarial), labels).item(), rel=1e-6)
    assert loss.item() > F.cross_entropy(model(images), labels).item()


# ---------------------------------------------------------------- ani


def test_adaptive_noise_has_the_batch_per_channel_std_times_the_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    # most of each channel's spread is across pixels, not across images: the std must pool both
    pattern = torch.linspace(-1.0, 1.0, 256).view(1, 1, 16, 16)
    features = (pattern + 0.1 * torch.randn(64, 2, 16, 16, generator=generator)) * torch.tensor([1.0, 10.0]).view(
        1, 2, 1, 1) + 5.0
    torch.manual_seed(1)
    noise = adaptive_noise(features, 0.3)
    sigma = features.std(dim=(0, 2, 3), unbiased=False)
    assert (noise.std(dim=(0, 2, 3)) / sigma).tolist() == pytest.approx([0.3, 0.3], rel=0.03)
    assert noise.mean(dim=(0, 2, 3)).abs().max().item() < 0.02 * sigma.max().item()
    assert torch.equal(adaptive_noise(torch.ones(4, 3, 2, 2), 0.5), torch.zeros(4, 3, 2, 2))  # no spread, no noise


def test_noisy_batch_norm_is_batch_norm_plus_noise_in_train_and_eval() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    plain.train()(torch.randn(32, 3, 4, 4) * 2.0 + 1.0)  # give the running statistics something to hold
    noisy = NoisyBatchNorm2d(copy.deepcopy(plain), noise_scale=0.25)
    x = torch.randn(64, 3, 8, 8)
    for mode in (False, True):
        reference = copy.deepcopy(plain).train(mode)(x)
        first, second = noisy.train(mode)(x), noisy.train(mode)(x)
        assert not torch.equal(first, second)  # random at test time too
        ratio = (first - reference).std(dim=(0, 2, 3)) / reference.std(dim=(0, 2, 3), unbiased=False)
        assert ratio.tolist() == pytest.approx([0.25] * 3, rel=0.05)
    silent = NoisyBatchNorm2d(copy.deepcopy(plain), noise_scale=0.0).eval()
    assert torch.equal(silent(x), copy.deepcopy(plain).eval()(x))


def test_noisy_batch_norm_does_not_differentiate_through_the_noise_scale() -> None:
    plain, x = nn.BatchNorm2d(2).eval(), torch.randn(8, 2, 3, 3)  # eval: the output's spread depends on x
    weights = torch.randn(8, 2, 3, 3)
    noisy = NoisyBatchNorm2d(copy.deepcopy(plain), noise_scale=0.5).eval()
    x_noisy, x_plain = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (noisy(x_noisy) * weights).sum().backward()
    (plain(x_plain) * weights).sum().backward()
    assert torch.allclose(x_noisy.grad, x_plain.grad, atol=1e-6)


def test_ani_starts_from_the_teacher_with_noise_after_every_batch_norm() -> None:
    teacher = frozen_teacher()
    model = build_method("ani", {"noise_scale": 0.1}).prepare_model(net(seed=0), context(teacher))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and all(type(m) is NoisyBatchNorm2d and m.noise_scale == 0.1 for m in norms)
    assert model.state_dict().keys() == teacher.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in teacher.state_dict().items())
    images = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        first, second = model.eval()(images), model.eval()(images)
        deterministic = teacher(images)
    assert not torch.equal(first, second)
    assert (first.argmax(1) == deterministic.argmax(1)).float().mean() >= 0.75  # small noise, mostly the same
    with pytest.raises(ValueError, match="teacher.model"):
        build_method("ani").prepare_model(net(), context(frozen_teacher("fast_cnn_wide")))
