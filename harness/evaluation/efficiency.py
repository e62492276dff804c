"""Model cost measures: parameters, forward FLOPs, CPU latency and device throughput.

FLOPs and parameters are exact properties of the architecture; latency and throughput are
measurements, so they run after a warm-up, report order statistics, and record the conditions
(threads, iterations, batch) next to the numbers (FLOPs do not predict latency: HFP, P14).
Every function leaves the caller's model as it found it.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(model: torch.nn.Module) -> int:
    """Every parameter, trainable or frozen (buffers such as BatchNorm statistics excluded)."""
    return sum(parameter.numel() for parameter in model.parameters())


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the first parameter or buffer; CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype inputs should have: that of the first floating-point parameter, else float32."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put the model in eval mode and restore its previous train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for ONE example of shape `input_shape` (no batch dimension, e.g. (3, 224, 224)).

    Counted by `torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-add
    and ignores bias additions, normalisation and activations.
    """
    example = torch.zeros((1, *input_shape), device=model_device(model), dtype=model_float_dtype(model))
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_latency_ms(model: torch.nn.Module, example: torch.Tensor, *, warmup: int, iters: int) -> list[float]:
    """Wall milliseconds of each of `iters` batch-1 forward calls on CPU, after `warmup` untimed calls.

    A model on another device is copied to CPU; the caller's model is never moved.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    cpu = torch.device("cpu")
    cpu_model = model if model_device(model) == cpu else copy.deepcopy(model).to(cpu)
    example = example[:1].to(cpu, dtype=model_float_dtype(cpu_model))
    timings = []
    with eval_mode(cpu_model), torch.no_grad():
        for _ in range(warmup):
            cpu_model(example)
        for _ in range(iters):
            start = time.perf_counter()
            cpu_model(example)
            timings.append((time.perf_counter() - start) * 1e3)
    return timings


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, *, warmup: int, iters: int) -> float:
    """Forward throughput on the model's device for `batch` (already on that device and dtype)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    device = batch.device
    with eval_mode(model), torch.no_grad():
        for _ in range(warmup):
            model(batch)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(batch)
        _synchronize(device)
        elapsed = time.perf_counter() - start
    return batch.shape[0] * iters / elapsed
