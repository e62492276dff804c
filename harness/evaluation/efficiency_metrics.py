"""The cost metrics `params`, `flops`, `latency`, `throughput`, `memory` and `compression`, with their protocol
on the row.

A cost number is only comparable with the conditions it was measured under, so each group records them as
columns beside the numbers (codes decode with `efficiency.code_name`):

- `model/params`; `model/fwd_flops_2xmac_per_image`: 2 FLOPs per multiply-add, one image (training FLOPs
  are `train/flops`, computed by the run from this);
- `latency/cpu_b1_{median,p95}_ms` and `latency/cpu_bn_{median,p95}_ms`: wall ms of one forward call at
  batch 1 and at batch `latency/batch_n`, always on CPU (a GPU-evaluated model is copied there) so every
  row of a study is timed alike; with `latency/{threads,warmup,iters,device_code,dtype_code}`;
- `throughput/images_per_s` at `throughput/batch_size` on the evaluation device, with
  `throughput/{warmup,iters,threads,device_code,dtype_code}`;
- `memory/peak_bytes`: what one forward pass of the throughput batch adds to the memory already in use,
  on the evaluation device; `memory/kind_code` says how it was measured (see `efficiency`), and
  `memory/batch_size`;
- `model/nonzero_params`, `model/sparsity` (zero conv/linear weights), `model/sparse_flops` (forward FLOPs
  per image if a sparse kernel skipped every zero weight's multiply-adds and nothing else) and
  `model/weight_bytes` (nonzero conv/linear weights at each layer's `weight_bits`, default 32): what a
  pruned or quantised model saves (see `efficiency.sparse_forward_flops` and `efficiency.weight_bytes`).
"""

from __future__ import annotations

import torch

from harness.columns import Column
from harness.evaluation import efficiency
from harness.evaluation.metrics import EvalCache, EvalInputs, as_float01, metric

# A handful of big batches: enough to amortise one-off costs without dominating the evaluation time.
THROUGHPUT_WARMUP, THROUGHPUT_ITERS = 2, 5
MEMORY_REPEATS = 3  # the least of three peaks: another thread's allocation only ever adds


def repeated_batch(inputs: EvalInputs, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The first `size` test images as floats on `device`, the split repeated if it is smaller."""
    indices = torch.arange(size) % inputs.images.shape[0]
    return as_float01(inputs.images[indices], device, dtype)


@metric("params", "Number of parameters, trainable and frozen.", Column("model/params", "lower", "count"))
def _params(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    return {"model/params": float(efficiency.parameter_count(inputs.model))}


@metric(
    "flops",
    "Forward FLOPs for one image (2 per multiply-add, FlopCounterMode).",
    Column("model/fwd_flops_2xmac_per_image", "lower", "FLOPs"),
)
def _flops(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    flops = efficiency.forward_flops(inputs.model, tuple(inputs.images.shape[1:]))
    return {"model/fwd_flops_2xmac_per_image": float(flops)}


@metric(
    "latency",
    "CPU forward latency at batch 1 and at batch `latency_batch` after warm-up: median and p95 over timed "
    "calls, with threads, warm-up, iterations, device and dtype.",
    Column("latency/cpu_b1_median_ms", "lower", "ms"), Column("latency/cpu_b1_p95_ms", "lower", "ms"),
    Column("latency/cpu_bn_median_ms", "lower", "ms", "detail"), Column("latency/cpu_bn_p95_ms", "lower", "ms", "detail"),
    # the conditions of the measurement have no better side; "lower" is how the dashboards always showed them
    *(Column(f"latency/{name}", "lower", "count") for name in ("batch_n", "threads", "warmup", "iters")),
    Column("latency/device_code", "lower", "code"), Column("latency/dtype_code", "lower", "code"),
)  # fmt: skip
def _latency(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    settings, cpu = inputs.settings, torch.device("cpu")
    model = efficiency.on_cpu(inputs.model)
    dtype = efficiency.model_float_dtype(model)
    columns: dict[str, float] = {}
    for label, size in (("b1", 1), ("bn", settings.latency_batch)):
        timings = efficiency.latency_ms(
            model, repeated_batch(inputs, size, cpu, dtype), warmup=settings.latency_warmup,
            iters=settings.latency_iters,
        )  # fmt: skip
        median, p95 = efficiency.median_and_p95(timings)
        columns |= {f"latency/cpu_{label}_median_ms": median, f"latency/cpu_{label}_p95_ms": p95}
    return columns | {
        "latency/batch_n": float(settings.latency_batch),
        "latency/threads": float(torch.get_num_threads()),
        "latency/warmup": float(settings.latency_warmup),
        "latency/iters": float(settings.latency_iters),
        "latency/device_code": float(efficiency.device_code(cpu)),
        "latency/dtype_code": float(efficiency.dtype_code(dtype)),
    }


@metric(
    "throughput",
    "Forward images per second on the evaluation device at `throughput_batch`, with the conditions.",
    Column("throughput/images_per_s", "higher", "images/s"),
    *(Column(f"throughput/{name}", "higher", "count") for name in ("batch_size", "warmup", "iters", "threads")),
    Column("throughput/device_code", "higher", "code"), Column("throughput/dtype_code", "higher", "code"),
)  # fmt: skip
def _throughput(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    batch_size, dtype = inputs.settings.throughput_batch, efficiency.model_float_dtype(inputs.model)
    batch = repeated_batch(inputs, batch_size, inputs.device, dtype)
    rate = efficiency.images_per_second(inputs.model, batch, warmup=THROUGHPUT_WARMUP, iters=THROUGHPUT_ITERS)
    return {
        "throughput/images_per_s": rate,
        "throughput/batch_size": float(batch_size),
        "throughput/warmup": float(THROUGHPUT_WARMUP),
        "throughput/iters": float(THROUGHPUT_ITERS),
        "throughput/threads": float(torch.get_num_threads()),
        "throughput/device_code": float(efficiency.device_code(inputs.device)),
        "throughput/dtype_code": float(efficiency.dtype_code(dtype)),
    }


@metric(
    "memory",
    "Peak memory one forward pass of the throughput batch adds on the evaluation device: CUDA allocator "
    "peak growth on GPU, peak resident-set growth on CPU (memory/kind_code says which; NaN if unavailable).",
    Column("memory/peak_bytes", "lower", "bytes"), Column("memory/kind_code", "lower", "code"),
    Column("memory/batch_size", "lower", "count"),
)  # fmt: skip
def _memory(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    batch_size = inputs.settings.throughput_batch
    batch = repeated_batch(inputs, batch_size, inputs.device, efficiency.model_float_dtype(inputs.model))
    peak, kind = efficiency.forward_peak_memory(inputs.model, batch, repeats=MEMORY_REPEATS)
    return {
        "memory/peak_bytes": peak,
        "memory/kind_code": float(efficiency.MEMORY_KINDS[kind]),
        "memory/batch_size": float(batch_size),
    }


@metric(
    "compression",
    "What pruning and quantisation saved: nonzero parameters, the fraction of zero conv/linear weights, "
    "forward FLOPs per image with each conv/linear layer scaled by its weight density (an ideal sparse "
    "kernel), and the bytes of the nonzero conv/linear weights at each layer's `weight_bits` (default 32).",
    Column("model/nonzero_params", "lower", "count"), Column("model/sparsity", "higher", "fraction"),
    Column("model/sparse_flops", "lower", "FLOPs"), Column("model/weight_bytes", "lower", "bytes"),
)  # fmt: skip
def _compression(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    model = inputs.model
    return {
        "model/nonzero_params": float(efficiency.nonzero_parameter_count(model)),
        "model/sparsity": efficiency.weight_sparsity(model),
        "model/sparse_flops": efficiency.sparse_forward_flops(model, tuple(inputs.images.shape[1:])),
        "model/weight_bytes": efficiency.weight_bytes(model),
    }
