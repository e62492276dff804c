"""Benchmark scenarios: few data, long-tailed class imbalance, label noise and hidden labels on a training split.

Pure functions on `ImageArrays`: each returns new arrays plus a small JSON-able record of what it
did, is seeded by an explicit seed, and never writes into its input (the raw splits are cached and
shared, so labels are copied before they change). `apply_scenario` runs a suite's `ScenarioSpec`
in a fixed order: few_data, then imbalance (the subsampling steps), then label_noise, so the noise
rate is measured on the examples a model actually trains on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from harness.data.scenario_spec import ScenarioSpec
from harness.data.sources import UNLABELLED, ImageArrays
from harness.errors import HarnessInputError

Record = dict[str, Any]
Step = Callable[[ImageArrays, int], tuple[ImageArrays, Record]]  # (arrays, seed) -> (arrays, record)


class ScenarioError(HarnessInputError, ValueError):
    """A scenario that cannot be applied to this data (too few examples, a class outside the dataset)."""


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Examples per class 0..num_classes-1; a label outside that range raises."""
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ScenarioError(f"labels fall outside 0..{num_classes - 1}")
    return torch.bincount(labels, minlength=num_classes).tolist()


def _share(fraction: float, n: int) -> int:
    """round(fraction * n), halves up, as in `stratified_split`."""
    return int(fraction * n + 0.5)


def _shuffled_members(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> list[torch.Tensor]:
    """For each class 0..num_classes-1, its indices in a seeded random order."""
    order = torch.randperm(len(labels), generator=generator)
    shuffled = labels[order]
    return [order[shuffled == cls] for cls in range(num_classes)]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _keep_per_class(arrays: ImageArrays, quotas: list[int], num_classes: int, seed: int) -> ImageArrays:
    """A seeded random `quotas[c]` examples of every class c, in their original order (copied)."""
    members = _shuffled_members(arrays.labels, num_classes, _generator(seed))
    chosen = [m[:quota] for m, quota in zip(members, quotas, strict=True)]
    return arrays.subset(torch.cat(chosen).sort().values)


# ---------------------------------------------------------------- subsampling


def few_data(arrays: ImageArrays, n_per_class: int, num_classes: int, seed: int) -> tuple[ImageArrays, Record]:
    """Exactly `n_per_class` examples of every class, drawn at random with `seed`: the low-data regime."""
    if n_per_class <= 0:
        raise ScenarioError(f"few_data.n_per_class must be positive, got {n_per_class}")
    counts = class_counts(arrays.labels, num_classes)
    if min(counts) < n_per_class:
        short = {c: n for c, n in enumerate(counts) if n < n_per_class}
        raise ScenarioError(
            f"few_data.n_per_class={n_per_class} but some classes have fewer examples ({short}, class: count); "
            f"use at most {min(counts)}, or a larger split"
        )
    kept = _keep_per_class(arrays, [n_per_class] * num_classes, num_classes, seed)
    return kept, {"n_per_class": n_per_class}


def long_tail_counts(n_max: int, ratio: float, num_classes: int) -> list[int]:
    """The exponential profile n_c = n_max * ratio^(-c/(K-1)) of Cao et al. 2019 (LDAM), at least 1.

    Class 0 is the head, class K-1 the tail; `ratio` = n_max / n_min, so 1 means balanced. Rounded
    down as in their released code, so CIFAR-10-LT gets its published counts (12,406 images at 100).
    """
    if ratio < 1:
        raise ScenarioError(f"imbalance.ratio is n_max / n_min and must be at least 1, got {ratio}")
    if num_classes == 1:
        return [n_max]
    exact = [n_max * (1.0 / ratio) ** (c / (num_classes - 1)) for c in range(num_classes)]
    return [max(1, int(count + 1e-9)) for count in exact]  # the tolerance keeps 49.999... at 50


def long_tail_imbalance(arrays: ImageArrays, ratio: float, num_classes: int, seed: int) -> tuple[ImageArrays, Record]:
    """Subsample every class to the long-tail profile, seeded; n_max is the smallest class count of the input,
    so every class can fill its quota and largest / smallest is `ratio` up to rounding."""
    counts = class_counts(arrays.labels, num_classes)
    n_max = min(counts)
    if n_max < ratio:
        raise ScenarioError(
            f"imbalance.ratio={ratio} needs at least {ratio:g} examples in every class so the tail keeps one, "
            f"but the smallest class has {n_max}; lower the ratio or use a larger split"
        )
    targets = long_tail_counts(n_max, ratio, num_classes)
    kept = _keep_per_class(arrays, targets, num_classes, seed)
    return kept, {"ratio": ratio, "n_max": n_max, "measured_ratio": max(targets) / min(targets)}


# ---------------------------------------------------------------- label noise


def _check_rate(rate: float, num_classes: int) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ScenarioError(f"label_noise.rate is a fraction of the labels and must be in [0, 1], got {rate}")
    if rate > 0 and num_classes < 2:
        raise ScenarioError("label noise needs at least two classes: a label can only flip to another class")


def _noise_record(clean: torch.Tensor, noisy: torch.Tensor, num_classes: int) -> Record:
    """The measured effect: how many labels changed, overall and per (clean) class."""
    changed = clean != noisy
    per_class = torch.bincount(clean[changed], minlength=num_classes).tolist()
    counts = class_counts(clean, num_classes)
    return {
        "flipped": int(changed.sum()),
        "measured_rate": float(changed.float().mean()) if len(clean) else 0.0,
        "per_class_rate": [f / n if n else 0.0 for f, n in zip(per_class, counts, strict=True)],
    }


def symmetric_label_noise(arrays: ImageArrays, rate: float, num_classes: int,
                          seed: int) -> tuple[ImageArrays, Record]:
    """round(rate * n_c) labels of every class c, chosen at random, replaced by a uniformly drawn *other* class.

    Unlike the "uniform over all K classes" variant, the measured noise rate equals `rate`.
    """
    _check_rate(rate, num_classes)
    generator = _generator(seed)
    noisy = arrays.labels.clone()  # never write into the cached split
    for cls, members in enumerate(_shuffled_members(arrays.labels, num_classes, generator)):
        flip = members[: _share(rate, len(members))]
        offsets = torch.randint(1, num_classes, (len(flip),), generator=generator)
        noisy[flip] = (cls + offsets) % num_classes
    record = {"kind": "symmetric", "rate": rate, **_noise_record(arrays.labels, noisy, num_classes)}
    return ImageArrays(arrays.images, noisy), record


def next_class_mapping(num_classes: int) -> dict[int, int]:
    """The default asymmetric flip: class c -> c + 1 mod K."""
    return {cls: (cls + 1) % num_classes for cls in range(num_classes)}


def _check_mapping(mapping: Mapping[int, int], num_classes: int) -> None:
    for source, target in mapping.items():
        if not (0 <= source < num_classes and 0 <= target < num_classes):
            raise ScenarioError(
                f"label_noise.mapping {source} -> {target}: classes must be in 0..{num_classes - 1} for this dataset"
            )
        if source == target:
            raise ScenarioError(f"label_noise.mapping sends class {source} to itself; a flip must change the class")


def asymmetric_label_noise(arrays: ImageArrays, rate: float, num_classes: int, seed: int,
                           mapping: Mapping[int, int] | None = None) -> tuple[ImageArrays, Record]:
    """round(rate * n_c) labels of every mapped class c, chosen at random, flipped to `mapping[c]`.

    Models class-dependent confusion (Patrini et al. 2017); classes absent from `mapping` stay clean.
    """
    _check_rate(rate, num_classes)
    mapping = dict(mapping) if mapping is not None else next_class_mapping(num_classes)
    _check_mapping(mapping, num_classes)
    noisy = arrays.labels.clone()  # never write into the cached split
    for cls, members in enumerate(_shuffled_members(arrays.labels, num_classes, _generator(seed))):
        if cls in mapping:
            noisy[members[: _share(rate, len(members))]] = mapping[cls]
    record = {"kind": "asymmetric", "rate": rate, "mapping": {str(s): t for s, t in sorted(mapping.items())},
              **_noise_record(arrays.labels, noisy, num_classes)}
    return ImageArrays(arrays.images, noisy), record


# ---------------------------------------------------------------- hidden labels (semi-supervised)


def few_labels(arrays: ImageArrays, n_per_class: int, num_classes: int, seed: int) -> tuple[ImageArrays, Record]:
    """Keep the labels of `n_per_class` random examples of every class and hide the others (`UNLABELLED`).

    Every image stays: the hidden ones are the unlabelled pool of semi-supervised learning. Supervised
    losses skip them (`harness.method.labelled_cross_entropy`), so ERM trains on the labelled few.
    """
    counts = class_counts(arrays.labels, num_classes)
    if n_per_class <= 0 or min(counts) < n_per_class:
        raise ScenarioError(f"few_labels.n_per_class={n_per_class} must lie in 1..{min(counts)} "
                            f"(the smallest class count of the split)")
    members = _shuffled_members(arrays.labels, num_classes, _generator(seed))
    hidden = torch.cat([m[n_per_class:] for m in members])
    labels = arrays.labels.clone()  # never write into the cached split
    labels[hidden] = UNLABELLED
    return ImageArrays(arrays.images, labels), {"n_per_class": n_per_class, "labelled": len(labels) - len(hidden),
                                                "unlabelled": len(hidden)}


# ---------------------------------------------------------------- a whole scenario


def step_seed(seed: int, step: str) -> int:
    """An independent seed per step, so adding few_data does not change which positions get noisy."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{step}".encode()).digest()[:7], "big")


def _planned_steps(scenario: ScenarioSpec, num_classes: int) -> list[tuple[str, Step]]:
    """The scenario's steps, in the fixed order: subsample first, then corrupt the labels that remain."""
    steps: list[tuple[str, Step]] = []
    if (few := scenario.few_data) is not None:
        steps.append(("few_data", lambda a, seed: few_data(a, few.n_per_class, num_classes, seed)))
    if (imbalance := scenario.imbalance) is not None:
        steps.append(("imbalance", lambda a, seed: long_tail_imbalance(a, imbalance.ratio, num_classes, seed)))
    if (noise := scenario.label_noise) is not None and noise.kind == "symmetric":
        steps.append(("label_noise", lambda a, seed: symmetric_label_noise(a, noise.rate, num_classes, seed)))
    elif noise is not None:
        steps.append(("label_noise",
                      lambda a, seed: asymmetric_label_noise(a, noise.rate, num_classes, seed, noise.mapping)))
    if (hide := scenario.few_labels) is not None:
        steps.append(("few_labels", lambda a, seed: few_labels(a, hide.n_per_class, num_classes, seed)))
    return steps


def apply_scenario(arrays: ImageArrays, scenario: ScenarioSpec, num_classes: int) -> tuple[ImageArrays, Record]:
    """Apply every step the scenario names, in the order few_data, imbalance, label_noise, few_labels.

    The record holds the scenario seed, the steps in the order applied, sizes and class counts before
    and after (after label noise these are counts of the noisy labels; after few_labels, of the labels
    left visible), and one sub-record per step. A task stream (`continual`) is cut later, by the job.
    """
    record: Record = {"seed": scenario.seed, "steps": [], "size_before": len(arrays),
                      "class_counts_before": class_counts(arrays.labels, num_classes)}
    for name, transform in _planned_steps(scenario, num_classes):
        arrays, record[name] = transform(arrays, step_seed(scenario.seed, name))
        record["steps"].append(name)
    visible = arrays.labels[arrays.labels != UNLABELLED]
    record.update(size_after=len(arrays), class_counts=class_counts(visible, num_classes))
    return arrays, record
