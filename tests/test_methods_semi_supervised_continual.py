"""Mechanism tests of the semi-supervised and continual-learning methods (mean_teacher, er,
weight_aligning): the EMA and its ramp-up, the local clustering value, the reservoir's contents and class
balance after a known stream, the aligned norms. CPU, no Ray."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.data import ImageArrays, load_split
from harness.data.sources import UNLABELLED
from harness.data.tasks import class_incremental
from harness.engine import TrainSettings, train
from harness.method import build_method
from methods._layers import forward_with_features, output_layer
from methods._replay import ReservoirBuffer
from methods.er import exponential_per_task, task_bounds
from methods.mean_teacher import ema_update, local_clustering_loss, sigmoid_rampup
from methods.weight_aligning import align_weights
from tests.method_fixtures import fields_context as context
from tests.method_fixtures import step_context, tiny_cnn, tiny_model

CPU = torch.device("cpu")


CLASSES = 10


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
    model = method.prepare_model(tiny_cnn(), step_context())
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(32) % CLASSES
    labels[8:] = UNLABELLED
    data = ImageArrays(images, labels)

    train(model, method, data, TrainSettings(steps=3, batch_size=16), num_classes=CLASSES, device=CPU)
    final = method.finalize(model, data, step_context(step=3))

    teacher = method.teacher
    assert teacher is not None and final is not model
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), teacher.state_dict().values(),
                                                 strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(final.parameters(), model.parameters(), strict=True))
    fresh = build_method("mean_teacher")
    fresh.prepare_model(tiny_cnn(seed=5), step_context())
    fresh.load_state_dict(method.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.teacher.state_dict().values(),
                                                 teacher.state_dict().values(), strict=True))
    unlabelled_only = method.training_loss(model.train(), images[:4].float() / 255, torch.full((4,), UNLABELLED),
                                           step_context(step=5))
    assert float(unlabelled_only.parts["ce"]) == 0.0 and float(unlabelled_only.loss.detach()) > 0.0


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


# ---------------------------------------------------------------- the engine's per-task schedule


def test_a_per_task_schedule_restarts_warm_up_and_cosine_at_every_task() -> None:
    """`train.schedule: per_task` gives each task its own warm-up and decay over its share of the steps, at
    the boundaries the loop switches tasks at; the stream schedule reaches the last task nearly spent."""
    from harness.engine import per_task_warmup_cosine, warmup_cosine

    per_task, stream = per_task_warmup_cosine(30, 3, 0.1), warmup_cosine(30, 0.1)
    assert [per_task(step) for step in (0, 10, 20)] == [1.0, 1.0, 1.0]  # warm-up of 1 step each task
    assert per_task(9) < 0.05 and per_task(29) < 0.05 and per_task(15) == pytest.approx(warmup_cosine(10, 0.1)(5))
    assert stream(20) < 0.35  # one decay over the stream: the last task starts with under a third of the lr


def test_the_schedule_setting_trains_a_task_stream_and_keeps_the_default_out_of_the_hash() -> None:
    from harness.train_settings import TrainSpec

    assert "schedule" not in TrainSpec().model_dump()  # suites without it keep their hashes
    assert TrainSpec(schedule="per_task").model_dump()["schedule"] == "per_task"
    stream = class_incremental(load_split("digits", "train"), 3, 10)
    heads = []
    for schedule in ("stream", "per_task"):
        model = tiny_model()
        train(model, build_method("erm"), stream, TrainSettings(lr=0.05, batch_size=16, steps=15, seed=0,
              schedule=schedule), num_classes=10, device=CPU)
        heads.append(output_layer(model)[2].weight.detach().clone())
    assert not torch.equal(*heads)  # the setting reaches the loop
