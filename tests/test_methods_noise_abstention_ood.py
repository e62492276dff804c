"""Mechanism tests of the label-noise, abstention and OOD-detection methods (p_diff, gambler, bos):
the probability difference and its dropped fraction, the abstain head and the gamblers' loss, the boundary
samples on the MSP level set, each against values worked out by hand. CPU, no Ray."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.data.sources import UNLABELLED
from harness.method import build_method
from methods._common import gambler_loss
from methods.bos import boundary_samples, confidence_loss, uniform_kl
from methods.p_diff import probability_difference
from tests.fixed_models import FixedLogits
from tests.method_fixtures import blank_images as images
from tests.method_fixtures import classes_context as context
from tests.method_fixtures import constant_logits_model, step_context, tiny

CPU = torch.device("cpu")
LN2, LN3 = math.log(2.0), math.log(3.0)


CLASSES = 10


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


# ---------------------------------------------------------------- bos


def test_boundary_samples_reach_the_msp_level_set() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).train()
    with torch.no_grad():
        model[1].weight.mul_(10.0)
    start = 0.5 + 0.05 * torch.randn(5, 1, 4, 4)
    target_msp = 0.5
    assert (confidence_loss(model(start)) < -math.log(target_msp)).all()  # they start more confident

    samples = boundary_samples(model, start, -math.log(target_msp), steps=20)

    msp = model(samples).softmax(1).max(1).values
    assert torch.allclose(msp, torch.full_like(msp, target_msp), atol=1e-4)
    assert ((samples > 0) & (samples < 1)).all()  # reached by the search, not by the [0, 1] clipping
    assert model.training and all(p.grad is None for p in model.parameters())
    assert (model(start).softmax(1).max(1).values < 0.999).all()
    assert torch.equal(boundary_samples(model, start, -math.log(0.999), steps=5), start)  # never raises confidence


def test_bos_loss_is_cross_entropy_plus_weighted_uniform_kl() -> None:
    # KL(U || p) for p = (1/4, 3/4): mean(-log p) - log 2 = log(4/3) / 2
    assert torch.allclose(uniform_kl(torch.tensor([[0.0, math.log(3.0)]])), torch.tensor(0.5 * math.log(4 / 3)))
    model = constant_logits_model([0.0] * CLASSES)  # uniform everywhere: CE = log K, the boundary term is 0
    images, labels = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, UNLABELLED])
    out = build_method("bos", {"ood_weight": 2.0}).training_loss(model, images, labels, step_context())
    assert torch.allclose(out.loss, torch.tensor(math.log(CLASSES)), atol=1e-6)
    assert float(out.parts["boundary_kl"]) == pytest.approx(0.0, abs=1e-6)
    assert out.logits is not None and tuple(out.logits.shape) == (4, CLASSES)
