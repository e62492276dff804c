"""Mechanism tests of the regularisation and training-loop methods (multi_sample_dropout,
max_dropout, norm_loss, perlin_init, hard_batch, mltp): each against an answer worked out by hand on tiny
tensors (the dropout masks, the norm penalty, the Perlin lattice, the hardest batch, the closed-form
look-ahead gradient), plus the side effects they promise to avoid. CPU, no Ray."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.data.sources import UNLABELLED
from harness.method import build_method
from methods._layers import (
    swap_activations,
)
from methods.hard_batch import batch_losses
from methods.max_dropout import MaxDropout
from methods.multi_sample_dropout import MultiSampleDropoutLinear
from methods.norm_loss import norm_penalty
from methods.perlin_init import input_shape, perlin_batch, perlin_noise
from tests.method_fixtures import (
    assert_maps_images_to_logits,
    constant_logits_model,
    model,
    prepared,
    step_context,
    tiny_cnn,
)
from tests.method_fixtures import seeded_context as context

CPU = torch.device("cpu")
CLASSES = 10


def norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


# ---------------------------------------------------------------- multi-sample dropout


def test_multi_sample_dropout_stacks_independent_masks_on_the_batch() -> None:
    layer = nn.Linear(50, 50, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(50))
    head = MultiSampleDropoutLinear(layer, samples=4, rate=0.5).train()
    torch.manual_seed(0)
    out = head(torch.ones(3, 50))
    assert tuple(out.shape) == (12, 50)
    assert set(out.unique().tolist()) <= {0.0, 2.0}  # identity weight: each entry is mask / (1 - rate)
    blocks = out.view(4, 3, 50)
    assert all(not torch.equal(blocks[0], blocks[s]) for s in range(1, 4))
    assert 0.35 < float((out == 0).float().mean()) < 0.65
    head.eval()
    assert torch.equal(head(torch.ones(3, 50)), torch.ones(3, 50))


def test_multi_sample_dropout_loss_is_the_mean_of_the_sample_losses() -> None:
    method = build_method("multi_sample_dropout", {"samples": 3, "rate": 0.4})
    net = method.prepare_model(nn.Sequential(nn.Linear(5, 4)), context()).train()
    features, labels = torch.randn(8, 5), torch.arange(8) % 4
    torch.manual_seed(3)
    loss = method.training_loss(net, features, labels, context()).loss
    torch.manual_seed(3)
    logits = net(features).view(3, 8, 4)
    expected = torch.stack([F.cross_entropy(logits[s], labels) for s in range(3)]).mean()
    assert torch.allclose(loss, expected)
    assert not torch.allclose(F.cross_entropy(logits[0], labels), expected)


def test_multi_sample_dropout_keeps_the_classifier_and_is_plain_at_test_time() -> None:
    original, net = prepared("multi_sample_dropout")
    assert isinstance(net[1].head[1], MultiSampleDropoutLinear)
    assert net.state_dict().keys() == original.state_dict().keys()
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(net.eval()(images), original.eval()(images))
    assert tuple(net.train()(images).shape) == (5 * 8, CLASSES)  # 8 samples stacked on the batch
    assert_maps_images_to_logits(net)


# ---------------------------------------------------------------- MaxDropout


def test_max_dropout_zeroes_exactly_the_top_of_the_range() -> None:
    values = torch.arange(10.0).view(1, 10, 1, 1)  # normalised: v / 9; above 1 - 0.3 means v >= 7
    out = MaxDropout(0.3).train()(values)
    assert out.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0]
    rescaled = MaxDropout(0.3).train()(3.0 * values + 1.0)  # min-max normalised: the same units drop
    assert (rescaled == 0).flatten().tolist() == [False] * 7 + [True] * 3
    assert torch.equal(MaxDropout(0.3).eval()(values), values)
    assert torch.equal(MaxDropout(0.0).train()(values), values)


def test_max_dropout_blocks_the_gradient_of_dropped_units_only() -> None:
    values = torch.arange(10.0, requires_grad=True)
    MaxDropout(0.5).train()(values).sum().backward()
    assert values.grad.tolist() == [1.0] * 5 + [0.0] * 5  # v / 9 > 0.5 drops 5..9


@pytest.mark.parametrize(("name", "channels", "size", "relus"), [("fast_cnn", 1, 8, 2), ("resnet20", 3, 32, 19)])
def test_max_dropout_follows_every_relu_and_is_the_identity_at_test_time(
        name: str, channels: int, size: int, relus: int) -> None:
    original, net = prepared("max_dropout", name, channels, size)
    assert sum(isinstance(m, MaxDropout) for m in net.modules()) == relus
    images = torch.rand(4, channels, size, size)
    with torch.no_grad():
        assert torch.allclose(net.eval()(images), original.eval()(images), atol=1e-6)
    assert_maps_images_to_logits(net, channels, size)


def test_swap_activations_refuses_a_relu_it_cannot_place() -> None:
    with pytest.raises(ValueError, match="ReLU"):
        swap_activations(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), lambda channels: nn.Identity())


# ---------------------------------------------------------------- norm loss


def test_norm_penalty_equals_the_hand_computed_value() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))  # ||w||^2 = 1, 4 -> (0 + 9) / 2
        net[2].weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))  # 25, 0 -> (576 + 1) / 2
    assert float(norm_penalty(net).detach()) == pytest.approx(4.5 + 288.5)
    method = build_method("norm_loss", {"weight": 0.01})
    images, labels = torch.rand(4, 1, 1, 1), torch.tensor([0, 1, 1, 0])
    out = method.training_loss(net, images, labels, context())
    expected = float(F.cross_entropy(net(images), labels).detach()) + 0.01 * 293.0
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert float(out.parts["norm"]) == pytest.approx(293.0)


def test_norm_penalty_pulls_weight_vectors_toward_unit_norm() -> None:
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.1, 0.1, 0.0]]))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        norm_penalty(layer).backward()
        optimizer.step()
    assert torch.allclose(layer.weight.norm(dim=1), torch.ones(2), atol=0.02)


# ---------------------------------------------------------------- Perlin-noise initialisation


def test_perlin_noise_vanishes_on_the_lattice_and_coarsens_with_low_frequency() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = perlin_noise(torch.full((4,), 4.0), 2, 8, generator, random_phase=False)
    assert float(noise[..., ::2, ::2].abs().max()) == 0.0  # pixel 2k sits on lattice point k
    assert float(noise.abs().max()) > 0.05

    def neighbour_correlation(images: torch.Tensor) -> float:
        centred = images - images.mean(dim=(2, 3), keepdim=True)
        return float((centred[..., 1:] * centred[..., :-1]).mean() / centred.pow(2).mean())

    images, labels = perlin_batch(512, (1, 16, 16), 4, generator)
    assert images.amin(dim=(1, 2, 3)).eq(0).all() and images.amax(dim=(1, 2, 3)).eq(1).all()
    correlation = [neighbour_correlation(images[labels == c]) for c in range(4)]
    assert correlation == sorted(correlation, reverse=True)  # more complex class, less correlated pixels
    assert correlation[0] > 0.9 and correlation[-1] < 0.6


def test_perlin_init_infers_the_input_shape() -> None:
    assert input_shape(model("fast_cnn", 1, 8), context()) == (1, 8, 8)
    assert input_shape(model("fast_cnn", 1, 28), context()) == (1, 28, 28)
    assert input_shape(model("fast_cnn", 1, 8), dataclasses.replace(context(), input_shape=(1, 16, 16))) == (1, 16, 16)


def filter_neighbour_correlation(weight: torch.Tensor) -> float:
    """Mean correlation of horizontally and vertically adjacent taps of 3x3 filters."""
    taps = weight.flatten(0, 1)
    taps = taps - taps.mean(dim=(1, 2), keepdim=True)
    pairs = [(taps[:, :, :-1], taps[:, :, 1:]), (taps[:, :-1, :], taps[:, 1:, :])]
    return float(sum((a * b).sum() for a, b in pairs) / sum(a.numel() for a, _ in pairs) / taps.pow(2).mean())


def test_perlin_init_is_seeded_and_reshapes_the_first_filters() -> None:
    config = {"steps": 100, "batch_size": 32}
    original = model("fast_cnn", 1, 8)
    first = build_method("perlin_init", config).prepare_model(copy.deepcopy(original), context(seed=0))
    again = build_method("perlin_init", config).prepare_model(copy.deepcopy(original), context(seed=0))
    other = build_method("perlin_init", config).prepare_model(copy.deepcopy(original), context(seed=1))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    stem = "1.features.0.0.weight"
    assert not torch.equal(first.state_dict()[stem], other.state_dict()[stem])
    assert not torch.equal(first.state_dict()[stem], original.state_dict()[stem])
    # the classifier and the BatchNorm statistics are the untouched ones; only the features were pre-trained
    assert torch.equal(first.state_dict()["1.head.1.weight"], original.state_dict()["1.head.1.weight"])
    assert torch.equal(first.state_dict()["1.features.0.1.running_mean"], torch.zeros(16))
    # noise-frequency classes are told apart by derivative-like first filters: adjacent taps anti-correlate
    before = filter_neighbour_correlation(original.state_dict()[stem])
    after = filter_neighbour_correlation(first.state_dict()[stem])
    assert after < before - 0.1
    assert_maps_images_to_logits(first)


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
    assert method.candidate_batches(step_context()) == 3
    assert method.select_batch(model, [easy, mixed, hard], step_context()) is hard
    assert method.select_batch(model, [easy], step_context()) is easy


def test_hard_batch_scoring_leaves_batchnorm_statistics_and_mode_alone() -> None:
    model = tiny_cnn().train()
    before = norm_buffers(model)
    generator = torch.Generator().manual_seed(1)
    candidates = [(torch.rand(6, 1, 8, 8, generator=generator), torch.arange(6) % CLASSES) for _ in range(3)]

    chosen = build_method("hard_batch", {"delta": 3}).select_batch(model, candidates, step_context())

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

    current = method.select_batch(model, [(x[:4], y[:4]), (x[4:], y[4:])], step_context())
    assert torch.equal(current[0], x[:4]) and torch.equal(current[1], y[:4])  # the second is the new task
    method.training_loss(model, *current, step_context()).loss.backward()

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

    out = build_method("mltp").training_loss(model, images, labels, step_context())
    with torch.no_grad():
        reference(images[:6])

    assert set(out.parts) == {"current", "look_ahead"}
    expected, got = norm_buffers(reference), norm_buffers(model)
    assert all(torch.allclose(expected[k], got[k]) for k in expected)
