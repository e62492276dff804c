"""Mechanism tests of the compression methods (aimp, polarization_prune, groupwise_ptq) and the
`compression` metric: the metric's counts by hand, the masks' sparsity per round, the gates after finalize,
the quantised weights' levels per group. CPU, no Ray."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from harness.data import ImageArrays, load_split
from harness.engine import TrainSettings, train
from harness.evaluation import EvalInputs, EvaluationSettings, evaluate
from harness.method import build_method
from methods.aimp import cyclic_cosine, magnitude_masks, phase_bounds, sparsity_schedule
from methods.groupwise_ptq import InputFakeQuant, quantize_groupwise
from methods.polarization_prune import GatedBatchNorm2d, channels_to_remove, gated_layers, polarization
from tests.method_fixtures import fields_context as context
from tests.method_fixtures import tiny_model

CPU = torch.device("cpu")


def weight_sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


# ---------------------------------------------------------------- the compression metric


def test_compression_metric_counts_a_hand_built_sparse_quantised_model() -> None:
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    linear = nn.Linear(2 * 4 * 4, 3)
    with torch.no_grad():
        conv.weight.fill_(0.5)
        conv.weight[1] = 0.0                        # one of two filters pruned: 9 of 18 weights zero
        linear.weight.fill_(1.0)
        linear.weight[:, :8] = 0.0                  # 24 of 96 weights zero: density 0.75
        linear.bias.fill_(1.0)
    linear.weight_bits = 4
    model = nn.Sequential(conv, nn.Flatten(), linear)
    images = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = EvalInputs(model.eval(), images, torch.arange(5) % 3, CPU, EvaluationSettings())
    row = evaluate(inputs, ["compression", "flops"])
    assert row["model/nonzero_params"] == 9 + 72 + 3
    assert row["model/sparsity"] == pytest.approx(33 / 114)
    # dense: conv 16 positions x 2 filters x 9 MACs x 2 = 576, linear 32 x 3 x 2 = 192
    assert row["model/fwd_flops_2xmac_per_image"] == 768
    assert row["model/sparse_flops"] == pytest.approx(576 * 0.5 + 192 * 0.75)
    assert row["model/weight_bytes"] == pytest.approx(9 * 32 / 8 + 72 * 4 / 8)


# ---------------------------------------------------------------- aimp


def test_aimp_masks_keep_the_largest_magnitudes_globally_or_per_layer() -> None:
    weights = {"a": torch.tensor([1.0, -8.0, 3.0, 0.5]), "b": torch.tensor([-2.0, 7.0, 6.0, 5.0])}
    assert sparsity_schedule(0.875, 3) == pytest.approx([0.5, 0.75, 0.875])
    global_masks = magnitude_masks(weights, 0.5, "global")
    assert global_masks["a"].tolist() == [False, True, False, False]
    assert global_masks["b"].tolist() == [False, True, True, True]
    layer_masks = magnitude_masks(weights, 0.5, "layer")
    assert layer_masks["a"].tolist() == [False, True, True, False]
    assert layer_masks["b"].tolist() == [False, True, True, False]


def test_aimp_prunes_on_the_geometric_schedule_at_each_phase_end() -> None:
    bounds = phase_bounds(20, 3, 0.4)
    assert bounds == [0, 4, 8, 12, 20]  # three short phases of 4 steps, the last one 8 long
    assert cyclic_cosine(4, bounds) == cyclic_cosine(12, bounds) == 1.0  # the LR restarts at each phase
    assert cyclic_cosine(11, bounds) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))
    method = build_method("aimp", {"target_sparsity": 0.875, "rounds": 3, "final_fraction": 0.4})
    seen: list[tuple[int, float]] = []
    prune = method.prune

    def recording_prune(model: nn.Module, rounds_done: int) -> None:
        prune(model, rounds_done)
        seen.append((rounds_done, weight_sparsity(model)))

    method.prune = recording_prune
    model = tiny_model()
    train(model, method, load_split("digits", "train"), TrainSettings(lr=0.05, batch_size=32, steps=20, seed=0),
          num_classes=10, device=CPU)
    assert [r for r, _ in seen] == [1, 2, 3]
    assert [s for _, s in seen] == pytest.approx([0.5, 0.75, 0.875], abs=1e-3)
    assert weight_sparsity(model) == pytest.approx(0.875, abs=1e-3)  # masks held through the last phase
    assert set(method.state_dict()["masks"]) == {n for n, m in model.named_modules()
                                                 if isinstance(m, nn.Conv2d | nn.Linear)}


# ---------------------------------------------------------------- polarization_prune


def test_polarization_regulariser_of_known_gates() -> None:
    assert float(polarization(torch.tensor([0.0, 1.0, 1.0, 0.0]), t=1.0)) == pytest.approx(0.0)
    assert float(polarization(torch.tensor([0.5, 0.5, 0.5, 0.5]), t=1.0)) == pytest.approx(2.0)
    assert float(polarization(torch.tensor([1.0, 1.0]), t=1.2)) == pytest.approx(2.4)
    masks = channels_to_remove([torch.tensor([0.9, 0.0, 0.8]), torch.tensor([0.01, 0.02])], 0.2, 0.05)
    assert [m.tolist() for m in masks] == [[False, True, False], [True, False]]  # a layer keeps its best channel


def test_polarization_finalize_removes_low_gates_and_folds_the_rest() -> None:
    method = build_method("polarization_prune", {"target_sparsity": 0.0, "threshold": 0.05})
    model = method.prepare_model(tiny_model(name="fast_cnn"), context())
    layers = gated_layers(model)
    assert [layer.num_features for layer in layers] == [16, 32]
    with torch.no_grad():
        for layer in layers:
            layer.gate.copy_(torch.linspace(0.2, 1.0, layer.num_features))
            layer.gate[::4] = 0.0  # every fourth channel's gate is 0
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.bias.uniform_(-0.5, 0.5)
    images = torch.rand(4, 1, 8, 8)
    gated_logits = model.eval()(images)
    final = method.finalize(model, ImageArrays(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(1).long()),
                            context(step=10))
    assert not any(isinstance(m, GatedBatchNorm2d) for m in final.modules())
    assert torch.allclose(final.eval()(images), gated_logits, atol=1e-5)  # folding changed nothing
    convs = [m for m in final.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in final.modules() if isinstance(m, nn.BatchNorm2d)]
    for conv, norm in zip(convs, norms, strict=True):
        removed = torch.zeros(conv.out_channels, dtype=torch.bool)
        removed[::4] = True
        assert bool((conv.weight[removed] == 0).all()) and bool((conv.weight[~removed] != 0).any())
        assert bool((norm.weight[removed] == 0).all()) and bool((norm.bias[removed] == 0).all())
        assert float(norm.weight[1].detach()) == pytest.approx(float(torch.linspace(0.2, 1.0, conv.out_channels)[1]))


# ---------------------------------------------------------------- groupwise_ptq


def test_groupwise_quantisation_gives_each_group_its_own_grid() -> None:
    weight = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    weight[3:] *= 100.0  # the second group's scale is far larger; group-wise, the first keeps its resolution
    quantized = quantize_groupwise(weight, bits=3, group_size=3)
    for group in (slice(0, 3), slice(3, 6)):
        original, levels = weight[group], quantized[group]
        scale = original.abs().max() / 3
        assert levels.unique().numel() <= 2**3 - 1
        assert torch.allclose(levels / scale, (levels / scale).round(), atol=1e-4)
        assert (levels - original).abs().max() <= scale / 2 + 1e-6
        assert levels.abs().max() == pytest.approx(float(original.abs().max()))


def test_groupwise_ptq_finalize_quantises_every_layer_and_calibrates_inputs() -> None:
    method = build_method("groupwise_ptq", {"bits": 4, "group_size": 4, "kd_steps": 3, "kd_samples": 32,
                                            "activation_bits": 8, "calibration_samples": 32})
    model = tiny_model(name="fast_cnn")
    before = copy.deepcopy(model)
    data = load_split("digits", "train")
    final = method.finalize(model, data, context(step=10))
    layers = [m for m in final.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == 3 and all(layer.weight_bits == 4 for layer in layers)
    for layer in layers:
        for group in layer.weight.detach().reshape(layer.weight.shape[0], -1).split(4):
            assert group.unique().numel() <= 15
    quantizers = [m for m in final.modules() if isinstance(m, InputFakeQuant)]
    assert len(quantizers) == 3 and all(not q.calibrating and q.high > q.low for q in quantizers)
    images = data.images[:64].float() / 255.0
    agreement = (final(images).argmax(1) == before.eval()(images).argmax(1)).float().mean()
    assert agreement > 0.5  # still the same function, roughly
