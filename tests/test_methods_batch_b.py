"""Mechanism tests for the methods that change the model (issue 6, batch B): each layer or loss is
checked against a known answer on small tensors, and each swap against the layer types it must
produce, the parameter names it must keep and the [B, C, H, W] -> [B, K] contract. CPU, no Ray."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.method import METHODS, TrainContext, build_method
from harness.models import build_model
from methods._layers import ResidualBlockWithActivations, output_layer, swap_activations
from methods.atac import ATACUnit
from methods.final_bn import BatchNormLinear
from methods.ghost_bn import GhostBatchNorm2d
from methods.max_dropout import MaxDropout
from methods.multi_sample_dropout import MultiSampleDropoutLinear
from methods.norm_loss import norm_penalty
from methods.perlin_init import input_shape, perlin_batch, perlin_noise
from methods.weight_align import ChannelAffine, WeightAlignConv2d
from methods.weighted_conv import WeightedConv2d, density_profile

CPU = torch.device("cpu")
CLASSES = 10


def context(seed: int = 0) -> TrainContext:
    return TrainContext(step=0, total_steps=2, epoch=0, num_classes=CLASSES, device=CPU,
                        generator=torch.Generator().manual_seed(seed), seed=seed)


def model(name: str = "fast_cnn", channels: int = 1, size: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, in_channels=channels, num_classes=CLASSES, image_size=size,
                       mean=(0.5,) * channels, std=(0.25,) * channels)


def prepared(method: str, name: str = "fast_cnn", channels: int = 1, size: int = 8,
             **config: object) -> tuple[nn.Module, nn.Module]:
    """(original, prepared copy) of a freshly built model."""
    original = model(name, channels, size)
    return original, build_method(method, config).prepare_model(copy.deepcopy(original), context())


def assert_maps_images_to_logits(net: nn.Module, channels: int = 1, size: int = 8) -> None:
    images = torch.rand(6, channels, size, size, generator=torch.Generator().manual_seed(1))
    net.train()
    net(images).float().sum().backward()
    net.eval()
    with torch.no_grad():
        first, second = net(images), net(images)
    assert tuple(first.shape) == (6, CLASSES)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)  # deterministic in eval mode


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


# ---------------------------------------------------------------- ATAC


def test_atac_unit_is_a_gate_of_the_pixel_own_channels() -> None:
    unit = ATACUnit(8, reduction=4)
    assert unit.attention[0].out_channels == 2
    nn.init.zeros_(unit.attention[4].weight)  # last BN scale 0: gate = sigmoid(0) = 1/2 everywhere
    x = torch.randn(4, 8, 5, 5)
    assert torch.allclose(unit.train()(x), 0.5 * x)
    nn.init.ones_(unit.attention[4].weight)
    unit.train()(x)  # give the running statistics something to hold
    unit.eval()
    changed = x.clone()
    changed[0, :, 2, 3] += 1.0
    with torch.no_grad():
        difference = (unit(changed) - unit(x)).abs().sum(dim=1)[0]
    assert float(difference[2, 3]) > 0
    difference[2, 3] = 0
    assert float(difference.sum()) == 0.0  # point-wise: no other pixel moved


@pytest.mark.parametrize(("name", "channels", "size", "units"), [("fast_cnn", 1, 8, 2), ("resnet20", 3, 32, 19)])
def test_atac_replaces_every_relu(name: str, channels: int, size: int, units: int) -> None:
    _, net = prepared("atac", name, channels, size)
    atac = [m for m in net.modules() if isinstance(m, ATACUnit)]
    assert len(atac) == units
    inner_relus = sum(isinstance(m, nn.ReLU) for unit in atac for m in unit.modules())
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == inner_relus  # none left outside ATAC units
    if name == "resnet20":
        blocks = [m for m in net.modules() if isinstance(m, ResidualBlockWithActivations)]
        assert len(blocks) == 9 and all(isinstance(b.act2, ATACUnit) for b in blocks)
    assert_maps_images_to_logits(net, channels, size)


# ---------------------------------------------------------------- weighted convolution


def test_weighted_convolution_scales_each_tap_by_its_position() -> None:
    assert torch.allclose(density_profile(3, 0.5), torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5],
                                                               [0.25, 0.5, 0.25]]))
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    response = WeightedConv2d(conv, 0.5)(impulse)[0, 0, 1:4, 1:4]
    assert torch.allclose(response, density_profile(3, 0.5))
    plain = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        x = torch.randn(2, 2, 6, 6)
        assert torch.allclose(WeightedConv2d(plain, 1.0)(x), plain(x), atol=1e-6)


def test_weighted_convolution_swaps_the_3x3_convolutions_only() -> None:
    original, net = prepared("weighted_conv", "resnet20", 3, 32, density=0.8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(c, WeightedConv2d) == (c.kernel_size == (3, 3)) for c in convs)
    assert sum(isinstance(c, WeightedConv2d) for c in convs) == 19
    assert {k for k in net.state_dict() if not k.endswith(".density")} == set(original.state_dict())
    assert_maps_images_to_logits(net, 3, 32)


# ---------------------------------------------------------------- WeightAlign


def test_weight_align_normalises_each_filter_by_its_own_statistics() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    aligned = WeightAlignConv2d(conv)
    weight = aligned.aligned_weight().flatten(1)
    fan_in = 3 * 3 * 3
    assert torch.allclose(weight.mean(dim=1), torch.zeros(4), atol=1e-6)
    assert torch.allclose(weight.var(dim=1, unbiased=False) * fan_in, torch.full((4,), 2.0), atol=1e-3)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        before = aligned(x)
        aligned.weight.mul_(7.0).add_(torch.arange(4.0).view(4, 1, 1, 1))  # per-filter scale and shift
        assert torch.allclose(aligned(x), before, rtol=1e-3, atol=1e-3)


def test_weight_align_without_batch_norm_is_batch_independent() -> None:
    original, net = prepared("weight_align", batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, ChannelAffine) for m in net.modules()) == 2
    assert sum(isinstance(m, WeightAlignConv2d) for m in net.modules()) == 2
    images = torch.rand(6, 1, 8, 8)
    net.train()
    assert torch.allclose(net(images)[:1], net(images[:1]), atol=1e-5)
    _, with_bn = prepared("weight_align")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 2
    assert_maps_images_to_logits(net)
    assert_maps_images_to_logits(with_bn)


# ---------------------------------------------------------------- ghost batch norm


def test_ghost_batch_norm_normalises_each_ghost_batch_separately() -> None:
    ghost = GhostBatchNorm2d(nn.BatchNorm2d(3), ghost_batch_size=16).train()
    offsets = torch.arange(4.0).repeat_interleave(16).view(64, 1, 1, 1) * 10.0
    x = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3.0 + offsets
    out = ghost(x)
    for chunk in out.view(4, 16, 3, 4, 4):
        assert torch.allclose(chunk.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
        assert torch.allclose(chunk.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    with torch.no_grad():  # plain BN does not: its first ghost batch stays far below zero
        assert float(nn.BatchNorm2d(3).train()(x).view(4, 16, 3, 4, 4)[0].mean()) < -1.0
    running = torch.zeros(3)
    for chunk in x.view(4, 16, 3, 4, 4):  # running mean updated once per ghost batch, in order
        running = 0.9 * running + 0.1 * chunk.mean(dim=(0, 2, 3))
    assert torch.allclose(ghost.running_mean, running, atol=1e-5)
    ghost.eval()
    reference = nn.BatchNorm2d(3).eval()
    reference.load_state_dict(ghost.state_dict())
    assert torch.equal(ghost(x), reference(x))


def test_ghost_batch_norm_splits_uneven_batches_and_leaves_small_ones_whole() -> None:
    ghost = GhostBatchNorm2d(nn.BatchNorm2d(2), ghost_batch_size=16).train()
    x = torch.randn(70, 2, 3, 3) + torch.arange(70.0).view(70, 1, 1, 1)
    out = ghost(x)
    for chunk in out.tensor_split(4):  # 70 // 16 = 4 ghost batches of 17 or 18
        assert torch.allclose(chunk.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-4)
    small = torch.randn(31, 2, 3, 3)
    plain = nn.BatchNorm2d(2).train()
    assert torch.allclose(GhostBatchNorm2d(nn.BatchNorm2d(2), 16).train()(small), plain(small), atol=1e-6)


def test_ghost_bn_swaps_every_batch_norm() -> None:
    original, net = prepared("ghost_bn", "resnet20", 3, 32, ghost_batch_size=2)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 21 and all(isinstance(m, GhostBatchNorm2d) for m in norms)
    assert net.state_dict().keys() == original.state_dict().keys()
    assert_maps_images_to_logits(net, 3, 32)


# ---------------------------------------------------------------- final BN


def test_final_bn_standardises_the_classifier_input() -> None:
    linear = nn.Linear(4, 3)
    head = BatchNormLinear(linear, momentum=0.1).train()
    features = torch.randn(16, 4) * 5.0 + 3.0
    standardised = (features - features.mean(0)) / torch.sqrt(features.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(head(features), standardised @ linear.weight.T + linear.bias, atol=1e-5)
    head.eval()
    running = (features - head.norm.running_mean) / torch.sqrt(head.norm.running_var + 1e-5)
    assert torch.allclose(head(features), running @ linear.weight.T + linear.bias, atol=1e-5)


def test_final_bn_is_inserted_before_the_output_layer() -> None:
    original, net = prepared("final_bn")
    parent, name, layer = output_layer(net)
    assert isinstance(layer, BatchNormLinear) and name == "1"
    assert set(original.state_dict()) < set(net.state_dict())  # head.1.weight kept, head.1.norm.* added
    assert layer.norm.num_features == original[1].head[1].in_features
    assert_maps_images_to_logits(net)


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


# ---------------------------------------------------------------- evaluation compatibility

def forward_flops(net: nn.Module, shape: tuple[int, ...]) -> int:
    """What the evaluator counts: FlopCounterMode over one eval-mode forward of one image."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(torch.zeros(1, *shape))
    return int(counter.get_total_flops())


BATCH_B = ["multi_sample_dropout", "max_dropout", "norm_loss", "atac", "weighted_conv", "weight_align",
           "ghost_bn", "final_bn", "perlin_init"]


@pytest.mark.parametrize("name", BATCH_B)
def test_prepared_models_count_flops_run_under_torch_func_and_take_channels_last(name: str) -> None:
    config = {"steps": 2} if name == "perlin_init" else {"ghost_batch_size": 4} if name == "ghost_bn" else {}
    original, net = prepared(name, **config)
    batch = torch.rand(8, 1, 8, 8)
    torch.manual_seed(0)
    contiguous = copy.deepcopy(net).train()(batch)
    torch.manual_seed(0)
    last = copy.deepcopy(net).to(memory_format=torch.channels_last).train()
    assert torch.allclose(last(batch.contiguous(memory_format=torch.channels_last)), contiguous, atol=1e-5)
    net.train()(batch)  # one training forward, so running statistics are not the defaults
    net.eval()
    images = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        expected = net(images)
        functional = torch.func.functional_call(net, dict(net.named_parameters()), (images,))
        per_image = torch.func.vmap(lambda one: net(one.unsqueeze(0)).squeeze(0))(images)
        channels_last = net.to(memory_format=torch.channels_last)(images.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(functional, expected) and torch.allclose(per_image, expected, atol=1e-5)
    assert torch.allclose(channels_last, expected, atol=1e-5)
    flops = forward_flops(net, (1, 8, 8))
    assert flops >= forward_flops(original, (1, 8, 8)) > 0
    assert METHODS.get(name).info.modifies_model == (name not in {"norm_loss", "perlin_init"})
