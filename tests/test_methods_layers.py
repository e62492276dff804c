"""Mechanism tests of the methods that swap layers or normalisation (atac, weighted_conv, weight_align,
ghost_bn, final_bn): each layer against a known answer on small tensors, each swap against the layer types
it must produce and the [B, C, H, W] -> [B, K] contract; and every model-preparing method's model under the
evaluator (FLOPs, torch.func, channels_last). CPU, no Ray."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.engine import TrainSettings, train
from harness.method import METHODS, TrainContext, build_method
from methods._layers import ResidualBlockWithActivations, output_layer
from methods.atac import ATACUnit
from methods.final_bn import BatchNormLinear
from methods.ghost_bn import GhostBatchNorm2d
from methods.weight_align import ChannelAffine, WeightAlignConv2d
from methods.weighted_conv import WeightedConv2d, density_profile
from tests.method_fixtures import (
    assert_maps_images_to_logits,
    net,
    prepared,
    teacher_context,
    tiny_images,
)

CPU = torch.device("cpu")
CLASSES = 10


def samples(count: int) -> TrainContext:
    """A teacher_context for `adjust_settings` of a run on `count` training examples."""
    return dataclasses.replace(teacher_context(), num_samples=count)


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
    model = method.prepare_model(net(), teacher_context())
    assert any(isinstance(m, GhostBatchNorm2d) for m in model.modules())
    settings = method.adjust_settings(TrainSettings(batch_size=16, epochs=1.0), teacher_context())
    stats = train(model, method, tiny_images(64), settings, num_classes=CLASSES, device=CPU)
    assert (stats.steps, stats.samples_seen) == (4, 4 * 32)  # B_S's 4 updates, each on B_L = 32 images


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
