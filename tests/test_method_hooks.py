"""The engine's method hooks: each is called when and as often as documented, and its effect is real.

One probe method per hook, trained by `harness.engine.train` on the 8x8 digits: settings, schedule,
auxiliary modules, batch selection, after-step, task streams, finalize and method state in checkpoints.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from harness.data import ImageArrays, load_split
from harness.data.sources import UNLABELLED
from harness.data.tasks import TaskStream, class_incremental
from harness.engine import Checkpointing, TrainSettings, train
from harness.method import Batch, LossOutput, Method, TrainContext, labelled_cross_entropy
from harness.models import build_model

CPU = torch.device("cpu")


def digits() -> ImageArrays:
    return load_split("digits", "train")


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,))


def run(method: Method, data: ImageArrays | TaskStream, **kwargs: Any) -> tuple[nn.Module, Any]:
    model = fresh_model()
    settings = kwargs.pop("settings", TrainSettings(lr=0.05, batch_size=64, epochs=1, seed=0))
    stats = train(model, method, data, settings, num_classes=10, device=CPU, **kwargs)
    return model, stats


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------- schedule, settings


class FrozenSchedule(Method):
    def lr_schedule(self, default: Any, ctx: TrainContext) -> Any:
        return lambda step: 0.0


def test_lr_schedule_replaces_the_engines() -> None:
    before = weights(fresh_model())
    model, stats = run(FrozenSchedule(), digits())
    assert stats.steps > 0
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model), strict=True))  # lr 0: nothing moved
    moved, _ = run(Method(), digits())
    assert not all(torch.equal(a, b) for a, b in zip(before, weights(moved), strict=True))


# ---------------------------------------------------------------- auxiliary modules


class WithPeer(Method):
    """Trains a linear peer on flattened images beside the model; only the peer's loss counts."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.peer = nn.Linear(64, 10)

    def auxiliary_modules(self, ctx: TrainContext) -> Sequence[nn.Module]:
        return (self.peer,)

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        peer_loss = nn.functional.cross_entropy(self.peer(images.flatten(1)), labels)
        return LossOutput(peer_loss + 0.0 * model(images).sum())


def test_auxiliary_modules_are_optimised_and_checkpointed() -> None:
    method = WithPeer()
    start = method.peer.weight.detach().clone()
    saved: list[dict] = []
    settings = TrainSettings(lr=0.05, batch_size=64, epochs=2, seed=0)
    run(method, digits(), settings=settings,
        checkpointing=Checkpointing(every_epochs=1, save=saved.append))
    assert not torch.equal(start, method.peer.weight)
    assert len(saved) == 1
    after_epoch_1 = saved[0]["auxiliary"][0]["weight"]  # the peer as it was after epoch 1
    assert not torch.equal(after_epoch_1, start) and not torch.equal(after_epoch_1, method.peer.weight.detach())


# ---------------------------------------------------------------- batch selection and after_step


class PicksTheLastCandidate(Method):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []  # (candidates offered, batch size trained)
        self.after: list[int] = []

    def candidate_batches(self, ctx: TrainContext) -> int:
        return 3

    def select_batch(self, model: nn.Module, candidates: Sequence[Batch], ctx: TrainContext) -> Batch:
        self.seen.append((len(candidates), int(candidates[-1][1].shape[0])))
        return candidates[-1]

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        assert not torch.is_grad_enabled()
        self.after.append(ctx.step)


def test_select_batch_sees_candidate_groups_and_after_step_runs_once_per_step() -> None:
    data = digits()
    method = PicksTheLastCandidate()
    settings = TrainSettings(lr=0.05, batch_size=64, steps=10, seed=0)
    _, stats = run(method, data, settings=settings)
    assert stats.steps == 10 and stats.samples_seen == 10 * 64
    assert method.after == list(range(10))
    # an epoch of 22 batches gives 7 groups of three, then the one batch left; the next epoch starts afresh
    assert len(data) // 64 == 22
    assert [n for n, _ in method.seen] == [3] * 7 + [1] + [3] * 2
    assert {size for _, size in method.seen} == {64}


# ---------------------------------------------------------------- task streams


class RecordsTasks(Method):
    def __init__(self) -> None:
        super().__init__()
        self.labels_per_task: dict[int, set[int]] = {}
        self.ended: list[tuple[int, tuple[int, ...]]] = []
        self.steps_per_task: dict[int, int] = {}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        self.labels_per_task.setdefault(ctx.task, set()).update(labels.tolist())
        self.steps_per_task[ctx.task] = self.steps_per_task.get(ctx.task, 0) + 1
        return super().training_loss(model, images, labels, ctx)

    def on_task_end(self, model: nn.Module, ctx: TrainContext) -> None:
        self.ended.append((ctx.task, ctx.seen_classes))

    def state_dict(self) -> dict[str, Any]:
        return {"ended": list(self.ended)}

    def load_state_dict(self, state: Any) -> None:
        self.ended = list(state["ended"])


def test_class_incremental_stream_trains_task_after_task() -> None:
    stream = class_incremental(digits(), 3, 10)
    assert stream.classes == ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9))
    assert len(stream) == len(digits())
    method = RecordsTasks()
    results: list[int] = []
    settings = TrainSettings(lr=0.05, batch_size=32, steps=30, seed=0)
    _, stats = run(method, stream, settings=settings, on_task_end=lambda task, model: results.append(task) or task)
    assert {t: sorted(labels) for t, labels in method.labels_per_task.items()} == \
        {0: [0, 1, 2, 3], 1: [4, 5, 6], 2: [7, 8, 9]}  # a task sees only its classes
    assert method.steps_per_task == {0: 10, 1: 10, 2: 10}  # the budget is shared equally
    assert method.ended == [(0, (0, 1, 2, 3)), (1, (0, 1, 2, 3, 4, 5, 6)), (2, tuple(range(10)))]
    assert stats.task_results == [0, 1, 2] == results


def test_a_resumed_task_stream_keeps_method_state_and_task_results() -> None:
    stream = class_incremental(digits(), 2, 10)
    settings = TrainSettings(lr=0.05, batch_size=64, epochs=2, seed=0)
    saved: list[dict] = []

    def roundtrip(state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        saved.append(torch.load(buffer, weights_only=False))

    whole = RecordsTasks()
    model, stats = run(whole, stream, settings=settings, on_task_end=lambda task, m: task * 10,
                       checkpointing=Checkpointing(every_epochs=1, save=roundtrip))
    after_first_task = next(s for s in saved if s["method"]["ended"])
    resumed = RecordsTasks()
    resumed_model, resumed_stats = run(resumed, stream, settings=settings, on_task_end=lambda task, m: task * 10,
                                       checkpointing=Checkpointing(every_epochs=1, save=lambda s: None,
                                                                   resume=after_first_task))
    assert resumed.ended == whole.ended == [(0, (0, 1, 2, 3, 4)), (1, tuple(range(10)))]
    assert resumed_stats.task_results == stats.task_results == [0, 10]
    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- hidden labels


def test_labelled_cross_entropy_skips_hidden_labels_and_never_gives_nan() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [5.0, -5.0]], requires_grad=True)
    labels = torch.tensor([0, UNLABELLED, 1])
    expected = nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 1]))
    assert torch.allclose(labelled_cross_entropy(logits, labels), expected)
    none = labelled_cross_entropy(logits, torch.full((3,), UNLABELLED))
    none.backward()
    assert float(none.detach()) == 0.0 and logits.grad is not None


# ---------------------------------------------------------------- through the jobs: settings, finalize, continual


from harness.jobs import RunSpec, final_run, tuning_trial  # noqa: E402
from harness.method import MethodInfo, register_method  # noqa: E402
from harness.suite import BenchmarkSpec, Budget, MethodEntry, TrainSpec  # noqa: E402


@register_method
class ZeroedAtTheEnd(Method):
    """Its `finalize` zeroes the classifier: every prediction becomes class 0 (accuracy ~ 1/10 on digits);
    its `adjust_settings` doubles the steps."""

    info = MethodInfo(name="test_zeroed_at_the_end", summary="test probe")

    def adjust_settings(self, settings: TrainSettings, ctx: TrainContext) -> TrainSettings:
        return settings.replace(steps=2 * settings.total_steps(ctx.num_samples), epochs=None)

    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        assert ctx.step == ctx.total_steps and len(data) > 0
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
        return model


def tiny_bench(**changes: Any) -> BenchmarkSpec:
    fields = dict(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(epochs=1), augment=False,
                  train=TrainSpec(batch_size=64), tune_val_size=100)
    fields.update(changes)
    return BenchmarkSpec(**fields)


def test_finalize_decides_what_is_evaluated_and_adjust_settings_what_is_trained() -> None:
    spec = RunSpec(benchmark=tiny_bench(), method=MethodEntry(name="test_zeroed_at_the_end"), seed=0,
                   metrics=("accuracy", "params"), hyperparams={"train.lr": 0.05})
    erm = final_run(RunSpec(benchmark=tiny_bench(), method=MethodEntry(name="erm"), seed=0, metrics=("accuracy",),
                            hyperparams={"train.lr": 0.05}))
    zeroed = final_run(spec)
    assert zeroed["train/steps"] == 2 * erm["train/steps"]
    assert erm["test/accuracy"] > 0.5 and zeroed["test/accuracy"] < 0.15
    assert zeroed["train/flops"] == pytest.approx(2 * erm["train/flops"])  # measured on the trained model
    reports: list[dict] = []
    tuning_trial(spec, reports.append)  # the last epoch's score is the finalized model's, the others not
    assert reports[-1]["val/accuracy"] < 0.15 < reports[0]["val/accuracy"]


def _broadcast_worker(rank: int, init_file: str, results: Any) -> None:
    import torch.distributed as dist

    from harness.engine import _broadcast_from_rank0

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = nn.BatchNorm1d(3)
        with torch.no_grad():
            model.weight.fill_(float(rank + 1))
            model.running_mean.fill_(float(10 * (rank + 1)))
        _broadcast_from_rank0(model)
        results[rank] = (model.weight.tolist(), model.running_mean.tolist())
    finally:
        dist.destroy_process_group()


def test_a_task_end_hook_change_is_broadcast_from_rank_0(tmp_path: Any) -> None:
    """With several workers, what `on_task_end` did on rank 0 (a re-aligned head) replaces every worker's copy."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_broadcast_worker, args=(str(tmp_path / "rendezvous"), results), nprocs=2, join=True)
        assert results[0] == results[1] == ([1.0, 1.0, 1.0], [10.0, 10.0, 10.0])
