"""Mechanism tests of online distillation (bd_kd), the methods that start from the teacher's weights
(adv_finetune, ani) and ghost batch norm's update-matched regime: each against a value worked out by hand
on small tensors (the balanced divergence, the schedule, the noise statistics, the settings). CPU, no Ray;
the registry-wide contracts are in test_contracts."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.data import ImageArrays
from harness.engine import TrainSettings, train
from harness.evaluation.attacks import pgd_linf
from harness.method import TrainContext, build_method
from harness.models import build_model
from methods.adv_finetune import slow_start_fast_decay
from methods.ani import NoisyBatchNorm2d, adaptive_noise
from methods.bd_kd import balanced_divergence, kl_per_sample
from methods.ghost_bn import GhostBatchNorm2d
from tests.fixed_models import FixedLogits

CPU = torch.device("cpu")
CLASSES = 10
LN2, LN3, LN_1_5 = math.log(2.0), math.log(3.0), math.log(1.5)


def net(name: str = "fast_cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, in_channels=1, num_classes=CLASSES, image_size=8, mean=(0.5,), std=(0.25,))


def tiny_images(n: int = 64) -> ImageArrays:
    """Random uint8 1x8x8 images with balanced labels over 10 classes."""
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageArrays(images, torch.arange(n, dtype=torch.int64) % CLASSES)


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



def samples(count: int) -> TrainContext:
    """A context for `adjust_settings` of a run on `count` training examples."""
    return dataclasses.replace(context(), num_samples=count)


# ---------------------------------------------------------------- bd_kd


def test_balanced_divergence_weights_the_divergence_that_corrects_the_student() -> None:
    sharp, flat = [LN3, 0.0], [0.0, 0.0]  # softmax (3/4, 1/4) and (1/2, 1/2)
    student = torch.tensor([sharp, flat])
    teacher = torch.tensor([flat, sharp])
    divergence, overconfident = balanced_divergence(student, teacher, temperature=1.0, gamma=3.0)
    kl_flat_sharp = 0.5 * math.log(4.0 / 3.0)              # KL((1/2,1/2) || (3/4,1/4))
    kl_sharp_flat = 0.75 * LN_1_5 - 0.25 * LN2             # KL((3/4,1/4) || (1/2,1/2))
    assert overconfident.tolist() == [True, False]
    # row 0, student over-confident: 3/4 on the forward KL(p_t || p_s); row 1: 3/4 on the reverse KL
    assert divergence[0].item() == pytest.approx(0.75 * kl_flat_sharp + 0.25 * kl_sharp_flat, rel=1e-6)
    assert divergence[1].item() == pytest.approx(0.25 * kl_sharp_flat + 0.75 * kl_flat_sharp, rel=1e-6)
    plain, _ = balanced_divergence(student, teacher, temperature=1.0, gamma=1.0)  # gamma 1: half of each
    assert plain.tolist() == pytest.approx([0.5 * (kl_flat_sharp + kl_sharp_flat)] * 2, rel=1e-6)


def test_balanced_divergence_uses_the_temperature_and_vanishes_when_the_two_agree() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    same, _ = balanced_divergence(logits, logits.clone(), temperature=2.0, gamma=2.0)
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    student, teacher = torch.tensor([[2.0 * LN3, 0.0]]), torch.zeros(1, 2)  # at T=2 the student is (3/4, 1/4)
    at_two, _ = balanced_divergence(student, teacher, temperature=2.0, gamma=1.0)
    assert at_two.item() == pytest.approx(0.5 * (0.5 * math.log(4.0 / 3.0) + 0.75 * LN_1_5 - 0.25 * LN2), rel=1e-6)


def test_bd_kd_loss_is_both_objectives_and_keeps_their_gradients_apart() -> None:
    student_logits, teacher_logits = [[LN3, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, LN3]]
    online_teacher = FixedLogits(teacher_logits)
    method = build_method("bd_kd", {"temperature": 1.0, "alpha": 0.5, "gamma": 2.0, "beta": 0.25, "ramp_fraction": 0.0})
    student = method.prepare_model(FixedLogits(student_logits), context(build=lambda name=None: online_teacher))
    assert list(method.auxiliary_modules(context())) == [online_teacher]
    labels = torch.tensor([0, 1])
    out = method.training_loss(student, torch.zeros(2, 1, 2, 2), labels, context())
    s, t = torch.tensor(student_logits), torch.tensor(teacher_logits)
    balanced, _ = balanced_divergence(s, t, 1.0, 2.0)
    teacher_kl = kl_per_sample(F.log_softmax(s, 1), F.log_softmax(t, 1)).mean()  # KL(p_s || p_t)
    expected = (0.5 * F.cross_entropy(s, labels) + 0.5 * balanced.mean()) + \
        (0.75 * F.cross_entropy(t, labels) + 0.25 * teacher_kl)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    # each network's gradient comes from its own objective only: the partner's distribution is detached
    t_alone = t.clone().requires_grad_(True)
    own = 0.75 * F.cross_entropy(t_alone, labels) + \
        0.25 * kl_per_sample(F.log_softmax(s, 1), F.log_softmax(t_alone, 1)).mean()
    own.backward()
    assert torch.allclose(online_teacher.logits.grad, t_alone.grad, atol=1e-7)
    s_alone = s.clone().requires_grad_(True)
    (0.5 * F.cross_entropy(s_alone, labels) + 0.5 * balanced_divergence(s_alone, t, 1.0, 2.0)[0].mean()).backward()
    assert torch.allclose(student.logits.grad, s_alone.grad, atol=1e-7)


def test_bd_kd_builds_the_declared_teacher_and_the_engine_trains_it() -> None:
    method = build_method("bd_kd")
    built: list[str | None] = []

    def build(name: str | None = None) -> nn.Module:
        built.append(name)
        return net(name or "fast_cnn", seed=5)

    student = method.prepare_model(net(), context(teacher_model="fast_cnn_wide", build=build))
    (teacher,) = method.auxiliary_modules(context())
    assert built == ["fast_cnn_wide"]
    assert sum(p.numel() for p in teacher.parameters()) > sum(p.numel() for p in student.parameters())
    before = [p.detach().clone() for p in teacher.parameters()]
    train(student, method, tiny_images(), TrainSettings(steps=2, batch_size=16), num_classes=CLASSES, device=CPU)
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    fallback = build_method("bd_kd")
    fallback.prepare_model(net(), context(teacher_model=None, build=build))
    assert built[-1] is None  # no declared teacher: the student's architecture


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


# ---------------------------------------------------------------- ghost_bn update-matched regime


def test_ghost_bn_without_large_batch_keeps_the_engine_settings() -> None:
    settings = TrainSettings(batch_size=256, epochs=2.0, lr=0.05)
    assert build_method("ghost_bn").adjust_settings(settings, samples(10_000)) is settings


def test_ghost_bn_update_matched_regime_settings() -> None:
    settings = TrainSettings(batch_size=256, epochs=2.0, lr=0.05)
    assert settings.total_steps(10_000) == 78  # 39 full batches of 256 per epoch, two epochs
    adjusted = build_method("ghost_bn", {"large_batch": 1024}).adjust_settings(settings, samples(10_000))
    assert (adjusted.batch_size, adjusted.steps, adjusted.epochs) == (1024, 78, None)
    assert adjusted.lr == pytest.approx(0.1)  # 0.05 * sqrt(1024 / 256)
    assert adjusted.total_steps(10_000) == 78  # as many updates as B_S: about 8 epochs at B_L
    by_steps = build_method("ghost_bn", {"large_batch": 512}).adjust_settings(
        TrainSettings(batch_size=128, epochs=None, steps=50, lr=0.1), samples(10_000))
    assert (by_steps.batch_size, by_steps.steps) == (512, 50) and by_steps.lr == pytest.approx(0.2)
    with pytest.raises(ValueError, match="at least"):
        build_method("ghost_bn", {"large_batch": 128}).adjust_settings(settings, samples(10_000))
    with pytest.raises(ValueError, match="exceeds"):
        build_method("ghost_bn", {"large_batch": 20_000}).adjust_settings(settings, samples(10_000))


def test_ghost_bn_update_matched_regime_runs_through_the_engine() -> None:
    method = build_method("ghost_bn", {"large_batch": 32, "ghost_batch_size": 8})
    model = method.prepare_model(net(), context())
    assert any(isinstance(m, GhostBatchNorm2d) for m in model.modules())
    settings = method.adjust_settings(TrainSettings(batch_size=16, epochs=1.0), context())
    stats = train(model, method, tiny_images(64), settings, num_classes=CLASSES, device=CPU)
    assert (stats.steps, stats.samples_seen) == (4, 4 * 32)  # B_S's 4 updates, each on B_L = 32 images


def test_bd_kd_distillation_weights_ramp_up_from_zero() -> None:
    """At step 0 the loss is the two cross-entropies alone; from ramp_fraction on, the full mixture."""
    student_logits, teacher_logits = [[LN3, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, LN3]]
    online_teacher = FixedLogits(teacher_logits)
    method = build_method("bd_kd", {"temperature": 1.0, "alpha": 0.5, "beta": 0.5, "ramp_fraction": 0.5})
    student = method.prepare_model(FixedLogits(student_logits), context(build=lambda name=None: online_teacher))
    labels = torch.tensor([0, 1])
    s, t = torch.tensor(student_logits), torch.tensor(teacher_logits)
    plain = F.cross_entropy(s, labels) + F.cross_entropy(t, labels)
    images = torch.zeros(2, 1, 2, 2)
    start = method.training_loss(student, images, labels, TrainContext(**{**context().__dict__, "step": 0,
                                                                          "total_steps": 10}))
    assert start.loss.item() == pytest.approx(plain.item(), rel=1e-6)
    halfway = method.training_loss(student, images, labels, TrainContext(**{**context().__dict__, "step": 5,
                                                                            "total_steps": 10}))
    assert halfway.loss.item() != pytest.approx(plain.item(), rel=1e-3)
