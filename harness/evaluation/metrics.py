"""The metric registry and `evaluate`: one call turns a trained model and the test split into columns.

Each metric is a small registered function of (inputs, cache) returning `split/metric` columns, so a
suite selects metrics by name and a new metric is one decorated function. The shared `EvalCache`
runs the clean forward pass once for every metric that needs clean logits; everything random is
drawn from CPU generators seeded by `EvaluationSettings.seed`, so two models evaluated with the same
settings see the same noise, the same attack subset and the same random starts.
"""

from __future__ import annotations

import itertools
import math
import re
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pydantic
import torch
from pydantic import Field

from harness.columns import Column, declare_columns
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
    linf_epsilons: tuple[float, ...] = Field(
        (0.0, 0.02, 0.05, 0.1, 0.2),
        description="L-inf radii ([0,1] pixel units) of the `robustness_curve` FGSM and PGD curves: 0.0 first, "
        "strictly increasing; one column each, named by the radius with '.' -> 'p' (0.05 -> e0p05).",
    )
    l2_epsilons: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 1.0, 2.0),
        description="L2 radii ([0,1] pixel units, whole image) of the `robustness_curve` PGD-L2 curve: 0.0 "
        "first, strictly increasing.",
    )
    curve_subset: int = Field(
        500, ge=1, description="Test examples of `robustness_curve`: the first n of the robust_subset order."
    )
    eot_samples: int = Field(
        10,
        ge=1,
        description="Forward passes averaged per attack gradient and per prediction (expectation over "
        "transformation) when the method is stochastic (a random defence attacked with one sample looks "
        "more robust than it is); deterministic models always use 1.",
    )
    autoattack_epsilon: float = Field(
        8 / 255, ge=0.0, le=1.0, description="L-inf radius of the `autoattack` metric, in [0,1] pixel units."
    )
    autoattack_subset: int = Field(
        100, ge=1, description="Test examples of `autoattack`: the first n of the robust_subset order."
    )

    @pydantic.field_validator("linf_epsilons", "l2_epsilons")
    @classmethod
    def _valid_epsilon_grid(cls, epsilons: tuple[float, ...], info: pydantic.ValidationInfo) -> tuple[float, ...]:
        from harness.evaluation.robustness import check_epsilon_grid  # here: the edit stays inside this class

        return check_epsilon_grid(epsilons, "linf" if info.field_name == "linf_epsilons" else "l2")

    @property
    def linf_epsilon_labels(self) -> tuple[str, ...]:
        """`linf_epsilons` as they appear in column names (0.05 -> '0p05')."""
        from harness.evaluation.robustness import epsilon_label

        return tuple(epsilon_label(epsilon) for epsilon in self.linf_epsilons)

    @property
    def l2_epsilon_labels(self) -> tuple[str, ...]:
        """`l2_epsilons` as they appear in column names (0.25 -> '0p25')."""
        from harness.evaluation.robustness import epsilon_label

        return tuple(epsilon_label(epsilon) for epsilon in self.l2_epsilons)

    noise_std: float = Field(
        0.1,
        ge=0.0,
        description="Std of the Gaussian noise corruption in [0,1] pixel units (result clipped to [0,1]).",
    )
    corruption_subset: int = Field(
        1000,
        ge=1,
        description="Test examples of the `corruptions` metric: the first n of the same seeded, class-balanced "
        "order as robust_subset, each corrupted by every selected family at every selected severity.",
    )
    corruption_severities: tuple[int, ...] = Field(
        (1, 2, 3, 4, 5),
        min_length=1,
        description="Severities (1..5) of the `corruptions` metric; columns of the others are NaN.",
    )
    corruptions: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Corruption families of the `corruptions` metric; None means all 15 of CIFAR-10-C "
        "(Hendrycks & Dietterich 2019); columns of the others are NaN.",
    )

    @pydantic.field_validator("corruption_severities")
    @classmethod
    def _valid_corruption_severities(cls, severities: tuple[int, ...]) -> tuple[int, ...]:
        from harness.evaluation.corruptions import check_severities  # here: the edit stays inside this class

        return check_severities(severities)

    @pydantic.field_validator("corruptions")
    @classmethod
    def _known_corruption_families(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from harness.evaluation.corruptions import check_families

        return None if names is None else check_families(names)

    ece_bins: int = Field(
        15, ge=1, description="Equal-width confidence bins of the expected calibration error."
    )
    ood_sets: tuple[str, ...] = Field(
        ("noise_uniform", "noise_gaussian_blobs"),
        min_length=1,
        description="OOD sets the `ood` metric detects, one column group each: the synthetic "
        "noise_uniform and noise_gaussian_blobs, or names whose images the run passes in EvalInputs.ood_sets.",
    )
    ood_synthetic_size: int = Field(
        1000, ge=1, description="Images generated (seeded) for each synthetic OOD set."
    )
    calibration_size: int = Field(
        0, ge=0, description="Training examples held out of every final run (stratified, the same for every "
        "method) to fit temperature scaling on; 0 trains on the whole split and leaves the *_ts columns NaN.",
    )
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
    seed: int = Field(0, ge=0, description="Seed of the attack subset, PGD random starts and Gaussian noise.")

    @pydantic.field_validator("ood_sets")
    @classmethod
    def _ood_set_names_fit_in_columns(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(
                    f"OOD set name {name!r} must be lower-case letters, digits and '_' (it names columns)"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"OOD set names must be unique, got {list(names)}")
        return names


@dataclass
class EvalInputs:
    """What a metric may look at: the model, the test split as uint8 images, and the settings."""

    model: torch.nn.Module  # in eval mode, on `device`; takes float [B,C,H,W] in [0,1], returns logits [B,K]
    images: torch.Tensor  # uint8 [N,C,H,W], CPU
    labels: torch.Tensor  # int64 [N], CPU
    device: torch.device
    settings: EvaluationSettings
    split: str = "test"  # prefix of the split-level columns
    # Held-out validation data for post-hoc fitting (temperature scaling); never the test split.
    val_images: torch.Tensor | None = None  # uint8 [V,C,H,W], CPU
    val_labels: torch.Tensor | None = None  # int64 [V], CPU
    # Dataset OOD sets by name (synthetic ones are generated by the `ood` metric): uint8 [M,C,H,W], CPU.
    ood_sets: Mapping[str, torch.Tensor] = field(default_factory=dict)
    # Classes of the dataset; a model returning num_classes + 1 logits has an abstain output (the last).
    num_classes: int | None = None
    # The model is random at test time (MethodInfo.stochastic): attacks then use EOT over settings.eot_samples.
    stochastic: bool = False

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
        self._check_optional_inputs()

    def _check_optional_inputs(self) -> None:
        """Validation and OOD images must fit the model exactly as the test images do."""
        if (self.val_images is None) != (self.val_labels is None):
            raise ValueError("give both val_images and val_labels, or neither")
        if self.val_images is not None:
            _check_images_like("val_images", self.val_images, self.images)
            if self.val_labels.dtype != torch.int64 or self.val_labels.shape != (self.val_images.shape[0],):
                raise ValueError(
                    f"val_labels must be int64 [{self.val_images.shape[0]}], "
                    f"got {self.val_labels.dtype} {tuple(self.val_labels.shape)}"
                )
        for name, images in self.ood_sets.items():
            _check_images_like(f"ood_sets[{name!r}]", images, self.images)
        if self.num_classes is not None and not 0 <= int(self.labels.max()) < self.num_classes:
            raise ValueError(
                f"num_classes is {self.num_classes} but the labels reach {int(self.labels.max())}"
            )


def _check_images_like(what: str, images: torch.Tensor, test_images: torch.Tensor) -> None:
    """Raise unless `images` is a non-empty uint8 [M,C,H,W] batch with the test images' [C,H,W]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"{what} must be non-empty uint8 [M,C,H,W], got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"{what} has image shape {tuple(images.shape[1:])} but the test images are "
            f"{tuple(test_images.shape[1:])}; resize them (e.g. digits upsampled to 28x28) before evaluation"
        )


class ClassLogits(torch.nn.Module):
    """Drops an abstain logit (the K+1-th) so predictions, losses and attacks see the K class logits only."""

    def __init__(self, model: torch.nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model, self.num_classes = model, num_classes
        self.train(model.training)  # attack libraries restore *this* module's mode afterwards

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[:, : self.num_classes]


def class_model(inputs: EvalInputs) -> torch.nn.Module:
    """The model as class-prediction metrics see it: without an abstain output, if it has one."""
    return inputs.model if inputs.num_classes is None else ClassLogits(inputs.model, inputs.num_classes)


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
        self._other_logits: dict[str, torch.Tensor] = {}

    def class_logits(self) -> torch.Tensor:
        """`clean_logits` without an abstain column: what accuracy and calibration are computed from."""
        logits = self.clean_logits()
        return logits if self._inputs.num_classes is None else logits[:, : self._inputs.num_classes]

    def clean_logits(self) -> torch.Tensor:
        """float32 logits [N,K] of the unperturbed test images, on CPU."""
        if self._clean_logits is None:
            with torch.no_grad():
                chunks = [
                    self._inputs.model(images).float().cpu() for images, _ in iterate_batches(self._inputs)
                ]
            self._clean_logits = torch.cat(chunks)
        return self._clean_logits

    def logits_of(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """float32 logits [M,K] of another uint8 image set (validation, an OOD set), on CPU, memoised by
        `name`: metrics that ask for the same name must mean the same images."""
        if name not in self._other_logits:
            model, batch_size = self._inputs.model, self._inputs.settings.batch_size
            dtype = efficiency.model_float_dtype(model)
            chunks = []
            with torch.no_grad():
                for start in range(0, images.shape[0], batch_size):
                    batch = as_float01(images[start : start + batch_size], self._inputs.device, dtype)
                    chunks.append(model(batch).float().cpu())
            self._other_logits[name] = torch.cat(chunks)
        return self._other_logits[name]


def _placeholders(column: str) -> list[str]:
    """The "{field}" names of a column template, other than "{split}"."""
    return [name for _, name, _, _ in string.Formatter().parse(column) if name and name != "split"]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: suites select it by `name`; it produces exactly `columns`, whose meaning
    (direction, unit, summary or detail) `declarations` give, one per column template."""

    name: str  # selection name used in suites, e.g. "accuracy"
    summary: str
    fn: Callable[[EvalInputs, EvalCache], dict[str, float]]
    declarations: tuple[Column, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Column templates; "{split}" is replaced by EvalInputs.split."""
        return tuple(column.template for column in self.declarations)

    # (placeholder, settings field): "{placeholder}" expands to one column per element of that
    # tuple-valued EvaluationSettings field, e.g. ("ood_set", "ood_sets")
    expand: tuple[tuple[str, str], ...] = ()

    def column_names(
        self, split: str = "test", settings: EvaluationSettings | None = None
    ) -> tuple[str, ...]:
        """The columns for `split` (and, for expanding columns, `settings`; defaults if None)."""
        settings = settings or EvaluationSettings()
        expand = dict(self.expand)
        names = []
        for column in self.columns:
            fields = _placeholders(column)
            for values in itertools.product(*(getattr(settings, expand[f]) for f in fields)):
                names.append(column.format(split=split, **dict(zip(fields, values, strict=True))))
        return tuple(names)


METRICS: Registry[MetricSpec] = Registry("metric")


def metric(
    name: str, summary: str, *columns: Column, expand: Mapping[str, str] | None = None
) -> Callable[[Callable], Callable]:
    """Decorator registering `fn(inputs, cache) -> {column: value}` as metric `name`.

    Each column is declared with its meaning (`harness.columns.Column`: template, which side is better,
    unit, summary or detail), so the leaderboard and the dashboards never guess it from the name.

    `expand` maps a column placeholder to the EvaluationSettings tuple it ranges over, for metrics
    whose columns depend on the settings (one group per OOD set).
    """
    expansion = tuple((expand or {}).items())
    for column in columns:
        if not isinstance(column, Column):
            raise TypeError(f"metric '{name}': declare each column as harness.columns.Column, got {column!r}")
        if not set(_placeholders(column.template)) <= {placeholder for placeholder, _ in expansion}:
            raise ValueError(f"metric '{name}': column {column!r} has a placeholder missing from expand")

    def register(fn: Callable[[EvalInputs, EvalCache], dict[str, float]]) -> Callable:
        METRICS.add(name, MetricSpec(name=name, summary=summary, fn=fn, declarations=columns, expand=expansion))
        declare_columns(name, columns)
        return fn

    return register


@metric("accuracy", "Top-1 accuracy on the clean test images.", Column("{split}/accuracy", "higher", "fraction"))
def _accuracy(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    correct = cache.class_logits().argmax(dim=1) == inputs.labels
    return {f"{inputs.split}/accuracy": correct.double().mean().item()}


@metric("nll", "Mean cross-entropy (nats) on the clean test images.", Column("{split}/nll", "lower", "nats"))
def _nll(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    return {f"{inputs.split}/nll": calibration.negative_log_likelihood(cache.class_logits(), inputs.labels)}


@metric("ece", "Top-label expected calibration error, equal-width confidence bins.", Column("{split}/ece", "lower", "fraction"))
def _ece(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    value = calibration.expected_calibration_error(
        cache.class_logits(), inputs.labels, inputs.settings.ece_bins
    )
    return {f"{inputs.split}/ece": value}


@metric("brier", "Multi-class Brier score on the clean test images.", Column("{split}/brier", "lower", "score"))
def _brier(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    return {f"{inputs.split}/brier": calibration.brier_score(cache.class_logits(), inputs.labels)}


@metric(
    "temperature_scaling",
    "Temperature scaling (Guo et al. 2017): T fitted by NLL on the held-out validation images, then ECE, NLL "
    "and Brier of the test logits divided by T; NaN when the run supplies no validation data.",
    Column("{split}/temperature", "higher", "temperature", "detail"),
    Column("{split}/ece_ts", "lower", "fraction"),
    Column("{split}/nll_ts", "lower", "nats", "detail"),
    Column("{split}/brier_ts", "lower", "score", "detail"),
)  # fmt: skip
def _temperature_scaling(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    names = ("temperature", "ece_ts", "nll_ts", "brier_ts")
    if inputs.val_images is None or inputs.val_labels is None:
        return {f"{inputs.split}/{name}": math.nan for name in names}
    val_logits = cache.logits_of("val", inputs.val_images)[:, : inputs.num_classes or None]
    temperature = calibration.fit_temperature(val_logits, inputs.val_labels)
    scaled, labels = cache.class_logits().double() / temperature, inputs.labels
    values = (
        temperature,
        calibration.expected_calibration_error(scaled, labels, inputs.settings.ece_bins),
        calibration.negative_log_likelihood(scaled, labels),
        calibration.brier_score(scaled, labels),
    )
    return {f"{inputs.split}/{name}": value for name, value in zip(names, values, strict=True)}


RELIABILITY_BINS = 15  # fixed, unlike ece_bins, so the dashboard's columns do not depend on settings


@metric(
    "reliability",
    f"Reliability diagram: mean confidence, accuracy and count in {RELIABILITY_BINS} equal-width confidence "
    "bins of the clean test logits (confidence and accuracy NaN in empty bins).",
    *(Column(f"{{split}}/rel_b{i}_{part}", "higher", unit, "detail") for i in range(RELIABILITY_BINS)
      for part, unit in (("conf", "fraction"), ("acc", "fraction"), ("count", "count"))),
)  # fmt: skip
def _reliability(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    bins = calibration.reliability_bins(cache.class_logits(), inputs.labels, RELIABILITY_BINS)
    columns = {}
    for part, values in (("conf", bins.confidence), ("acc", bins.accuracy), ("count", bins.count)):
        columns.update({f"{inputs.split}/rel_b{i}_{part}": value for i, value in enumerate(values.tolist())})
    return columns


@metric(
    "gaussian_noise",
    "Accuracy under additive Gaussian noise (seeded, clipped to [0,1]).",
    Column("{split}/gaussian_noise_accuracy", "higher", "fraction"),
)
def _gaussian_noise(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    generator, std = seeded_generator(inputs.settings.seed, stream=2), inputs.settings.noise_std
    model, correct = class_model(inputs), 0
    with torch.no_grad():
        for images, labels in iterate_batches(inputs):
            noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
            noisy = (images + std * noise).clamp_(0.0, 1.0)
            correct += (model(noisy).argmax(dim=1) == labels).sum().item()
    return {f"{inputs.split}/gaussian_noise_accuracy": correct / inputs.labels.shape[0]}


@metric(
    "pgd_linf",
    "Robust accuracy under L-inf PGD with random start on a seeded class-balanced subset "
    "(an example counts as robust only if it is also correct when clean).",
    Column("{split}/pgd_linf_accuracy", "higher", "fraction"),
    Column("{split}/pgd_linf_clean_accuracy_subset", "higher", "fraction"),
)
def _pgd_linf(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    settings, model = inputs.settings, class_model(inputs)
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


# The cost metrics (params, flops, latency, throughput, memory) are registered in efficiency_metrics.

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
            declared = spec.column_names(inputs.split, inputs.settings)
            if set(columns) != set(declared):
                raise RuntimeError(f"metric '{spec.name}' returned {sorted(columns)}, declared {declared}")
            results.update({key: float(value) for key, value in columns.items()})
            results[f"cost/{spec.name}_s"] = elapsed
    return results
