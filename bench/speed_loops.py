"""The two loops the engine-speed benches race: a hand-written PyTorch loop and `harness.engine.train`.

Both train the same model on the same uint8 arrays already on the device (a batch is a gather there),
with SGD-Nesterov, no weight decay on 1-d parameters and a warm-up-cosine schedule, in one of the
engine's speed modes (`Modes`). The plain loop applies a mode by hand (autocast, `.to(channels_last)`,
`torch.compile`), so engine(mode) / plain(mode) is what the engine's own code costs and
engine(mode) / plain(fp32 eager) what the mode buys. Each timing runs a warm-up call first (kernels,
allocator, a compile) and reports it apart; the steps are timed as the difference of two warm calls.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import ImageArrays
from harness.engine import train
from harness.method import Method
from harness.train_settings import SpeedSpec, TrainSettings


@dataclass(frozen=True)
class Modes:
    """One combination of the engine's speed modes, as the benches name it."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, text: str) -> Modes:
        """`fp32` (none), or modes joined by `+`: `bf16+channels_last+compile`."""
        parts = {part for part in text.split("+") if part and part != "fp32"}
        unknown = parts - {"bf16", "channels_last", "compile"}
        if unknown:
            raise ValueError(f"unknown mode(s) {', '.join(sorted(unknown))} in {text!r}; known: fp32, bf16, "
                             "channels_last, compile, joined by '+'")
        return cls(bf16="bf16" in parts, channels_last="channels_last" in parts, compile="compile" in parts)

    @property
    def label(self) -> str:
        return "+".join(name for name in ("bf16", "channels_last", "compile") if getattr(self, name)) or "fp32"

    def speed(self) -> SpeedSpec:
        """The suite's `train.speed` block that asks the engine for exactly these modes."""
        return SpeedSpec(**{name: "on" if getattr(self, name) else "off"
                            for name in ("bf16", "channels_last", "compile")})


@dataclass(frozen=True)
class Recipe:
    """The optimiser and schedule both loops use."""

    batch_size: int
    steps: int
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.05
    seed: int = 0

    def settings(self, modes: Modes) -> TrainSettings:
        return TrainSettings(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                             batch_size=self.batch_size, warmup_fraction=self.warmup_fraction, steps=self.steps,
                             seed=self.seed, speed=modes.speed())


@dataclass
class Timed:
    """One timed training call: its wall seconds, steps, last loss, and the warm-up call before it."""

    wall_s: float
    steps: int
    final_loss: float
    warmup_s: float
    engine_modes: dict | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _factor(step: int, total: int, warmup_fraction: float) -> float:
    warmup = max(1, round(total * warmup_fraction)) if warmup_fraction > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def plain_train(model: nn.Module, data: ImageArrays, recipe: Recipe, modes: Modes, device: torch.device) -> float:
    """The hand-written loop, in place on `model`; returns the last batch loss (read once, at the end)."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    if modes.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    forward = torch.compile(model) if modes.compile else model
    per_epoch = len(data) // recipe.batch_size
    step, loss = 0, torch.zeros((), device=device)
    while step < recipe.steps:
        order = torch.randperm(len(data), generator=generator).to(device)
        for first in range(0, min(per_epoch, recipe.steps - step) * recipe.batch_size, recipe.batch_size):
            index = order[first:first + recipe.batch_size]
            images, labels = data.images[index].float().div_(255.0), data.labels[index]
            if modes.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * _factor(step, recipe.steps, recipe.warmup_fraction)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=modes.bf16):
                loss = F.cross_entropy(forward(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return float(loss.detach())


def engine_train(model: nn.Module, data: ImageArrays, recipe: Recipe, modes: Modes,
                 device: torch.device) -> tuple[float, dict]:
    """`harness.engine.train` with the plain ERM `Method()`, asking for exactly `modes`."""
    stats = train(model, Method(), data, recipe.settings(modes), num_classes=int(data.labels.max()) + 1,
                  augment=None, device=device)
    return stats.last_loss, stats.engine_modes


def timed(run: Callable[[nn.Module, Recipe], object], model: nn.Module, recipe: Recipe, warmup_steps: int,
          device: torch.device) -> Timed:
    """A cold call of `warmup_steps` (kernels, allocator, a compile: reported as the warm-up), then warm calls
    of `warmup_steps` and of `warmup_steps + recipe.steps`, each on a fresh copy of `model`: their difference
    is what `recipe.steps` steps cost, without the fixed cost of a call (building the optimiser, the FLOPs
    meter's one probe of the model), which both loops pay once per run."""

    def call(steps: int) -> tuple[float, object]:
        start = time.perf_counter()
        result = run(copy.deepcopy(model), Recipe(**{**recipe.__dict__, "steps": steps}))
        _sync(device)
        return time.perf_counter() - start, result

    torch._dynamo.reset()  # each loop's cold call compiles for itself (Inductor's on-disk cache still helps)
    cold, _ = call(warmup_steps)
    short, _ = call(warmup_steps)
    long, result = call(warmup_steps + recipe.steps)
    loss, modes = result if isinstance(result, tuple) else (result, None)
    return Timed(max(long - short, 1e-9), recipe.steps, float(loss), cold, modes)


def time_plain(model: nn.Module, data: ImageArrays, recipe: Recipe, modes: Modes, device: torch.device,
               warmup_steps: int) -> Timed:
    return timed(lambda m, r: plain_train(m, data, r, modes, device), model, recipe, warmup_steps, device)


def time_engine(model: nn.Module, data: ImageArrays, recipe: Recipe, modes: Modes, device: torch.device,
                warmup_steps: int) -> Timed:
    return timed(lambda m, r: engine_train(m, data, r, modes, device), model, recipe, warmup_steps, device)


def on_device(data: ImageArrays, device: torch.device) -> ImageArrays:
    """The arrays moved to the device once (the plain loop gathers its batches there, as the engine does)."""
    return ImageArrays(data.images.to(device), data.labels.to(device))
