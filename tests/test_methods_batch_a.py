"""Mechanism tests of the batch-A methods (nkd, uskd, pld, gambler, gambler_kd, trades, xat, p_diff): each
loss against a value worked out by hand on tiny tensors, plus the structural promises (the abstain head,
the vanishing TRADES term, the multiplicative box). The registry-wide contracts are in test_contracts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.method import TrainContext, build_method
from harness.models import build_model
from methods._common import gambler_loss
from methods.gambler_kd import knowledge_adjustment
from methods.nkd import nkd_terms
from methods.p_diff import probability_difference
from methods.pld import plackett_luce_loss, teacher_optimal_order
from methods.trades import kl_attack, kl_divergence, trades_objective
from methods.uskd import WithWeakClassifier, intermediate_tap, soft_target_weights, zipf_non_target_labels
from methods.xat import multiplicative_attack
from tests.fixed_models import FixedLogits

CPU = torch.device("cpu")
LN2, LN3 = math.log(2.0), math.log(3.0)



def frozen(logits: list[list[float]]) -> nn.Module:
    teacher = FixedLogits(logits).eval()
    teacher.logits.requires_grad_(False)
    return teacher


def context(num_classes: int, teacher: nn.Module | None = None, step: int = 0,
            total_steps: int = 1) -> TrainContext:
    return TrainContext(step=step, total_steps=total_steps, epoch=0, num_classes=num_classes, device=CPU,
                        teacher=teacher)


def images(n: int, channels: int = 1, size: int = 2) -> torch.Tensor:
    return torch.zeros(n, channels, size, size)


def tiny(channels: int = 1, classes: int = 10, size: int = 8, name: str = "fast_cnn") -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels=channels, num_classes=classes, image_size=size,
                       mean=(0.5,) * channels, std=(0.25,) * channels)


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


# ---------------------------------------------------------------- gambler


def test_gambler_head_gets_an_abstain_output_and_keeps_the_class_logits() -> None:
    model = tiny()
    batch = torch.rand(3, 1, 8, 8)
    before = model.eval()(batch)
    prepared = build_method("gambler").prepare_model(model, context(10)).eval()
    after = prepared(batch)
    assert tuple(after.shape) == (3, 11)
    assert torch.allclose(after[:, :10], before)
    assert "1.head.1.weight" in dict(prepared.named_parameters())


def test_gambler_loss_value_and_limits() -> None:
    labels = torch.tensor([1])
    # K = 3 plus abstain, uniform: p_y = p_abstain = 1/4, loss = -log(1/4 + 1/8)
    assert gambler_loss(torch.zeros(1, 4), labels, 2.0, 3).item() == pytest.approx(-math.log(3 / 8), rel=1e-6)
    all_in_abstention = torch.tensor([[0.0, 0.0, 0.0, 50.0]])
    assert gambler_loss(all_in_abstention, labels, 2.0, 3).item() == pytest.approx(LN2, abs=1e-6)  # log o
    all_on_the_label = torch.tensor([[0.0, 50.0, 0.0, 0.0]])
    assert gambler_loss(all_on_the_label, labels, 2.0, 3).item() == pytest.approx(0.0, abs=1e-6)
    assert gambler_loss(torch.zeros(1, 3), labels, 2.0, 3).item() == pytest.approx(LN3, rel=1e-6)  # no abstain: CE


def test_gambler_pretrains_with_cross_entropy_then_bets() -> None:
    method = build_method("gambler", {"payoff": 2.0, "pretrain_fraction": 0.5})
    model, labels = FixedLogits([[0.0, 0.0, 0.0, 0.0]]), torch.tensor([1])
    early = method.training_loss(model, images(1), labels, context(3, step=0, total_steps=4))
    late = method.training_loss(model, images(1), labels, context(3, step=2, total_steps=4))
    assert early.loss.item() == pytest.approx(LN3, rel=1e-6)
    assert late.loss.item() == pytest.approx(-math.log(3 / 8), rel=1e-6)


def test_gambler_refuses_a_payoff_above_the_number_of_classes() -> None:
    with pytest.raises(ValueError, match="payoff"):
        build_method("gambler", {"payoff": 4.0}).prepare_model(tiny(classes=3), context(3))


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
                                                                                          context(10))
    assert out.loss.item() == pytest.approx(F.cross_entropy(model(batch), labels).item(), rel=1e-4)
    assert out.parts["clean"].item() == pytest.approx(out.parts["perturbed"].item(), rel=1e-4)


# ---------------------------------------------------------------- p_diff


def test_probability_difference() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    assert torch.allclose(probability_difference(probs, torch.tensor([1, 0])), torch.tensor([-0.2, 0.2]))


P_DIFF_LOGITS = [[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]  # labels all 0


def p_diff_loss(overrides: dict, step: int, total_steps: int = 10) -> tuple[float, torch.Tensor]:
    model = FixedLogits(P_DIFF_LOGITS)
    ce = F.cross_entropy(model.logits, torch.zeros(4, dtype=torch.long), reduction="none")
    method = build_method("p_diff", {"window_batches": 1, "ramp_fraction": 0.1, **overrides})
    labels = torch.zeros(4, dtype=torch.long)
    out = method.training_loss(model, images(4), labels, context(3, None, step, total_steps))
    return out.loss.item(), ce


def test_p_diff_drops_the_known_noise_rate_with_the_lowest_difference() -> None:
    loss, ce = p_diff_loss({"noise_rate": 0.5}, step=5)
    assert loss == pytest.approx((ce[0] + ce[1]).item() / 4, rel=1e-6)  # the two negative deltas are dropped
    loss, ce = p_diff_loss({"noise_rate": 0.5}, step=0, total_steps=20)  # progress 0: nothing dropped yet
    assert loss == pytest.approx(ce.mean().item(), rel=1e-6)


def test_p_diff_estimates_the_rate_from_the_negative_differences() -> None:
    loss, ce = p_diff_loss({}, step=5)  # after the ramp: the share of delta < 0 is 1/2
    assert loss == pytest.approx((ce[0] + ce[1]).item() / 4, rel=1e-6)


def test_p_diff_is_cross_entropy_until_the_window_is_full() -> None:
    loss, ce = p_diff_loss({"noise_rate": 0.5, "window_batches": 2}, step=5)
    assert loss == pytest.approx(ce.mean().item(), rel=1e-6)
