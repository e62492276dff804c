"""Mechanism tests for the continual-learning and compression methods (issue 6) and the `compression`
metric: each against a known answer on small tensors (the metric's counts by hand, the reservoir's contents
and class balance after a known stream, the aligned norms, the masks' sparsity per round, the gates after
finalize, the quantised weights' levels per group). CPU, no Ray."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from harness.data import ImageArrays, load_split
from harness.data.tasks import class_incremental
from harness.engine import TrainSettings, train
from harness.evaluation import EvalInputs, EvaluationSettings, evaluate
from harness.method import TrainContext, build_method
from harness.models import build_model
from methods._layers import output_layer
from methods._replay import ReservoirBuffer
from methods.aimp import cyclic_cosine, magnitude_masks, phase_bounds, sparsity_schedule
from methods.er import exponential_per_task, task_bounds
from methods.groupwise_ptq import InputFakeQuant, quantize_groupwise
from methods.polarization_prune import GatedBatchNorm2d, channels_to_remove, gated_layers, polarization
from methods.weight_aligning import align_weights

CPU = torch.device("cpu")


def context(**changes: object) -> TrainContext:
    fields = dict(step=0, total_steps=10, epoch=0, num_classes=10, device=CPU,
                  generator=torch.Generator().manual_seed(0))
    return TrainContext(**(fields | changes))


def tiny_model(seed: int = 0, name: str = "tiny_cnn") -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,))


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


# ---------------------------------------------------------------- the reservoir buffer (er, weight_aligning)


def offer(buffer: ReservoirBuffer, labels: list[int], losses: list[float] | None = None, batch: int = 10) -> None:
    """Offer a stream whose image i is filled with the value i (so contents identify stream positions)."""
    for start in range(0, len(labels), batch):
        chunk = range(start, min(start + batch, len(labels)))
        images = torch.tensor([float(i) for i in chunk]).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
        buffer.add(images, torch.tensor([labels[i] for i in chunk]),
                   None if losses is None else torch.tensor([losses[i] for i in chunk]))


def stream_positions(buffer: ReservoirBuffer) -> list[int]:
    images, _ = buffer.stored()
    return [int(v) for v in images[:, 0, 0, 0]]


def test_reservoir_keeps_the_first_examples_then_samples_with_probability_capacity_over_seen() -> None:
    buffer = ReservoirBuffer(6)
    buffer.seed(0)
    offer(buffer, [0, 1, 2, 3, 4, 5])
    assert stream_positions(buffer) == [0, 1, 2, 3, 4, 5] and buffer.seen == 6
    kept = torch.zeros(60)
    for seed in range(300):  # each of 60 stream positions survives with probability 6/60
        buffer = ReservoirBuffer(6)
        buffer.seed(seed)
        offer(buffer, [0] * 60)
        kept[stream_positions(buffer)] += 1
    assert kept.sum() == 6 * 300
    assert kept[:30].sum() / kept.sum() == pytest.approx(0.5, abs=0.06)  # no bias towards early or late


def test_balanced_reservoir_evens_out_classes_a_plain_one_does_not() -> None:
    stream = [1] * 10 + [0] * 90  # the buffer fills with class 1, then class 0 floods in
    balanced, plain = ReservoirBuffer(10, balanced=True), ReservoirBuffer(10)
    for buffer in (balanced, plain):
        buffer.seed(0)
        offer(buffer, stream)
    assert balanced.class_counts(2) == [5, 5]  # class 1 only ever lost slots while it was the larger class
    assert plain.class_counts(2)[1] <= 3        # uniform over the stream: ~1 of 10 expected


def test_loss_aware_reservoir_evicts_the_easy_examples_first() -> None:
    buffer = ReservoirBuffer(4, loss_aware=True)
    buffer.seed(0)
    offer(buffer, [0, 0, 0, 0], losses=[0.0, 0.0, 10.0, 10.0])
    offer(buffer, [0] * 40, losses=[5.0] * 40)
    positions = stream_positions(buffer)
    assert 2 in positions and 3 in positions      # the hard examples survive every eviction
    assert 0 not in positions and 1 not in positions


def test_buffer_state_round_trips() -> None:
    buffer = ReservoirBuffer(5, balanced=True, loss_aware=True)
    buffer.seed(3)
    offer(buffer, [0, 1, 2] * 10, losses=[float(i) for i in range(30)])
    copy_ = ReservoirBuffer(5, balanced=True, loss_aware=True)
    copy_.load_state_dict(buffer.state_dict())
    offer(buffer, [2] * 10)
    offer(copy_, [2] * 10)
    assert stream_positions(buffer) == stream_positions(copy_) and buffer.seen == copy_.seen == 40


def test_er_lr_decays_exponentially_within_each_task_and_restarts() -> None:
    bounds = task_bounds(30, 3)
    assert bounds == [0, 10, 20, 30]
    assert [exponential_per_task(s, bounds, 0.1) for s in (0, 10, 20)] == [1.0, 1.0, 1.0]
    assert exponential_per_task(5, bounds, 0.1) == pytest.approx(0.1 ** 0.5)
    assert exponential_per_task(29, bounds, 0.1) == pytest.approx(0.1 ** 0.9)


def test_er_replays_a_class_balanced_buffer_across_a_task_stream() -> None:
    stream = class_incremental(load_split("digits", "train"), 3, 10)
    method = build_method("er", {"buffer_size": 30})
    model = tiny_model()
    head_before = output_layer(model)[2].weight.detach().clone()
    train(model, method, stream, TrainSettings(lr=0.05, batch_size=16, steps=15, seed=0), num_classes=10,
          device=CPU)
    counts = method.buffer.class_counts(10)
    assert sum(counts) == 30 and min(counts) >= 2  # every class of the stream is remembered
    assert max(counts) - min(counts) <= 2
    assert not torch.equal(head_before, output_layer(model)[2].weight)


# ---------------------------------------------------------------- weight_aligning


def test_weight_aligning_scales_new_class_norms_to_the_old_mean() -> None:
    head = nn.Linear(2, 4)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, 8.0]]))
        head.bias.copy_(torch.tensor([1.0, 1.0, 3.0, 6.0]))
    gamma = align_weights(head, old=[0, 1], new=[2, 3])
    assert gamma == pytest.approx(2.0 / 6.0)
    assert head.weight.norm(dim=1).tolist() == pytest.approx([1.0, 3.0, 4 / 3, 8 / 3])
    assert head.bias.tolist() == pytest.approx([1.0, 1.0, 1.0, 2.0])  # new logits scale as a whole
    assert align_weights(head, old=[], new=[0, 1]) == 1.0  # task 0: nothing to align


def test_weight_aligning_snapshots_at_task_end_and_distils_afterwards() -> None:
    method = build_method("weight_aligning", {"memory_size": 0})
    model = tiny_model().train()
    images = torch.rand(8, 1, 8, 8)
    task0 = dict(task=0, num_tasks=2, task_classes=(0, 1, 2, 3, 4), seen_classes=(0, 1, 2, 3, 4))
    task1 = dict(task=1, num_tasks=2, task_classes=(5, 6, 7, 8, 9), seen_classes=tuple(range(10)))
    assert not method.training_loss(model, images, torch.arange(8) % 5, context(**task0)).parts
    with torch.no_grad():
        method.on_task_end(model, context(**task0))
    assert method.previous is not None and not method.previous.training
    out = method.training_loss(model.eval(), images, torch.arange(8) % 5 + 5, context(**task1))
    assert float(out.parts["kd"]) == pytest.approx(0.0, abs=1e-6)  # the snapshot still equals the model (eval BN)
    assert float(out.parts["ce"]) > 0
    head = output_layer(model)[2]
    with torch.no_grad():
        head.weight[5:] *= 3.0
        method.on_task_end(model, context(**task1))
    norms = head.weight.detach().norm(dim=1)
    assert norms[5:].mean() == pytest.approx(float(norms[:5].mean()), rel=1e-5)
    restored = build_method("weight_aligning", {"memory_size": 0})
    restored.load_state_dict(method.state_dict())
    restored.training_loss(model, images, torch.arange(8) % 5 + 5, context(**task1))
    assert all(torch.equal(a, b) for a, b in zip(restored.previous.state_dict().values(),
                                                 method.previous.state_dict().values(), strict=True))


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
