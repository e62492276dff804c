"""Model cost measures: parameters, forward FLOPs, latency, throughput and peak forward memory.

FLOPs and parameters are exact properties of the architecture; latency, throughput and memory are
measurements, so they run after a warm-up, report order statistics, and record the conditions
(device, dtype, threads, iterations, batch) next to the numbers (FLOPs do not predict latency: HFP, P14).
Every function leaves the caller's model as it found it.

Result rows hold floats only, so conditions that are names are stored as codes: `DEVICE_CODES`,
`DTYPE_CODES` and `MEMORY_KINDS` (-1 is "other" / "unavailable"); `code_name` turns one back into its name.

Peak memory is what ONE forward pass of a batch adds on top of what is already allocated (the model and
the input batch): on CUDA the allocator's peak (`torch.cuda.max_memory_allocated` after
`reset_peak_memory_stats`) minus the bytes allocated before the call; on CPU the growth of the process's
peak resident set size (Linux `VmHWM` after resetting it through `/proc/self/clear_refs`, minus `VmRSS`
before the call, with glibc's free memory returned to the OS first so reused heap pages are not missed).
The CPU figure is process-wide (other threads' allocations count), good to a fraction of a MiB (the
kernel batches its RSS counters), and resets the process's VmHWM. It counts the pages the C allocator
maps, which depends on what the process did before (fast_cnn at batch 256: 38 MiB in a fresh process,
64 MiB at the end of bench/battery.py): compare rows evaluated the same way. The CUDA figure does not.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from pydantic import Field
from torch.utils.flop_counter import FlopCounterMode

from harness.schema import Strict

DEVICE_CODES: dict[str, int] = {"cpu": 0, "cuda": 1, "mps": 2, "xpu": 3}
DTYPE_CODES: dict[str, int] = {"float32": 0, "float16": 1, "bfloat16": 2, "float64": 3}
MEMORY_KINDS: dict[str, int] = {"unavailable": -1, "cpu_rss_growth": 0, "cuda_allocated_growth": 1}
_CODE_TABLES = {"device_code": DEVICE_CODES, "dtype_code": DTYPE_CODES, "kind_code": MEMORY_KINDS}


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


def device_code(device: torch.device) -> int:
    """The row code of a device type (`DEVICE_CODES`), -1 for any other."""
    return DEVICE_CODES.get(torch.device(device).type, -1)


def dtype_code(dtype: torch.dtype) -> int:
    """The row code of a floating-point dtype (`DTYPE_CODES`), -1 for any other."""
    return DTYPE_CODES.get(str(dtype).removeprefix("torch."), -1)


def code_name(column: str, value: float) -> str:
    """The name a `*/device_code`, `*/dtype_code` or `*/kind_code` column value stands for, e.g. 'cuda'."""
    suffix = column.rpartition("/")[2]
    if suffix not in _CODE_TABLES:
        raise ValueError(f"{column!r} holds no code; coded columns end in {', '.join(sorted(_CODE_TABLES))}")
    names = {code: name for name, code in _CODE_TABLES[suffix].items()}
    return names.get(int(value), "other")


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


def on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself if it lives on CPU, else a CPU copy: the caller's model is never moved."""
    cpu = torch.device("cpu")
    return model if model_device(model) == cpu else copy.deepcopy(model).to(cpu)


def latency_ms(model: torch.nn.Module, batch: torch.Tensor, *, warmup: int, iters: int) -> list[float]:
    """Wall milliseconds of each of `iters` forward calls on `batch` (on the model's device and dtype),
    after `warmup` untimed calls; device work is waited for inside each timed call."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    timings = []
    with eval_mode(model), torch.no_grad():
        for _ in range(warmup):
            model(batch)
        _synchronize(batch.device)
        for _ in range(iters):
            start = time.perf_counter()
            model(batch)
            _synchronize(batch.device)
            timings.append((time.perf_counter() - start) * 1e3)
    return timings


def cpu_latency_ms(model: torch.nn.Module, example: torch.Tensor, *, warmup: int, iters: int) -> list[float]:
    """Batch-1 `latency_ms` on CPU (the first example of `example`); a model elsewhere is copied to CPU."""
    cpu_model = on_cpu(model)
    return latency_ms(
        cpu_model, example[:1].to("cpu", model_float_dtype(cpu_model)), warmup=warmup, iters=iters
    )


def median_and_p95(timings: list[float]) -> tuple[float, float]:
    """Median and 95th percentile (linear interpolation between order statistics)."""
    if not timings:
        raise ValueError("need at least one timing")
    quantiles = torch.tensor(timings, dtype=torch.float64).quantile(
        torch.tensor([0.5, 0.95], dtype=torch.float64)
    )
    return quantiles[0].item(), quantiles[1].item()


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


# ---------------------------------------------------------------- peak forward memory


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (another C library, another OS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    except OSError:
        return None


def _status_bytes(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"/proc/self/status has no {field}")
    return int(match.group(1)) * 1024


def _cpu_rss_growth(model: torch.nn.Module, batch: torch.Tensor) -> int | None:
    """Peak RSS during one forward call minus RSS before it; None where Linux's /proc is not there."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # freed heap pages go back to the OS, so the forward's reuse of them shows as growth
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset VmHWM to the current RSS
        before = _status_bytes("VmRSS")
    except OSError:
        return None
    model(batch)
    return _status_bytes("VmHWM") - before


def _cuda_allocated_growth(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Allocator peak during one forward call minus the bytes allocated before it."""
    torch.cuda.synchronize(batch.device)
    torch.cuda.reset_peak_memory_stats(batch.device)
    before = torch.cuda.memory_allocated(batch.device)
    model(batch)
    torch.cuda.synchronize(batch.device)
    return torch.cuda.max_memory_allocated(batch.device) - before


def forward_peak_memory(model: torch.nn.Module, batch: torch.Tensor, *, repeats: int = 3) -> tuple[float, str]:
    """(bytes, kind): the least peak growth of `repeats` forward calls on `batch`, after one warm-up call
    (one-off caches are not the forward's); kind is a `MEMORY_KINDS` name, bytes NaN when unavailable."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    measures = {"cpu": ("cpu_rss_growth", _cpu_rss_growth), "cuda": ("cuda_allocated_growth", _cuda_allocated_growth)}
    if batch.device.type not in measures:
        return math.nan, "unavailable"
    kind, measure = measures[batch.device.type]
    with eval_mode(model), torch.no_grad():
        model(batch)
        growths = [measure(model, batch) for _ in range(repeats)]
    if any(growth is None for growth in growths):
        return math.nan, "unavailable"
    return float(min(growths)), kind


# ---------------------------------------------------------------- compression (pruning, quantisation)

WEIGHT_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
DEFAULT_WEIGHT_BITS = 32


def weight_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every convolution and linear layer (subclasses included): what pruning thins."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]


def nonzero_parameter_count(model: torch.nn.Module) -> int:
    """Parameters that are not exactly zero, over every parameter `parameter_count` counts."""
    return sum(int(torch.count_nonzero(parameter.detach())) for parameter in model.parameters())


def weight_sparsity(model: torch.nn.Module) -> float:
    """Fraction of the conv/linear weights that are exactly zero (biases and norm parameters excluded)."""
    layers = weight_layers(model)
    total = sum(module.weight.numel() for _, module in layers)
    zeros = sum(module.weight.numel() - int(torch.count_nonzero(module.weight.detach())) for _, module in layers)
    return zeros / total if total else 0.0


def weight_bytes(model: torch.nn.Module) -> float:
    """Bytes to store the nonzero conv/linear weights at each layer's `weight_bits` (default 32).

    A quantised layer declares its precision by carrying a `weight_bits` attribute. Not counted: biases
    and normalisation parameters (a few floats per channel), quantisation scales, and the indices a
    sparse storage format would add.
    """
    return sum(int(torch.count_nonzero(module.weight.detach())) * getattr(module, "weight_bits", DEFAULT_WEIGHT_BITS)
               for _, module in weight_layers(model)) / 8.0


def sparse_forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """`forward_flops` with each conv/linear layer's FLOPs scaled by the density of its weight.

    What a sparse kernel would execute if it skipped every multiply-add with a zero weight and nothing
    else (no indexing overhead, zero activations not exploited); every other operation is counted dense.
    Each layer's dense FLOPs are measured by the same `FlopCounterMode` pass that gives the total.
    """
    layers = weight_layers(model)
    per_layer: dict[str, float] = {}
    started: dict[str, float] = {}
    example = torch.zeros((1, *input_shape), device=model_device(model), dtype=model_float_dtype(model))
    with FlopCounterMode(display=False) as counter:
        handles = []
        for name, module in layers:
            handles.append(module.register_forward_pre_hook(
                lambda _m, _i, name=name: started.__setitem__(name, counter.get_total_flops())))
            handles.append(module.register_forward_hook(
                lambda _m, _i, _o, name=name: per_layer.__setitem__(
                    name, per_layer.get(name, 0.0) + counter.get_total_flops() - started[name])))
        try:
            with eval_mode(model), torch.no_grad():
                model(example)
        finally:
            for handle in handles:
                handle.remove()
        total = float(counter.get_total_flops())
    for name, module in layers:
        weight = module.weight.detach()
        density = int(torch.count_nonzero(weight)) / max(1, weight.numel())
        total -= per_layer.get(name, 0.0) * (1.0 - density)
    return total


class EfficiencySettings(Strict):
    """The cost family's part of `EvaluationSettings`: how `latency` and `throughput` are timed."""


    latency_warmup: int = Field(
        10, ge=0, description="Untimed CPU forward calls before latency timing, at each latency batch size."
    )
    latency_iters: int = Field(
        50, ge=1, description="Timed CPU forward calls at batch 1 and at latency_batch; median and p95 are reported."
    )
    latency_batch: int = Field(
        64, ge=1, description="The larger batch size of the latency metric (columns latency/cpu_bn_*)."
    )
    throughput_batch: int = Field(
        256, ge=1, description="Batch size of the throughput measurement on the eval device."
    )
