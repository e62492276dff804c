"""The metric registry and `evaluate`: one call turns a trained model and the test split into columns.

Each metric is a small registered function of (inputs, cache) returning `split/metric` columns, so a
suite selects metrics by name and a new metric is one decorated function. The shared `EvalCache`
runs the clean forward pass once for every metric that needs clean logits; everything random is
drawn from CPU generators seeded by `EvaluationSettings.seed`, so two models evaluated with the same
settings see the same noise, the same attack subset and the same random starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pydantic
import torch
from pydantic import Field

from harness.evaluation import calibration, efficiency
from harness.evaluation.attacks import default_pgd_step_size, pgd_linf
from harness.registry import Registry


class EvaluationSettings(pydantic.BaseModel):
    """How the final evaluation is run; embedded in the suite schema, so field names are stable."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(1000, ge=1, description="Examples per forward pass during evaluation.")
    pgd_epsilon: float = Field(
        0.1, ge=0.0, le=1.0, description="L-inf radius of the PGD attack, in [0,1] pixel units."
    )
    pgd_steps: int = Field(10, ge=1, description="Number of PGD steps.")
    pgd_step_size: float | None = Field(
        None,
        gt=0.0,
        description="PGD step size in [0,1] pixel units; None means 2.5*epsilon/steps (Madry et al.).",
    )
    robust_subset: int = Field(
        1000,
        ge=1,
        description="Number of test examples attacked: the first n of a seeded, class-balanced random order "
        "(the same examples for every model with the same seed).",
    )
    noise_std: float = Field(
        0.1,
        ge=0.0,
        description="Std of the Gaussian noise corruption in [0,1] pixel units (result clipped to [0,1]).",
    )
    ece_bins: int = Field(
        15, ge=1, description="Equal-width confidence bins of the expected calibration error."
    )
    latency_warmup: int = Field(
        10, ge=0, description="Untimed batch-1 CPU forward calls before latency timing."
    )
    latency_iters: int = Field(
        50, ge=1, description="Timed batch-1 CPU forward calls; median and p95 are reported."
    )
    throughput_batch: int = Field(
        256, ge=1, description="Batch size of the throughput measurement on the eval device."
    )
    seed: int = Field(0, ge=0, description="Seed of the attack subset, PGD random starts and Gaussian noise.")


@dataclass
class EvalInputs:
    """What a metric may look at: the model, the test split as uint8 images, and the settings."""

    model: torch.nn.Module  # in eval mode, on `device`; takes float [B,C,H,W] in [0,1], returns logits [B,K]
    images: torch.Tensor  # uint8 [N,C,H,W], CPU
    labels: torch.Tensor  # int64 [N], CPU
    device: torch.device
    settings: EvaluationSettings
    split: str = "test"  # prefix of the split-level columns

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] == 0:
            raise ValueError("evaluation needs at least one example")
        if not self.split or "/" in self.split:
            raise ValueError(f"split must be a non-empty name without '/', got {self.split!r}")
        self.device = torch.device(self.device)


def as_float01(
    images: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 images -> floats in [0,1] on `device` (converted after the copy, which moves 4x fewer bytes)."""
    return images.to(device, non_blocking=True).to(dtype).div_(255)


def iterate_batches(
    inputs: EvalInputs, indices: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float images in [0,1], labels) on the eval device, `settings.batch_size` at a time."""
    dtype = efficiency.model_float_dtype(inputs.model)
    images, labels = inputs.images, inputs.labels
    if indices is not None:
        images, labels = images[indices], labels[indices]
    for start in range(0, labels.shape[0], inputs.settings.batch_size):
        stop = start + inputs.settings.batch_size
        yield as_float01(images[start:stop], inputs.device, dtype), labels[start:stop].to(inputs.device)


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one named random stream, so metrics do not share random numbers."""
    return torch.Generator().manual_seed(seed + 1_000_003 * stream)


def robust_subset_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The first `size` indices of a seeded class-balanced order: a random permutation re-sorted by each
    example's rank within its class, so any prefix has per-class counts within one of each other
    (as far as class sizes allow). Depends only on the labels and the seed, never on the model."""
    labels = labels.cpu()
    order = torch.randperm(labels.shape[0], generator=seeded_generator(seed, stream=0))
    shuffled = labels[order]
    by_class = torch.sort(shuffled, stable=True).indices
    _, counts = torch.unique_consecutive(shuffled[by_class], return_counts=True)
    class_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(by_class)
    rank[by_class] = torch.arange(labels.shape[0]) - class_start
    return order[torch.sort(rank, stable=True).indices[:size]]


class EvalCache:
    """Per-`evaluate` memo of work several metrics share; the first metric to ask pays for it."""

    def __init__(self, inputs: EvalInputs) -> None:
        self._inputs = inputs
        self._clean_logits: torch.Tensor | None = None

    def clean_logits(self) -> torch.Tensor:
        """float32 logits [N,K] of the unperturbed test images, on CPU."""
        if self._clean_logits is None:
            with torch.no_grad():
                chunks = [
                    self._inputs.model(images).float().cpu() for images, _ in iterate_batches(self._inputs)
                ]
            self._clean_logits = torch.cat(chunks)
        return self._clean_logits


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: suites select it by `name`; it produces exactly `columns`."""

    name: str  # selection name used in suites, e.g. "accuracy"
    summary: str
    fn: Callable[[EvalInputs, EvalCache], dict[str, float]]
    columns: tuple[str, ...] = ()  # column names, "{split}" is replaced by EvalInputs.split

    def column_names(self, split: str = "test") -> tuple[str, ...]:
        return tuple(column.format(split=split) for column in self.columns)


METRICS: Registry[MetricSpec] = Registry("metric")


def metric(name: str, summary: str, *columns: str) -> Callable[[Callable], Callable]:
    """Decorator registering `fn(inputs, cache) -> {column: value}` as metric `name`."""

    def register(fn: Callable[[EvalInputs, EvalCache], dict[str, float]]) -> Callable:
        METRICS.add(name, MetricSpec(name=name, summary=summary, fn=fn, columns=columns))
        return fn

    return register


@metric("accuracy", "Top-1 accuracy on the clean test images.", "{split}/accuracy")
def _accuracy(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    correct = cache.clean_logits().argmax(dim=1) == inputs.labels
    return {f"{inputs.split}/accuracy": correct.double().mean().item()}


@metric("nll", "Mean cross-entropy (nats) on the clean test images.", "{split}/nll")
def _nll(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    return {f"{inputs.split}/nll": calibration.negative_log_likelihood(cache.clean_logits(), inputs.labels)}


@metric("ece", "Top-label expected calibration error, equal-width confidence bins.", "{split}/ece")
def _ece(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    value = calibration.expected_calibration_error(
        cache.clean_logits(), inputs.labels, inputs.settings.ece_bins
    )
    return {f"{inputs.split}/ece": value}


@metric("brier", "Multi-class Brier score on the clean test images.", "{split}/brier")
def _brier(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    return {f"{inputs.split}/brier": calibration.brier_score(cache.clean_logits(), inputs.labels)}


@metric(
    "gaussian_noise",
    "Accuracy under additive Gaussian noise (seeded, clipped to [0,1]).",
    "{split}/gaussian_noise_accuracy",
)
def _gaussian_noise(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    generator, std = seeded_generator(inputs.settings.seed, stream=2), inputs.settings.noise_std
    correct = 0
    with torch.no_grad():
        for images, labels in iterate_batches(inputs):
            noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
            noisy = (images + std * noise).clamp_(0.0, 1.0)
            correct += (inputs.model(noisy).argmax(dim=1) == labels).sum().item()
    return {f"{inputs.split}/gaussian_noise_accuracy": correct / inputs.labels.shape[0]}


@metric(
    "pgd_linf",
    "Robust accuracy under L-inf PGD with random start on a seeded class-balanced subset "
    "(an example counts as robust only if it is also correct when clean).",
    "{split}/pgd_linf_accuracy",
    "{split}/pgd_linf_clean_accuracy_subset",
)
def _pgd_linf(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    settings, model = inputs.settings, inputs.model
    subset = robust_subset_indices(inputs.labels, settings.robust_subset, settings.seed)
    step_size = settings.pgd_step_size
    if step_size is None:
        step_size = default_pgd_step_size(settings.pgd_epsilon, settings.pgd_steps)
    generator = seeded_generator(settings.seed, stream=1)
    clean_correct = robust_correct = 0
    for images, labels in iterate_batches(inputs, subset):
        with torch.no_grad():
            clean = model(images).argmax(dim=1) == labels
        adversarial = pgd_linf(
            model, images, labels, epsilon=settings.pgd_epsilon, steps=settings.pgd_steps,
            step_size=step_size, random_start=True, generator=generator,
        )  # fmt: skip
        with torch.no_grad():
            robust = clean & (model(adversarial).argmax(dim=1) == labels)
        clean_correct += clean.sum().item()
        robust_correct += robust.sum().item()
    return {
        f"{inputs.split}/pgd_linf_accuracy": robust_correct / subset.shape[0],
        f"{inputs.split}/pgd_linf_clean_accuracy_subset": clean_correct / subset.shape[0],
    }


@metric("params", "Number of parameters, trainable and frozen.", "model/params")
def _params(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    return {"model/params": float(efficiency.parameter_count(inputs.model))}


@metric(
    "flops",
    "Forward FLOPs for one image (2 per multiply-add, FlopCounterMode).",
    "model/fwd_flops_2xmac_per_image",
)
def _flops(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    flops = efficiency.forward_flops(inputs.model, tuple(inputs.images.shape[1:]))
    return {"model/fwd_flops_2xmac_per_image": float(flops)}


@metric(
    "latency",
    "Batch-1 forward latency on CPU after warm-up: median and p95 over timed calls.",
    "latency/cpu_b1_median_ms", "latency/cpu_b1_p95_ms", "latency/threads", "latency/warmup", "latency/iters",
)  # fmt: skip
def _latency(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    settings = inputs.settings
    example = as_float01(inputs.images[:1], torch.device("cpu"))
    timings = efficiency.cpu_latency_ms(
        inputs.model, example, warmup=settings.latency_warmup, iters=settings.latency_iters
    )
    median, p95 = torch.tensor(timings, dtype=torch.float64).quantile(
        torch.tensor([0.5, 0.95], dtype=torch.float64)
    )
    return {
        "latency/cpu_b1_median_ms": median.item(),
        "latency/cpu_b1_p95_ms": p95.item(),
        "latency/threads": float(torch.get_num_threads()),
        "latency/warmup": float(settings.latency_warmup),
        "latency/iters": float(settings.latency_iters),
    }


# A handful of big batches: enough to amortise one-off costs without dominating the evaluation time.
_THROUGHPUT_WARMUP, _THROUGHPUT_ITERS = 2, 5


@metric(
    "throughput",
    "Forward images per second on the evaluation device at `throughput_batch`.",
    "throughput/images_per_s", "throughput/batch_size",
)  # fmt: skip
def _throughput(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    batch_size = inputs.settings.throughput_batch
    indices = torch.arange(batch_size) % inputs.images.shape[0]  # repeat the split if it is smaller
    batch = as_float01(inputs.images[indices], inputs.device, efficiency.model_float_dtype(inputs.model))
    rate = efficiency.images_per_second(
        inputs.model, batch, warmup=_THROUGHPUT_WARMUP, iters=_THROUGHPUT_ITERS
    )
    return {"throughput/images_per_s": rate, "throughput/batch_size": float(batch_size)}


DEFAULT_METRICS: tuple[str, ...] = (
    "accuracy", "nll", "ece", "brier", "gaussian_noise", "pgd_linf", "params", "flops", "latency", "throughput",
)  # fmt: skip


def evaluate(inputs: EvalInputs, metrics: Sequence[str]) -> dict[str, float]:
    """Run the selected metrics (duplicates ignored) in eval mode and merge their columns.

    Unknown names raise `UnknownNameError` before anything runs. Each metric adds `cost/{name}_s`,
    its wall seconds (shared clean logits are charged to the first metric that needs them). The
    model's train/eval mode is restored afterwards.
    """
    specs = [METRICS.get(name) for name in dict.fromkeys(metrics)]
    cache = EvalCache(inputs)
    results: dict[str, float] = {}
    with efficiency.eval_mode(inputs.model):
        for spec in specs:
            start = time.perf_counter()
            columns = spec.fn(inputs, cache)
            elapsed = time.perf_counter() - start
            if set(columns) != set(spec.column_names(inputs.split)):
                raise RuntimeError(
                    f"metric '{spec.name}' returned {sorted(columns)}, declared {spec.column_names(inputs.split)}"
                )
            results.update({key: float(value) for key, value in columns.items()})
            results[f"cost/{spec.name}_s"] = elapsed
    return results
