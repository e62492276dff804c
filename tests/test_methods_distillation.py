"""Mechanism tests of the distillation methods (nkd, uskd, pld, gambler_kd, bd_kd): each loss
against a value worked out by hand on tiny tensors, plus the structural promises (the weak classifier's
tap, the online teacher the engine trains). CPU, no Ray; the registry-wide contracts are in test_contracts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.engine import TrainSettings, train
from harness.method import TrainContext, build_method
from methods.bd_kd import balanced_divergence, kl_per_sample
from methods.gambler_kd import knowledge_adjustment
from methods.nkd import nkd_terms
from methods.pld import plackett_luce_loss, teacher_optimal_order
from methods.uskd import WithWeakClassifier, intermediate_tap, soft_target_weights, zipf_non_target_labels
from tests.fixed_models import FixedLogits
from tests.method_fixtures import blank_images as images
from tests.method_fixtures import classes_context as context
from tests.method_fixtures import net, teacher_context, tiny, tiny_images

CPU = torch.device("cpu")


def frozen(logits: list[list[float]]) -> nn.Module:
    teacher = FixedLogits(logits).eval()
    teacher.logits.requires_grad_(False)
    return teacher


CLASSES = 10
LN2, LN3, LN_1_5 = math.log(2.0), math.log(3.0), math.log(1.5)


# ---------------------------------------------------------------- nkd


def test_nkd_loss_on_uniform_logits_is_ce_plus_target_plus_scaled_non_target() -> None:
    teacher = frozen([[0.0, 0.0, 0.0]])
    for temperature in (1.0, 2.0):
        method = build_method("nkd", {"temperature": temperature, "gamma": 1.5})
        student = FixedLogits([[0.0, 0.0, 0.0]])
        out = method.training_loss(student, images(1), torch.tensor([0]), context(3, teacher))
        # CE = ln 3; target = T_t * ln 3 = ln 3 / 3; normalised non-target of the student is (1/2, 1/2): ln 2
        expected = LN3 + LN3 / 3 + 1.5 * temperature**2 * LN2
        assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_nkd_normalises_the_non_target_distributions() -> None:
    student = torch.tensor([[0.0, 0.0, math.log(3.0)]])  # softmax (1/5, 1/5, 3/5); non-target (1/4, 3/4)
    teacher = torch.zeros(1, 3)  # T_t = 1/3; normalised non-target (1/2, 1/2)
    target, non_target = nkd_terms(student, teacher, torch.tensor([0]), temperature=1.0)
    assert target.item() == pytest.approx(math.log(5.0) / 3, rel=1e-6)
    assert non_target.item() == pytest.approx(0.5 * math.log(4.0) + 0.5 * math.log(4.0 / 3.0), rel=1e-6)


# ---------------------------------------------------------------- uskd


def test_uskd_zipf_labels_rank_the_non_target_classes() -> None:
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3]])  # label 0 ranks first; then classes 2, 3, 1
    labels = zipf_non_target_labels(scores, torch.tensor([0]))
    # weights 1/4, 1/2, 1/3 for classes 1, 2, 3, normalised by 13/12
    assert torch.allclose(labels, torch.tensor([[3 / 13, 6 / 13, 4 / 13]]))


def test_uskd_soft_target_is_the_squared_probability_recentred_on_one() -> None:
    weights = soft_target_weights(torch.tensor([[0.5], [0.1]]))
    assert torch.allclose(weights, torch.tensor([[1.12], [0.88]]))


def test_uskd_loss_without_weak_classifier() -> None:
    out = build_method("uskd").training_loss(FixedLogits([[0.0, 0.0, 0.0]]), images(1), torch.tensor([0]),
                                             context(3))
    # CE ln 3; p_t = 1 so the target term is ln 3 (alpha 1); tied non-targets get Zipf (3/5, 2/5) against
    # a uniform (1/2, 1/2) student: ln 2 (beta 0.1)
    assert out.loss.item() == pytest.approx(2 * LN3 + 0.1 * LN2, rel=1e-6)


def test_uskd_taps_the_stage_before_the_last_width() -> None:
    assert intermediate_tap(tiny()) == ("1.features.1", 16)
    assert intermediate_tap(tiny(channels=3, size=32, name="resnet20")) == ("1.stages.5", 32)


def test_uskd_weak_classifier_runs_in_training_only_and_leaves_the_logits_alone() -> None:
    model = tiny()
    batch = torch.rand(4, 1, 8, 8)
    reference = model.eval()(batch)
    wrapped = build_method("uskd").prepare_model(model, context(10))
    assert isinstance(wrapped, WithWeakClassifier)
    assert torch.equal(wrapped.eval()(batch), reference)
    assert wrapped.weak_logits is None
    wrapped.train()(batch)
    assert tuple(wrapped.weak_logits.shape) == (4, 10)
    out = build_method("uskd").training_loss(wrapped, batch, torch.arange(4), context(10))
    assert "weak" in out.parts and wrapped.weak_logits is None


# ---------------------------------------------------------------- pld


def test_pld_orders_the_label_first_then_by_teacher() -> None:
    order = teacher_optimal_order(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), torch.tensor([2]))
    assert order.tolist() == [[2, 1, 0, 3]]


def test_pld_loss_by_hand() -> None:
    teacher = frozen([[0.0, LN2, 0.0]])  # softmax (1/4, 1/2, 1/4); ranking 0 (label), 1, 2
    out = build_method("pld").training_loss(FixedLogits([[0.0, 0.0, 0.0]]), images(1), torch.tensor([0]),
                                            context(3, teacher))
    # 1/4 * (log 3 - 0) + 1/2 * (log 2 - 0) + 1/4 * (log 1 - 0)
    assert out.loss.item() == pytest.approx(LN3 / 4 + LN2 / 2, rel=1e-6)


def test_pld_with_all_weight_on_the_first_choice_is_cross_entropy_and_translation_invariant() -> None:
    torch.manual_seed(0)
    student, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])
    order = teacher_optimal_order(torch.randn(5, 4), labels)
    first_only = torch.zeros(5, 4).index_fill_(1, torch.tensor([0]), 1.0)
    assert plackett_luce_loss(student, order, first_only).item() == pytest.approx(
        F.cross_entropy(student, labels).item(), rel=1e-6)
    weights = torch.rand(5, 4)
    assert plackett_luce_loss(student + 7.0, order, weights).item() == pytest.approx(
        plackett_luce_loss(student, order, weights).item(), rel=1e-5)


# ---------------------------------------------------------------- gambler_kd


def test_knowledge_adjustment_swaps_a_wrong_top_class_with_the_label() -> None:
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    adjusted = knowledge_adjustment(probs, torch.tensor([1, 0]))
    assert torch.equal(adjusted, torch.tensor([[0.3, 0.6, 0.1], [0.6, 0.3, 0.1]]))


def test_gambler_kd_loss_by_hand() -> None:
    teacher = frozen([[math.log(0.6), math.log(0.3), math.log(0.1)]])  # adjusted for label 1: (0.3, 0.6, 0.1)
    student = FixedLogits([[LN2, 0.0, 0.0, 0.0]])  # p = (2/5, 1/5, 1/5), abstain 1/5; o = 2 adds 1/10
    method = build_method("gambler_kd", {"payoff": 2.0, "pretrain_fraction": 0.0})
    out = method.training_loss(student, images(1), torch.tensor([1]), context(3, teacher))
    assert out.loss.item() == pytest.approx(-(0.3 * math.log(0.5) + 0.7 * math.log(0.3)), rel=1e-5)


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
    student = method.prepare_model(FixedLogits(student_logits), teacher_context(build=lambda name=None: online_teacher))
    assert list(method.auxiliary_modules(teacher_context())) == [online_teacher]
    labels = torch.tensor([0, 1])
    out = method.training_loss(student, torch.zeros(2, 1, 2, 2), labels, teacher_context())
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

    student = method.prepare_model(net(), teacher_context(teacher_model="fast_cnn_wide", build=build))
    (teacher,) = method.auxiliary_modules(teacher_context())
    assert built == ["fast_cnn_wide"]
    assert sum(p.numel() for p in teacher.parameters()) > sum(p.numel() for p in student.parameters())
    before = [p.detach().clone() for p in teacher.parameters()]
    train(student, method, tiny_images(), TrainSettings(steps=2, batch_size=16), num_classes=CLASSES, device=CPU)
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    fallback = build_method("bd_kd")
    fallback.prepare_model(net(), teacher_context(teacher_model=None, build=build))
    assert built[-1] is None  # no declared teacher: the student's architecture


def test_bd_kd_distillation_weights_ramp_up_from_zero() -> None:
    """At step 0 the loss is the two cross-entropies alone; from ramp_fraction on, the full mixture."""
    student_logits, teacher_logits = [[LN3, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, LN3]]
    online_teacher = FixedLogits(teacher_logits)
    method = build_method("bd_kd", {"temperature": 1.0, "alpha": 0.5, "beta": 0.5, "ramp_fraction": 0.5})
    student = method.prepare_model(FixedLogits(student_logits), teacher_context(build=lambda name=None: online_teacher))
    labels = torch.tensor([0, 1])
    s, t = torch.tensor(student_logits), torch.tensor(teacher_logits)
    plain = F.cross_entropy(s, labels) + F.cross_entropy(t, labels)
    images = torch.zeros(2, 1, 2, 2)
    start = method.training_loss(student, images, labels, TrainContext(**{**teacher_context().__dict__, "step": 0,
                                                                          "total_steps": 10}))
    assert start.loss.item() == pytest.approx(plain.item(), rel=1e-6)
    halfway = method.training_loss(student, images, labels, TrainContext(**{**teacher_context().__dict__, "step": 5,
                                                                            "total_steps": 10}))
    assert halfway.loss.item() != pytest.approx(plain.item(), rel=1e-3)
