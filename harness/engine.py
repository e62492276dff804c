"""The training engine: one loop for every method. It owns the optimiser, schedule, devices,
precision, seeding and counters; the method only computes the loss (see `harness.method`)."""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.compute import ComputeMeter, module_attributes
from harness.data import BatchAugment, ImageArrays, iterate_batches, num_batches
from harness.data.tasks import TaskStream
from harness.engine_modes import CompiledForward, DeviceSupport, EngineModes, resolve_modes
from harness.method import Batch, Method, TrainContext
from harness.train_settings import TrainSettings


@dataclass
class TrainStats:
    steps: int = 0
    samples_seen: int = 0
    epochs_completed: float = 0.0
    wall_s: float = 0.0
    last_loss: float = float("nan")
    resumed_from_epoch: int = -1  # the epoch a checkpoint restored, or -1 for an uninterrupted run
    flops: float = 0.0  # training FLOPs of every worker, counted from the passes that ran (`harness.compute`)
    task_results: list[Any] = dataclasses.field(default_factory=list)  # on_task_end's value per finished task
    engine_modes: dict[str, Any] = dataclasses.field(default_factory=dict)  # `EngineModes.columns()`: what ran


EpochCallback = Callable[[int, TrainStats, nn.Module], bool | None]  # (epoch, stats, plain model); True stops


@dataclass(frozen=True)
class Checkpointing:
    """Save the loop's whole state every `every_epochs` epochs, and optionally continue from a saved one.

    The state holds the model, optimiser, schedule, the data-order generator, torch's RNG, the counters
    and the epoch, so a resumed run continues exactly where the saved one was: on CPU the result is
    bit-identical to a run that was never interrupted.
    """

    every_epochs: int
    save: Callable[[dict[str, Any]], None]
    resume: dict[str, Any] | None = None


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}  # a snapshot, never aliased


def engine_state(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator,
                 stats: TrainStats, epoch: int, method: Method | None = None,
                 auxiliary: Sequence[nn.Module] = ()) -> dict[str, Any]:
    """Everything `train` needs to continue after `epoch` (tensors on CPU, picklable)."""
    return {"model": _cpu_state(_inner(model)), "auxiliary": [_cpu_state(m) for m in auxiliary],
            "method": method.state_dict() if method is not None else {},
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "stats": dataclasses.asdict(stats), "epoch": epoch}


def restore_engine_state(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                         schedule: Any, generator: torch.Generator, method: Method | None = None,
                         auxiliary: Sequence[nn.Module] = ()) -> tuple[TrainStats, int]:
    _inner(model).load_state_dict(state["model"])
    for module, saved in zip(auxiliary, state.get("auxiliary", ()), strict=True):
        module.load_state_dict(saved)
    if method is not None:
        method.load_state_dict(state.get("method", {}))
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return TrainStats(**state["stats"]), int(state["epoch"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(prefer: str = "auto") -> torch.device:
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(prefer)


def build_optimizer(model: nn.Module, settings: TrainSettings,
                    auxiliary: Sequence[nn.Module] = ()) -> torch.optim.Optimizer:
    """SGD-momentum or AdamW over the model and any auxiliary modules; no weight decay on norm
    parameters and biases (1-d tensors)."""
    parameters = [p for module in (model, *auxiliary) for p in module.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.ndim > 1]
    no_decay = [p for p in parameters if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}; known: sgd, adamw")


def task_bounds(total_steps: int, num_tasks: int) -> list[int]:
    """The step at which each task of a stream starts, then the total: the budget is shared equally."""
    return [round(total_steps * task / num_tasks) for task in range(num_tasks + 1)]


def task_at(step: int, bounds: Sequence[int]) -> int:
    """The task that `step` falls in, for `bounds` from `task_bounds` (the last task past the total)."""
    return min(max(bisect.bisect_right(bounds, step) - 1, 0), len(bounds) - 2)


def per_task_warmup_cosine(total_steps: int, num_tasks: int, warmup_fraction: float) -> Callable[[int], float]:
    """`warmup_cosine` restarted at each task's first step, over that task's share of the steps
    (`task_bounds`), so no task trains at the spent end of one long decay."""
    bounds = task_bounds(total_steps, num_tasks)
    segments = [warmup_cosine(stop - start, warmup_fraction) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]

    def factor(step: int) -> float:
        task = task_at(step, bounds)
        return segments[task](step - bounds[task])

    return factor


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at `total_steps`."""
    warmup = max(1, int(round(total_steps * warmup_fraction))) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast_for(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; disabled (fp32) on CPU, where bf16 convolutions are slow."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


TaskEndCallback = Callable[[int, nn.Module], Any]  # (task, model) -> a value kept in stats.task_results


def train(
    model: nn.Module,
    method: Method,
    data: ImageArrays | TaskStream,
    settings: TrainSettings,
    *,
    num_classes: int,
    augment: BatchAugment | None = None,
    device: torch.device | None = None,
    context: TrainContext | None = None,
    on_epoch_end: EpochCallback | None = None,
    on_task_end: TaskEndCallback | None = None,
    rank: int = 0,
    world_size: int = 1,
    checkpointing: Checkpointing | None = None,
) -> TrainStats:
    """Train `model` in place with `method`; return counters. Deterministic for a seed on CPU.

    `data` is one training split, or a `TaskStream` trained task after task (continual learning):
    the step budget, counted on all tasks' examples, is shared equally between tasks, and each task
    runs epochs over its own examples. The method's hooks run here, in this order: `lr_schedule` once;
    per step `candidate_batches`/`select_batch`, `training_loss`, the optimiser step, `after_step`;
    `on_task_end` at the end of each task (then the caller's `on_task_end`, whose value is kept).
    `context` holds the run's fixed facts (teacher, seed, input shape, build_model: what `prepare_model`
    saw); the engine sets the per-step fields of the context every hook gets (see `TrainContext`).
    """
    device = device or pick_device()
    generator = seed_everything(settings.seed)
    stream = _on_device(data if isinstance(data, TaskStream) else TaskStream((data,), ((),)), device)
    total = settings.total_steps(len(data), world_size)
    modes = resolve_modes(settings.speed, device, DeviceSupport.probe(device), total)
    if modes.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device).train()
    run = dataclasses.replace(context or TrainContext(step=0, total_steps=total, epoch=0, num_classes=num_classes,
                                                      device=device, seed=settings.seed, num_samples=len(data)),
                              step=0, total_steps=total, epoch=0, num_classes=num_classes, device=device,
                              seed=settings.seed, generator=generator, num_tasks=stream.num_tasks,
                              model=_inner(model))
    auxiliary = [module.to(device).train() for module in method.auxiliary_modules(run)]
    optimizer = build_optimizer(model, settings, auxiliary)
    default = (per_task_warmup_cosine(total, stream.num_tasks, settings.warmup_fraction)
               if settings.schedule == "per_task" else warmup_cosine(total, settings.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, method.lr_schedule(default, run))
    loop = _Loop(model, method, auxiliary, optimizer, schedule, settings, generator, device, world_size, stream,
                 total, run, modes)
    if modes.compile:
        loop.forward = CompiledForward(model, loop.fall_back)
    if checkpointing is not None and checkpointing.resume is not None:
        loop.stats, loop.epoch = restore_engine_state(checkpointing.resume, model, optimizer, schedule, generator,
                                                      method, auxiliary)
        loop.stats.resumed_from_epoch = loop.epoch
    loop.stats.engine_modes = modes.columns()
    try:
        return _run_loop(loop, data, rank, augment, on_epoch_end, on_task_end, checkpointing)
    finally:
        if loop.modes.channels_last and device.type == "cpu":
            model.to(memory_format=torch.contiguous_format)  # evaluation then runs the plain loop's kernels


def _on_device(stream: TaskStream, device: torch.device) -> TaskStream:
    """The tasks' arrays moved to `device` once, so each batch is a gather there, not a host copy (on CPU:
    the same tensors)."""
    return TaskStream(tuple(ImageArrays(task.images.to(device), task.labels.to(device)) for task in stream.tasks),
                      stream.classes)


def _run_loop(loop: _Loop, data: ImageArrays | TaskStream, rank: int, augment: BatchAugment | None,
              on_epoch_end: EpochCallback | None, on_task_end: TaskEndCallback | None,
              checkpointing: Checkpointing | None) -> TrainStats:
    """`train`'s epochs over the tasks, with its callbacks and checkpoints."""
    model, method, settings, generator, device = loop.model, loop.method, loop.settings, loop.generator, loop.device
    stream, total, world_size = loop.stream, loop.total, loop.world_size
    stats = loop.stats
    start = time.perf_counter() - stats.wall_s
    local_batch = settings.batch_size // world_size
    per_epoch = max(1, num_batches(len(data), local_batch, drop_last=True, world_size=world_size))
    for task, task_data in enumerate(stream.tasks):
        while stats.steps < loop.task_end(task):
            batches = _keeping_unaugmented(iterate_batches(task_data, local_batch, device=device, shuffle=True,
                                                           generator=generator, drop_last=True, rank=rank,
                                                           world_size=world_size), augment, generator)
            stats.last_loss = loop.epoch_of(task, batches)
            loop.epoch += 1
            if not math.isfinite(stats.last_loss):
                raise FloatingPointError(f"training loss became {stats.last_loss} at step {stats.steps}")
            stats.epochs_completed = stats.steps / per_epoch
            if stats.steps >= loop.task_end(task) and stream.num_tasks > 1:
                loop.end_task(task, on_task_end)
            stats.wall_s = time.perf_counter() - start
            if on_epoch_end is not None and on_epoch_end(loop.epoch, stats, _inner(model)):
                model.eval()
                return stats
            if checkpointing is not None and stats.steps < total and loop.epoch % checkpointing.every_epochs == 0:
                checkpointing.save(engine_state(model, loop.optimizer, loop.schedule, generator, stats, loop.epoch,
                                                method, loop.auxiliary))
    stats.wall_s = time.perf_counter() - start
    model.eval()
    return stats


@dataclass
class _Loop:
    """The state of one `train` call, and the step it repeats."""

    model: nn.Module
    method: Method
    auxiliary: list[nn.Module]
    optimizer: torch.optim.Optimizer
    schedule: Any
    settings: TrainSettings
    generator: torch.Generator
    device: torch.device
    world_size: int
    stream: TaskStream
    total: int
    run: TrainContext  # the run's context; each step's is this one with the step's fields set
    modes: EngineModes = EngineModes()
    forward: nn.Module | None = None  # what `training_loss` trains through: the model, or its compiled forward
    stats: TrainStats = dataclasses.field(default_factory=TrainStats)
    epoch: int = 0
    meter: ComputeMeter = dataclasses.field(default_factory=ComputeMeter)
    bounds: list[int] = dataclasses.field(init=False)  # each task's first step, then the total

    def __post_init__(self) -> None:
        self.bounds = task_bounds(self.total, self.stream.num_tasks)

    def fall_back(self, reason: str) -> None:
        """A compile failed: train eager from now on, and say so on the row."""
        self.modes = self.modes.with_fallback(reason, compile=False)
        self.stats.engine_modes = self.modes.columns()

    def metered(self) -> ComputeMeter:
        """The meter, watching every module the method may run now (it may have built one since)."""
        self.meter.watch([_inner(self.model), self.run.teacher, *self.auxiliary, *module_attributes(self.method)])
        return self.meter

    def task_end(self, task: int) -> int:
        """The step count at which `task` ends: the budget is shared equally between the tasks."""
        return self.bounds[task + 1]

    def context(self, task: int) -> TrainContext:
        stream = self.stream
        return dataclasses.replace(self.run, step=self.stats.steps, epoch=self.epoch, task=task,
                                   task_classes=stream.classes[task],
                                   seen_classes=stream.seen_classes(task) if stream.classes[task] else ())

    def epoch_of(self, task: int, batches: Iterator[tuple[Batch, torch.Tensor]]) -> float:
        """Train on one pass over `batches` (or until the task's steps run out); return the last loss."""
        loss = None
        for candidates in _groups(batches, max(1, self.method.candidate_batches(self.context(task)))):
            if self.stats.steps >= self.task_end(task):
                break
            loss = self.step([batch for batch, _ in candidates], [clean for _, clean in candidates],
                             self.context(task))
        if loss is None:
            raise ValueError(f"task {task} has fewer examples ({len(self.stream.tasks[task])}) than one batch "
                             f"per worker ({self.settings.batch_size // self.world_size}); lower the batch size")
        return float(loss)

    def step(self, candidates: list[Batch], unaugmented: list[torch.Tensor], ctx: TrainContext) -> torch.Tensor:
        with self.metered().counting():
            loss = self._step(candidates, unaugmented, ctx)
        self.stats.flops += self.meter.take() * self.world_size
        return loss

    def _step(self, candidates: list[Batch], unaugmented: list[torch.Tensor], ctx: TrainContext) -> torch.Tensor:
        method = self.method
        images, labels = method.select_batch(_inner(self.model), candidates, ctx)
        picked = next((clean for (batch, _), clean in zip(candidates, unaugmented, strict=True) if batch is images),
                      None)
        ctx = dataclasses.replace(ctx, unaugmented=picked)
        if self.modes.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.modes.bf16):
            out = method.training_loss(self.forward or self.model, images, labels, ctx)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.world_size > 1 and self.auxiliary:
            _average_gradients(self.auxiliary, self.world_size)
        if self.settings.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.stats.steps += 1
        self.stats.samples_seen += labels.shape[0] * self.world_size
        with torch.no_grad():
            method.after_step(_inner(self.model), ctx)
        return out.loss.detach()

    def end_task(self, task: int, on_task_end: TaskEndCallback | None) -> None:
        """The method's task-end hook, then the caller's (its value is kept in `stats.task_results`)."""
        with torch.no_grad(), self.metered().counting():
            self.method.on_task_end(_inner(self.model), self.context(task))
        self.stats.flops += self.meter.take() * self.world_size
        with torch.no_grad():
            if self.world_size > 1:
                _broadcast_from_rank0(_inner(self.model))  # a hook's change (an aligned head) must not drift
        if on_task_end is not None:
            self.stats.task_results.append(on_task_end(task, _inner(self.model)))
        self.model.train()


def _inner(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper: what every hook but `training_loss` gets."""
    return getattr(model, "module", model)


def _keeping_unaugmented(batches: Iterator[Batch], augment: BatchAugment | None,
                         generator: torch.Generator) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Each batch, augmented, with its images as they were (what `ctx.unaugmented` shows a method).

    Crop and flip only move pixels, so augmenting the [0, 1] floats gives what augmenting the uint8 images
    gave, with the same generator draws in the same order."""
    for images, labels in batches:
        yield (augment(images, generator) if augment is not None else images, labels), images


def _groups(batches: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive groups of `size` batches (the last group may be smaller, never empty)."""
    group: list[Any] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _broadcast_from_rank0(model: nn.Module) -> None:
    """Make every worker's parameters and buffers equal to rank 0's (after a hook changed them outside DDP)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for tensor in (*model.parameters(), *model.buffers()):
            dist.broadcast(tensor.data, src=0)


def _average_gradients(modules: Sequence[nn.Module], world_size: int) -> None:
    """Average the auxiliary modules' gradients over the workers (DDP does it for the model only)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return
    for module in modules:
        for parameter in module.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad.div_(world_size)


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageArrays, *, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Logits for every image of `data`, in order, in eval mode (float32, CPU)."""
    was_training = model.training
    model.eval()
    outputs = []
    for images, _ in iterate_batches(data, batch_size, device=device, shuffle=False):
        with autocast_for(device):
            outputs.append(model(images).float().cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(model: nn.Module, data: ImageArrays, *, device: torch.device, num_classes: int | None = None) -> float:
    """Top-1 accuracy over the first `num_classes` logits (a model may add an abstain output after them)."""
    logits = predict_logits(model, data, device=device)
    return float((logits[:, :num_classes].argmax(1) == data.labels).float().mean())
