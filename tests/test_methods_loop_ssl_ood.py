"""Mechanism tests of the training-loop, OOD and semi-supervised methods of issue 6 (hard_batch, mltp, bos,
mean_teacher): each against an answer worked out by hand on tiny tensors (the hardest batch, the closed-form
look-ahead gradient of a linear softmax model, the MSP level set, the EMA formula, the local clustering
value), plus the side effects they promise to avoid. The registry-wide contracts are in test_contracts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.data import ImageArrays
from harness.data.sources import UNLABELLED
from harness.engine import TrainSettings, train
from harness.method import TrainContext, build_method
from harness.models import build_model
from methods._layers import forward_with_features
from methods.bos import boundary_samples, confidence_loss, uniform_kl
from methods.hard_batch import batch_losses
from methods.mean_teacher import ema_update, local_clustering_loss, sigmoid_rampup

CPU = torch.device("cpu")
CLASSES = 10


def context(step: int = 0, total_steps: int = 10) -> TrainContext:
    return TrainContext(step=step, total_steps=total_steps, epoch=0, num_classes=CLASSES, device=CPU,
                        generator=torch.Generator().manual_seed(0))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("fast_cnn", in_channels=1, num_classes=CLASSES, image_size=8, mean=(0.5,), std=(0.25,))


def constant_logits_model(bias: list[float]) -> nn.Module:
    """Logits equal to `bias` for every image (zero weights)."""
    linear = nn.Linear(4, len(bias))
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(bias))
    return nn.Sequential(nn.Flatten(), linear)


def norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


# ---------------------------------------------------------------- hard_batch


def test_hard_batch_trains_on_the_highest_loss_candidate() -> None:
    model = constant_logits_model([2.0, 0.0, 0.0]).train()  # CE = log(e^2 + 2) - z_label
    images = torch.zeros(4, 1, 2, 2)
    easy = (images, torch.zeros(4, dtype=torch.long))                # every label is the top class
    hard = (images, torch.ones(4, dtype=torch.long))                 # every label is a bottom class
    mixed = (images, torch.tensor([0, 1, UNLABELLED, UNLABELLED]))   # unlabelled images do not count
    log_z = math.log(math.exp(2.0) + 2.0)

    losses = batch_losses(model, [easy, hard, mixed])

    assert torch.allclose(losses, torch.tensor([log_z - 2.0, log_z, log_z - 1.0]), atol=1e-6)
    method = build_method("hard_batch", {"delta": 3})
    assert method.candidate_batches(context()) == 3
    assert method.select_batch(model, [easy, mixed, hard], context()) is hard
    assert method.select_batch(model, [easy], context()) is easy


def test_hard_batch_scoring_leaves_batchnorm_statistics_and_mode_alone() -> None:
    model = tiny_cnn().train()
    before = norm_buffers(model)
    generator = torch.Generator().manual_seed(1)
    candidates = [(torch.rand(6, 1, 8, 8, generator=generator), torch.arange(6) % CLASSES) for _ in range(3)]

    chosen = build_method("hard_batch", {"delta": 3}).select_batch(model, candidates, context())

    after = norm_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    with torch.no_grad(), torch.random.fork_rng():
        scores = [F.cross_entropy(copy.deepcopy(model)(x), y) for x, y in candidates]
    assert chosen is candidates[int(torch.stack(scores).argmax())]


# ---------------------------------------------------------------- mltp


def softmax_gradient(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/dW of the mean cross-entropy of softmax(x W^T): (P - Y)^T x / B."""
    p = (x @ weight.T).softmax(1)
    return (p - F.one_hot(y, weight.shape[0]).to(p.dtype)).T @ x / x.shape[0]


def softmax_hessian_times(weight: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """H V for the Hessian of the mean cross-entropy in W: (1/B) sum_n (diag p_n - p_n p_n^T) V x_n x_n^T."""
    p = (x @ weight.T).softmax(1)
    vx = x @ v.T                                              # [B, K]: (V x_n)
    jvp = p * vx - p * (p * vx).sum(1, keepdim=True)          # (diag p_n - p_n p_n^T) V x_n
    return jvp.T @ x / x.shape[0]


@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_mltp_look_ahead_gradient_matches_the_closed_form(first_order: bool) -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3, bias=False)
    x = torch.randn(8, 5)
    y = torch.tensor([0, 1, 2, 0, 2, 1, 1, 0])
    alpha, beta = 0.7, 0.5
    method = build_method("mltp", {"inner_lr": alpha, "meta_weight": beta, "first_order": first_order})

    current = method.select_batch(model, [(x[:4], y[:4]), (x[4:], y[4:])], context())
    assert torch.equal(current[0], x[:4]) and torch.equal(current[1], y[:4])  # the second is the new task
    method.training_loss(model, *current, context()).loss.backward()

    w = model.weight.detach()
    g_current = softmax_gradient(w, x[:4], y[:4])
    stepped = w - alpha * g_current
    g_new = softmax_gradient(stepped, x[4:], y[4:])
    through_step = g_new if first_order else g_new - alpha * softmax_hessian_times(w, x[:4], g_new)
    assert torch.allclose(model.weight.grad, (g_current + beta * through_step) / (1 + beta), atol=1e-6)
    if not first_order:  # the second-order term is not negligible here, so the test tells the two apart
        assert not torch.allclose(g_new, through_step, atol=1e-3)


def test_mltp_virtual_step_updates_batchnorm_statistics_once_with_the_current_batch() -> None:
    model = tiny_cnn().train()
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(2)
    images, labels = torch.rand(12, 1, 8, 8, generator=generator), torch.arange(12) % CLASSES

    out = build_method("mltp").training_loss(model, images, labels, context())
    with torch.no_grad():
        reference(images[:6])

    assert set(out.parts) == {"current", "look_ahead"}
    expected, got = norm_buffers(reference), norm_buffers(model)
    assert all(torch.allclose(expected[k], got[k]) for k in expected)


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
    out = build_method("bos", {"ood_weight": 2.0}).training_loss(model, images, labels, context())
    assert torch.allclose(out.loss, torch.tensor(math.log(CLASSES)), atol=1e-6)
    assert float(out.parts["boundary_kl"]) == pytest.approx(0.0, abs=1e-6)
    assert out.logits is not None and tuple(out.logits.shape) == (4, CLASSES)


# ---------------------------------------------------------------- mean_teacher


def test_ema_update_and_its_warm_up() -> None:
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(1.0)
        for p in student.parameters():
            p.fill_(3.0)
    ema_update(teacher, student, 0.9)
    assert all(torch.allclose(p, torch.full_like(p, 0.9 * 1.0 + 0.1 * 3.0)) for p in teacher.parameters())
    method = build_method("mean_teacher", {"ema_decay": 0.99})
    assert method.ema_decay_at(0) == pytest.approx(0.5)        # the first step averages teacher and student
    assert method.ema_decay_at(2) == pytest.approx(0.75)
    assert method.ema_decay_at(10_000) == pytest.approx(0.99)


def test_local_clustering_loss_on_a_tiny_example() -> None:
    # mean squared distances: labelled-unlabelled (1, 4), unlabelled-unlabelled (0, 1, 1, 0); tau = 2 keeps
    # all but the 4; each pair set: sum d exp(-d / tau) over kept pairs / number of kept pairs
    labelled = torch.tensor([[0.0, 0.0]])
    unlabelled = torch.tensor([[1.0, 1.0], [2.0, 2.0]], requires_grad=True)
    loss = local_clustering_loss(labelled, unlabelled, threshold=2.0)
    expected = math.exp(-0.5) / 1 + 2 * math.exp(-0.5) / 4
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert unlabelled.grad is not None and float(unlabelled.grad.abs().sum()) > 0
    assert float(local_clustering_loss(labelled, unlabelled[:0].detach(), 2.0)) == 0.0  # nothing unlabelled: no term


def test_sigmoid_rampup_follows_exp_minus_five_one_minus_t_squared() -> None:
    assert sigmoid_rampup(-0.1, 0.3) == 0.0
    assert sigmoid_rampup(0.0, 0.3) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(0.15, 0.3) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0.5, 0.3) == 1.0
    assert sigmoid_rampup(0.2, 0.0) == 1.0


def test_forward_with_features_catches_the_classifier_input() -> None:
    model = tiny_cnn().eval()
    images = torch.rand(3, 1, 8, 8)
    features, logits = forward_with_features(model, images)
    with torch.no_grad():
        expected = model[1].features(model[0](images)).flatten(1)
    assert torch.allclose(features, expected) and torch.allclose(logits, model(images))
    assert not model[1].head[1]._forward_hooks  # the hook is gone


def test_mean_teacher_trains_the_student_and_evaluates_the_ema_teacher() -> None:
    method = build_method("mean_teacher", {"lc_start": 0.0})
    model = method.prepare_model(tiny_cnn(), context())
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(32) % CLASSES
    labels[8:] = UNLABELLED
    data = ImageArrays(images, labels)

    train(model, method, data, TrainSettings(steps=3, batch_size=16), num_classes=CLASSES, device=CPU)
    final = method.finalize(model, data, context(step=3))

    teacher = method.teacher
    assert teacher is not None and final is not model
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), teacher.state_dict().values(),
                                                 strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(final.parameters(), model.parameters(), strict=True))
    fresh = build_method("mean_teacher")
    fresh.prepare_model(tiny_cnn(seed=5), context())
    fresh.load_state_dict(method.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.teacher.state_dict().values(),
                                                 teacher.state_dict().values(), strict=True))
    unlabelled_only = method.training_loss(model.train(), images[:4].float() / 255, torch.full((4,), UNLABELLED),
                                           context(step=5))
    assert float(unlabelled_only.parts["ce"]) == 0.0 and float(unlabelled_only.loss.detach()) > 0.0
