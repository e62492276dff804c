"""The hook contract's seams: every hook gets the run's `TrainContext` with its typed fields, and every hook
sees one model view (the plain model; `training_loss` alone gets the training forward, DDP's wrapper under
data parallelism, which keeps the workers' gradients in sync).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness import plugins
from harness.data import BatchAugment, ImageArrays, load_split
from harness.engine import TrainSettings, train
from harness.errors import SuiteError
from harness.jobs import RunSpec, final_run
from harness.method import (
    METHODS,
    Batch,
    LossOutput,
    LRSchedule,
    Method,
    MethodInfo,
    TrainContext,
    build_method,
    register_method,
)
from harness.models import build_model
from harness.suite import BenchmarkSpec, MethodEntry, validate_suite
from harness.train_settings import Budget, TrainSpec

plugins.discover_methods()
HOOKS = ("adjust_settings", "prepare_model", "auxiliary_modules", "lr_schedule", "candidate_batches",
         "select_batch", "training_loss", "after_step", "finalize")


class ContextRecorder(Method):
    """ERM that records, per hook call, the model it got and the context's fields."""

    info = MethodInfo(name="test_context_recorder", summary="test probe")
    calls: ClassVar[list[tuple[str, Any, TrainContext]]] = []

    def _record(self, hook: str, model: Any, ctx: TrainContext) -> None:
        type(self).calls.append((hook, model, ctx))

    def adjust_settings(self, settings: TrainSettings, ctx: TrainContext) -> TrainSettings:
        self._record("adjust_settings", None, ctx)
        return settings

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        self._record("prepare_model", model, ctx)
        return model

    def auxiliary_modules(self, ctx: TrainContext) -> Sequence[nn.Module]:
        self._record("auxiliary_modules", None, ctx)
        return ()

    def lr_schedule(self, default: LRSchedule, ctx: TrainContext) -> LRSchedule:
        self._record("lr_schedule", None, ctx)
        return default

    def candidate_batches(self, ctx: TrainContext) -> int:
        self._record("candidate_batches", None, ctx)
        return 1

    def select_batch(self, model: nn.Module, candidates: Sequence[Batch], ctx: TrainContext) -> Batch:
        self._record("select_batch", model, ctx)
        return candidates[0]

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        self._record("training_loss", model, ctx)
        return super().training_loss(model, images, labels, ctx)

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        self._record("after_step", model, ctx)

    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        self._record("finalize", model, ctx)
        return model


@pytest.fixture
def recorder() -> Iterator[None]:
    """ContextRecorder registered for the test only (the registry-wide contract tests never see it)."""
    register_method(ContextRecorder)
    yield
    METHODS._entries.pop(ContextRecorder.info.name, None)


def test_every_hook_gets_the_runs_typed_context(recorder: None) -> None:
    ContextRecorder.calls.clear()
    bench = BenchmarkSpec(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(steps=3), augment=False,
                          train=TrainSpec(batch_size=32), tune_val_size=100)
    final_run(RunSpec(benchmark=bench, method=MethodEntry(name="test_context_recorder"), seed=5,
                      metrics=("accuracy",)))
    calls = ContextRecorder.calls
    assert {hook for hook, _, _ in calls} == set(HOOKS)
    trained = next(model for hook, model, _ in calls if hook == "prepare_model")
    for hook, _, ctx in calls:
        assert (ctx.seed, ctx.input_shape, ctx.teacher_model, ctx.num_classes) == (5, (1, 8, 8), None, 10), hook
        assert ctx.num_samples == len(load_split("digits", "train")), hook
        assert ctx.total_steps == 3, hook
    fresh = calls[0][2].build_model(None)
    assert type(fresh) is type(trained) and fresh is not trained
    loop_hooks = [(hook, ctx) for hook, _, ctx in calls if hook in ("select_batch", "training_loss", "after_step")]
    assert [ctx.step for hook, ctx in loop_hooks if hook == "after_step"] == [0, 1, 2]
    assert all(ctx.model is trained and ctx.generator is not None for _, ctx in loop_hooks)


def _view_worker(rank: int, init_file: str, results: Any) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ContextRecorder.calls.clear()
        torch.manual_seed(0)
        plain = build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,))
        train(DistributedDataParallel(plain), ContextRecorder(), load_split("digits", "train"),
              TrainSettings(lr=0.05, batch_size=64, steps=3, seed=0), num_classes=10, device=torch.device("cpu"),
              rank=rank, world_size=2)
        views = {(hook, isinstance(model, DistributedDataParallel), ctx.model is plain)
                 for hook, model, ctx in ContextRecorder.calls if model is not None}
        results[rank] = (views, [p.detach().clone() for p in plain.parameters()])
    finally:
        dist.destroy_process_group()


def test_hooks_see_the_plain_model_and_training_loss_the_forward_that_syncs_gradients(tmp_path: Any) -> None:
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_view_worker, args=(str(tmp_path / "rendezvous"), results), nprocs=2, join=True)
        (views, first), (_, second) = results[0], results[1]
    assert views == {("select_batch", False, True), ("training_loss", True, True), ("after_step", False, True)}
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # different shards, one model


# ---------------------------------------------------------------- declared needs

PROVIDES = {"teacher": {"teacher": {"model": "tiny_cnn", "budget": {"epochs": 1}}},
            "task_stream": {"scenario": {"continual": {"tasks": 2}}},
            "unlabelled": {"scenario": {"few_labels": {"n_per_class": 5}}}}
KEY = {"teacher": "teacher", "task_stream": "scenario.continual", "unlabelled": "scenario.few_labels"}


def suite_providing(method: str, needs: Sequence[str]) -> dict[str, Any]:
    bench: dict[str, Any] = {"dataset": "digits", "model": "tiny_cnn", "budget": {"epochs": 1}}
    for need in needs:
        for key, value in PROVIDES[need].items():
            bench[key] = {**bench.get(key, {}), **value}
    return {"name": "needs", "benchmarks": [bench], "methods": [{"name": "erm"}, {"name": method}]}


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).info.needs])
def test_a_suite_must_provide_what_a_method_needs(name: str) -> None:
    needs = METHODS.get(name).info.needs
    assert set(needs) <= set(KEY)
    validate_suite(suite_providing(name, needs))
    for missing in needs:
        with pytest.raises(SuiteError, match=rf"benchmarks\[0\]\.{re.escape(KEY[missing])}"):
            validate_suite(suite_providing(name, [need for need in needs if need != missing]))


def test_the_continual_and_semi_supervised_methods_declare_their_needs() -> None:
    assert METHODS.get("er").info.needs == METHODS.get("weight_aligning").info.needs == ("task_stream",)
    assert METHODS.get("mean_teacher").info.needs == ("unlabelled",)
    assert METHODS.get("kd").info.needs_teacher and not METHODS.get("erm").info.needs


# ---------------------------------------------------------------- un-augmented images


class SeesUnaugmented(Method):
    """ERM that keeps, per step, the augmented batch and `ctx.unaugmented`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        self.seen.append((images, ctx.unaugmented))
        return super().training_loss(model, images, labels, ctx)


def as_rows(images: torch.Tensor) -> set[bytes]:
    """Each image as bytes of its uint8 pixels, to test membership in a split."""
    return {bytes(row) for row in (images * 255).round().to(torch.uint8).flatten(1).numpy()}


def digits_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,))


def test_a_method_sees_the_batch_before_augmentation() -> None:
    data, method = load_split("digits", "train"), SeesUnaugmented()
    train(digits_model(), method, data, TrainSettings(lr=0.05, batch_size=64, steps=4, seed=0), num_classes=10,
          device=torch.device("cpu"), augment=BatchAugment(crop_padding=2, hflip=False))
    stored = {bytes(row) for row in data.images.flatten(1).numpy()}
    assert len(method.seen) == 4
    for augmented, clean in method.seen:
        assert clean is not None and clean.shape == augmented.shape
        assert as_rows(clean) <= stored  # the training split's own images
        assert not as_rows(augmented) <= stored  # random crops are not


def test_without_augmentation_the_unaugmented_view_is_the_batch_itself() -> None:
    method = SeesUnaugmented()
    train(digits_model(), method, load_split("digits", "train"), TrainSettings(batch_size=64, steps=2, seed=0),
          num_classes=10, device=torch.device("cpu"))
    assert all(clean is augmented for augmented, clean in method.seen)


def test_er_replays_from_a_buffer_of_unaugmented_images() -> None:
    data, method = load_split("digits", "train"), build_method("er", {"buffer_size": 100})
    train(digits_model(), method, data, TrainSettings(lr=0.05, batch_size=64, steps=4, seed=0), num_classes=10,
          device=torch.device("cpu"), augment=BatchAugment(crop_padding=2, hflip=False))
    images, _ = method.buffer.stored()
    assert len(images) == 100 and as_rows(images) <= {bytes(row) for row in data.images.flatten(1).numpy()}
