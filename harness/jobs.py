"""The three kinds of work a suite does, as plain functions with no Ray in them.

`tuning_trial` trains on tune_train and reports tune_val scores with the test split sealed;
`train_teacher` trains a benchmark's teacher for one phase and seed; `final_run` retrains a frozen
config on the full training split and evaluates on test. The Ray modules (`tuning`, `final_runs`,
`cluster`) only wrap these, so every one of them runs, and is tested, without a cluster.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from harness.audit import AuditRecord
from harness.compute import ComputeMeter
from harness.data import BatchAugment, DataAccess, DatasetInfo, ImageArrays, sealed_test_split
from harness.data.shared import SplitHandles
from harness.data.sources import audit_record, training_window
from harness.data.tasks import TaskStream, class_incremental
from harness.engine import (
    Checkpointing,
    EpochCallback,
    TaskEndCallback,
    TrainStats,
    accuracy,
    pick_device,
    predict_logits,
    train,
)
from harness.evaluation import EvalInputs, evaluate
from harness.evaluation.continual import continual_scores, task_accuracies
from harness.method import Method, MethodInfo, TrainContext, build_method
from harness.models import build_model
from harness.objective import ALWAYS_REPORTED, OBJECTIVE_KEY, TUNING_SPLIT, tuning_settings
from harness.plugins import discover_methods
from harness.protocols import DEFAULT_PROTOCOL, get_protocol
from harness.suite import BenchmarkSpec, MethodEntry
from harness.train_settings import Budget, TrainSettings

Phase = Literal["tune", "final"]
Report = Callable[[dict[str, Any]], None]
TRAIN_PREFIX, METHOD_PREFIX = "train.", "method."


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs; small and picklable, shipped to Ray workers."""

    benchmark: BenchmarkSpec
    method: MethodEntry
    seed: int
    hyperparams: Mapping[str, Any] = field(default_factory=dict)  # flat: "train.lr", "method.alpha"
    split_seed: int = 0
    metrics: tuple[str, ...] = ()  # registered metrics to evaluate: a final run's on test, a trial's on tune_val
    threads: int = 1
    protocol: str = DEFAULT_PROTOCOL  # a `harness.protocols` name: what tuning trains and scores on
    data: SplitHandles | None = None  # the object-store splits this job may map (None: it reads the files)
    objective: str = ALWAYS_REPORTED  # a trial's selection score (`harness.objective`), reported as OBJECTIVE_KEY


def split_hyperparams(hyperparams: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat `train.x` / `method.y` keys -> (engine overrides, method config overrides)."""
    engine = {k.removeprefix(TRAIN_PREFIX): v for k, v in hyperparams.items() if k.startswith(TRAIN_PREFIX)}
    method = {k.removeprefix(METHOD_PREFIX): v for k, v in hyperparams.items() if k.startswith(METHOD_PREFIX)}
    return engine, method


def build_for(bench: BenchmarkSpec, info: DatasetInfo, model_name: str | None = None) -> nn.Module:
    return build_model(model_name or bench.model, in_channels=info.channels, num_classes=info.num_classes,
                       image_size=info.image_size, mean=info.mean, std=info.std)


def augment_for(bench: BenchmarkSpec, info: DatasetInfo) -> BatchAugment | None:
    return BatchAugment.for_dataset(info) if bench.augment else None


def make_method(spec: RunSpec) -> Method:
    _, method_overrides = split_hyperparams(spec.hyperparams)
    return build_method(spec.method.name, {**spec.method.config, **method_overrides})


def load_teacher(bench: BenchmarkSpec, info: DatasetInfo, state: bytes | None, device: torch.device) -> nn.Module | None:
    """The frozen teacher from serialized weights, or None when the run has no teacher."""
    if state is None or bench.teacher is None:
        return None
    teacher = build_for(bench, info, bench.teacher.model)
    teacher.load_state_dict(torch.load(io.BytesIO(state), map_location=device, weights_only=True))
    teacher.to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@dataclass
class Trained:
    """A finished training run: the model to evaluate (after the method's `finalize`) and its counters."""

    model: nn.Module
    stats: TrainStats
    flops: float  # training FLOPs counted from what ran: prepare_model's passes and the loop's (`harness.compute`)


def training_stream(bench: BenchmarkSpec, data: ImageArrays, info: DatasetInfo) -> ImageArrays | TaskStream:
    """The training split as the engine consumes it: cut into class-incremental tasks when the scenario says so."""
    continual = bench.scenario.continual if bench.scenario is not None else None
    return class_incremental(data, continual.tasks, info.num_classes) if continual is not None else data


def _overrides(method: Method, hook: str) -> bool:
    return getattr(type(method), hook) is not getattr(Method, hook)


def _train_method(spec: RunSpec, data: ImageArrays, info: DatasetInfo, budget: Budget, device: torch.device,
                  teacher: nn.Module | None, on_epoch_end: EpochCallback | None = None,
                  wrap_model: Callable[[nn.Module], nn.Module] | None = None,
                  rank: int = 0, world_size: int = 1,
                  checkpointing: Checkpointing | None = None,
                  on_task_end: TaskEndCallback | None = None) -> Trained:
    """Build the model and the method for `spec`, train, finalize, and return the model to evaluate.

    `on_epoch_end` sees, after the last epoch, the model as the method's `finalize` leaves it (applied to a
    copy), so a tuning score is that of the model that would be evaluated (pruned, quantised, an EMA).
    The method's code runs inside the training window: the audit refuses any open of a test split's file.
    """
    with training_window():
        return _train_and_finalize(spec, data, info, budget, device, teacher, on_epoch_end, wrap_model, rank,
                                   world_size, checkpointing, on_task_end)


def _train_and_finalize(spec: RunSpec, data: ImageArrays, info: DatasetInfo, budget: Budget, device: torch.device,
                        teacher: nn.Module | None, on_epoch_end: EpochCallback | None,
                        wrap_model: Callable[[nn.Module], nn.Module] | None, rank: int, world_size: int,
                        checkpointing: Checkpointing | None, on_task_end: TaskEndCallback | None) -> Trained:
    torch.set_num_threads(max(1, spec.threads))
    engine_overrides, _ = split_hyperparams(spec.hyperparams)
    method = make_method(spec)
    settings = TrainSettings.for_run(spec.benchmark.train, budget, spec.seed, engine_overrides)
    ctx = run_context(spec, info, device, teacher, num_samples=len(data),
                      total_steps=settings.total_steps(len(data), world_size))
    settings = method.adjust_settings(settings, ctx)
    total = settings.total_steps(len(data), world_size)
    ctx = dataclasses.replace(ctx, total_steps=total)
    torch.manual_seed(spec.seed)
    model, prepare_flops = _prepared(method, build_for(spec.benchmark, info), ctx)
    prepare_flops *= world_size  # every worker prepares its copy
    model = model.to(device)
    done = dataclasses.replace(ctx, step=total, model=model)

    def scored(epoch: int, stats: TrainStats, trained: nn.Module) -> bool | None:
        assert on_epoch_end is not None
        if stats.steps >= total and _overrides(method, "finalize"):
            trained = method.finalize(copy.deepcopy(model), data, done)
        return on_epoch_end(epoch, dataclasses.replace(stats, flops=prepare_flops + stats.flops), trained)

    stats = train(wrap_model(model) if wrap_model else model, method, training_stream(spec.benchmark, data, info),
                  settings, num_classes=info.num_classes, augment=augment_for(spec.benchmark, info), device=device,
                  context=ctx, on_epoch_end=scored if on_epoch_end else None, on_task_end=on_task_end,
                  rank=rank, world_size=world_size, checkpointing=checkpointing)
    return Trained(method.finalize(model, data, done).eval(), stats, prepare_flops + stats.flops)


def _prepared(method: Method, model: nn.Module, ctx: TrainContext) -> tuple[nn.Module, float]:
    """`prepare_model`'s model and the FLOPs it spent on the model and teacher (a pre-training)."""
    meter = ComputeMeter()
    meter.watch([model, ctx.teacher])
    with meter.counting():
        prepared = method.prepare_model(model, ctx)
    return prepared, meter.take()


def run_context(spec: RunSpec, info: DatasetInfo, device: torch.device, teacher: nn.Module | None, *,
                num_samples: int, total_steps: int) -> TrainContext:
    """The context `adjust_settings` and `prepare_model` get, and the engine extends for every later hook."""
    bench = spec.benchmark
    return TrainContext(step=0, total_steps=total_steps, epoch=0, num_classes=info.num_classes, device=device,
                        teacher=teacher, seed=spec.seed, num_samples=num_samples,
                        input_shape=(info.channels, info.image_size, info.image_size),
                        teacher_model=bench.teacher.model if bench.teacher is not None else None,
                        build_model=functools.partial(_fresh_model, bench, info, device))


def _fresh_model(bench: BenchmarkSpec, info: DatasetInfo, device: torch.device, name: str | None = None) -> nn.Module:
    """An untrained model of the benchmark's architecture, or of `name` (for `ctx.build_model`)."""
    return build_for(bench, info, name).to(device)


def tuning_trial(spec: RunSpec, report: Report, teacher_state: bytes | None = None, *, rank: int = 0,
                 world_size: int = 1, device: torch.device | None = None,
                 wrap_model: Callable[[nn.Module], nn.Module] | None = None) -> dict[str, Any]:
    """Train one hyper-parameter configuration on tune_train, reporting the selection score every epoch
    (on each of `world_size` data-parallel workers when a trial has several).

    The protocol (`harness.protocols`) says which splits train and score the trial. Under every protocol
    that does not score on test (every honest one) this runs inside `sealed_test_split()`: nothing
    reachable from here can read the test split. Only `oracle`, which a suite must allow explicitly,
    scores on (a class-balanced sample of) the test split, to measure what that inflates.
    """
    bench = spec.benchmark
    protocol = get_protocol(spec.protocol)
    data = protocol.tuning_data(bench, spec.split_seed)
    with audit_record() as record, sealed_test_split() if protocol.seals_test else contextlib.nullcontext():
        access = DataAccess(data.dataset, data.phase, val_fraction=data.val_fraction, split_seed=data.split_seed,
                            tune_train_size=data.tune_train_size, tune_val_size=data.tune_val_size,
                            scenario=bench.scenario, shared=spec.data)
        device = device or pick_device()
        train_data, val_data = access.split(data.train_split), access.split(data.score_split)
        teacher = load_teacher(bench, access.info, teacher_state, device)

        def on_epoch_end(epoch: int, stats: TrainStats, model: nn.Module) -> None:
            scores = tuning_scores(spec, model, val_data, access.info, device)
            record.raise_if_broken()  # a refused read the method caught must not score
            report({**scores, OBJECTIVE_KEY: scores[spec.objective], "train/samples_seen": float(stats.samples_seen),
                    "train/flops": stats.flops,
                    "train/steps": float(stats.steps), "train/wall_s": stats.wall_s, "epoch": float(epoch),
                    "splits_read": ",".join(access.splits_read), **audit_columns(record)})

        trained = _train_method(spec, train_data, access.info, bench.tuning_budget or bench.budget, device,
                                teacher, on_epoch_end=on_epoch_end, wrap_model=wrap_model, rank=rank,
                                world_size=world_size)
        record.raise_if_broken()
        return {"splits_read": ",".join(access.splits_read), "train/samples_seen": trained.stats.samples_seen,
                **audit_columns(record)}


def tuning_scores(spec: RunSpec, model: nn.Module, val_data: ImageArrays, info: DatasetInfo,
                  device: torch.device) -> dict[str, float]:
    """A trial's scores on its score split: val/accuracy as always, and `spec.metrics` (what its objective
    and floors read) as `val/...` columns, under the benchmark's evaluation settings."""
    scores = {ALWAYS_REPORTED: accuracy(model, val_data, device=device, num_classes=info.num_classes)}
    if spec.metrics:
        inputs = EvalInputs(model=model, images=val_data.images, labels=val_data.labels, device=device,
                            settings=tuning_settings(spec.benchmark.evaluation), split=TUNING_SPLIT,
                            num_classes=info.num_classes, stochastic=method_info(spec).stochastic)
        scores.update(evaluate(inputs, spec.metrics))
    return scores


def audit_columns(record: AuditRecord) -> dict[str, str]:
    """A row's audit: the data files its job opened (JSON) and the digest `harness.verify` recomputes."""
    return {"data_files_read": record.as_json(), "audit_digest": record.digest}


def train_teacher(bench: BenchmarkSpec, phase: Phase, seed: int, split_seed: int = 0,
                  threads: int = 1, data: SplitHandles | None = None) -> tuple[bytes, dict[str, Any]]:
    """Train the benchmark's teacher on the phase's training data (mapped from `data` when given);
    return (weights, row metrics)."""
    assert bench.teacher is not None
    discover_methods()  # in a fresh Ray worker: plugin datasets are registered before they are looked up
    torch.set_num_threads(max(1, threads))
    teacher_method = Method()
    spec = bench.teacher
    start = time.perf_counter()
    device = pick_device()
    with audit_record() as record:
        if phase == "tune":
            with sealed_test_split():
                access = DataAccess(bench.dataset, "tune", val_fraction=bench.val_fraction, split_seed=split_seed,
                                    tune_train_size=bench.tune_train_size, tune_val_size=bench.tune_val_size,
                                    scenario=bench.scenario, shared=data)
                train_data, held_out, held_out_name = access.split("tune_train"), access.split("tune_val"), "val"
        else:
            access = DataAccess(bench.dataset, "final", scenario=bench.scenario, shared=data)
            train_data, held_out_name = access.split("train"), "test"
        torch.manual_seed(seed)
        model = build_for(bench, access.info, spec.model).to(device)
        with training_window():
            stats = train(model, teacher_method, train_data, TrainSettings.for_run(spec.train, spec.budget, seed),
                          num_classes=access.info.num_classes, augment=augment_for(bench, access.info), device=device)
        if phase != "tune":  # read once training is done
            held_out = access.split("test")
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    metrics = {f"{held_out_name}/accuracy": accuracy(model, held_out, device=device,
                                                     num_classes=access.info.num_classes),
               "train/samples_seen": float(stats.samples_seen), "train/steps": float(stats.steps),
               "train/wall_s": stats.wall_s, "wall_s": time.perf_counter() - start,
               "splits_read": ",".join(access.splits_read), **audit_columns(record), **stats.engine_modes}
    return buffer.getvalue(), metrics


def final_run(spec: RunSpec, teacher_state: bytes | None = None, *, rank: int = 0, world_size: int = 1,
              device: torch.device | None = None,
              wrap_model: Callable[[nn.Module], nn.Module] | None = None,
              checkpointing: Checkpointing | None = None) -> dict[str, Any]:
    """Retrain on the full training split, then (rank 0) evaluate on test; returns the row's metrics.

    The test split is read only once training and the method's `finalize` are done. With
    `checkpointing`, the loop's state is saved every few epochs and a run given a saved state
    continues from it (Ray Train restarts a failed worker group from its last checkpoint).
    """
    with audit_record() as record:
        result = _final_run(spec, teacher_state, rank, world_size, device, wrap_model, checkpointing, record)
    return {**result, **audit_columns(record)}


def _final_run(spec: RunSpec, teacher_state: bytes | None, rank: int, world_size: int, device: torch.device | None,
               wrap_model: Callable[[nn.Module], nn.Module] | None, checkpointing: Checkpointing | None,
               record: AuditRecord) -> dict[str, Any]:
    discover_methods()  # in a fresh Ray Train worker: plugin datasets are registered before they are looked up
    bench, settings = spec.benchmark, spec.benchmark.evaluation
    access = DataAccess(bench.dataset, "final", scenario=bench.scenario, split_seed=spec.split_seed,
                        calibration_size=settings.calibration_size, shared=spec.data)
    device = device or pick_device()
    teacher = load_teacher(bench, access.info, teacher_state, device)
    train_data = access.split("train")
    continual = rank == 0 and bench.scenario is not None and bench.scenario.continual is not None
    trained = _train_method(spec, train_data, access.info, bench.budget, device, teacher,
                            wrap_model=wrap_model, rank=rank, world_size=world_size, checkpointing=checkpointing,
                            on_task_end=_snapshot_after_task if continual else None)
    record.raise_if_broken()  # a refused read the method caught fails the run all the same
    test = access.split("test") if rank == 0 else None
    model, stats = trained.model, trained.stats
    result: dict[str, Any] = {"train/samples_seen": float(stats.samples_seen), "train/steps": float(stats.steps),
                              "train/resumed_from_epoch": float(stats.resumed_from_epoch),
                              "train/wall_s": stats.wall_s, "train/epochs": stats.epochs_completed,
                              "train/final_loss": stats.last_loss,
                              "train/flops": trained.flops, **stats.engine_modes}
    if access.scenario_record:
        result["scenario_record"] = json.dumps(access.scenario_record, sort_keys=True)
    if continual:
        assert test is not None
        stream = training_stream(bench, train_data, access.info)
        result.update(continual_scores(task_accuracy_matrix(stats.task_results, test, stream, device)))
    if test is not None:
        calibration = access.split("calibration") if settings.calibration_size else None
        start = time.perf_counter()
        inputs = EvalInputs(model=model.eval(), images=test.images, labels=test.labels, device=device,
                            settings=settings, num_classes=access.info.num_classes,
                            stochastic=method_info(spec).stochastic,
                            val_images=calibration.images if calibration else None,
                            val_labels=calibration.labels if calibration else None,
                            ood_sets=ood_datasets(settings.ood_sets, spec.data) if "ood" in spec.metrics else {})
        result.update(evaluate(inputs, spec.metrics))
        result["eval/wall_s"] = time.perf_counter() - start
    result["splits_read"] = ",".join(access.splits_read)
    return result


def _snapshot_after_task(task: int, model: nn.Module) -> nn.Module:
    """A copy of the model as it ends each task, measured on test once training is done (a metric, never a
    training or selection signal; the test split is not in the process while the method runs)."""
    return copy.deepcopy(model)


def task_accuracy_matrix(snapshots: list[nn.Module], test: ImageArrays, stream: ImageArrays | TaskStream,
                         device: torch.device) -> list[list[float]]:
    """Row t holds a[t][0..t]: the test accuracy, on each task seen so far, of the model as it ended task t."""
    assert isinstance(stream, TaskStream)
    return [task_accuracies(predict_logits(snapshot.to(device), test, device=device), test.labels, stream.classes,
                            task) for task, snapshot in enumerate(snapshots)]


def method_info(spec: RunSpec) -> MethodInfo:
    from harness.method import METHODS

    discover_methods()
    return METHODS.get(spec.method.name).info


def ood_datasets(names: tuple[str, ...], shared: SplitHandles | None = None) -> dict[str, torch.Tensor]:
    """Test images of the registered datasets named as OOD sets (synthetic sets are made by the metric),
    mapped from `shared` when it carries them, else read from the files.

    The suite check has made sure each has the benchmark's channels and image size. Reading another
    dataset's test split in the final phase is legitimate: it is never a training or selection signal.
    """
    from harness.data import DATASETS, load_split

    def images(name: str) -> torch.Tensor:
        mapped = shared.fetch(name, "test") if shared is not None else None
        return (mapped if mapped is not None else load_split(name, "test")).images

    return {name: images(name) for name in names if name in DATASETS}
