"""The `corruptions` metric: accuracy under the 15 CIFAR-10-C / ImageNet-C corruptions at severities 1..5.

Every model is scored on the same examples (the first `corruption_subset` of `robust_subset_indices`) under
the same corruptions: each (family, severity) draws from its own generator, seeded by
`EvaluationSettings.seed` and the pair's name, so adding a family or a severity changes no other column.

Columns, with `{split}` the evaluated split (e.g. `test`) and `{family}` each name of `CORRUPTION_FAMILIES`:

- `{split}/corruption_accuracy`: mean corruption accuracy, the mean of the family means below;
- `{split}/c_{family}_accuracy`: one family's accuracy, averaged over the selected severities;
- `{split}/c_{family}_s{k}_accuracy`, k = 1..5: one family at one severity;
- `{split}/corruption_clean_accuracy_subset`: clean accuracy on the same examples (for relative mCE);
- `cost/corruptions_s` (added by `evaluate`): the metric's wall seconds.

The column set is fixed; families and severities left out by `corruptions` / `corruption_severities` are NaN.
The leaderboard derives mCE against a baseline from these (Hendrycks & Dietterich 2019):
CE_f = sum_k (1 - acc[f,k]) / sum_k (1 - baseline_acc[f,k]) and mCE = mean_f CE_f; relative mCE subtracts
the clean error of each model from every term.
"""

from __future__ import annotations

import math
import zlib

import torch

from harness.columns import Column
from harness.evaluation.corruptions import CORRUPTION_FAMILIES, SEVERITIES, corrupt
from harness.evaluation.metrics import (
    EvalCache,
    EvalInputs,
    class_model,
    iterate_batches,
    metric,
    robust_subset_indices,
    seeded_generator,
)


def corruption_columns(split: str = "test") -> tuple[str, ...]:
    """Every column of the `corruptions` metric for `split`, in a stable order."""
    columns = [f"{split}/corruption_accuracy", f"{split}/corruption_clean_accuracy_subset"]
    for family in CORRUPTION_FAMILIES:
        columns.append(f"{split}/c_{family}_accuracy")
        columns += [f"{split}/c_{family}_s{severity}_accuracy" for severity in SEVERITIES]
    return tuple(columns)


def corruption_generator(seed: int, family: str, severity: int) -> torch.Generator:
    """The CPU generator of one (family, severity): a stream named by the pair, not by its position."""
    stream = 1_000 + zlib.crc32(f"corruption/{family}/s{severity}".encode())
    return seeded_generator(seed, stream=stream)


def corruption_accuracies(inputs: EvalInputs) -> tuple[dict[tuple[str, int], float], float]:
    """Accuracy of each selected (family, severity) on the corruption subset, and clean accuracy there."""
    settings, model = inputs.settings, class_model(inputs)
    families = settings.corruptions or CORRUPTION_FAMILIES
    pairs = [(family, severity) for family in families for severity in settings.corruption_severities]
    generators = {pair: corruption_generator(settings.seed, *pair) for pair in pairs}
    subset = robust_subset_indices(inputs.labels, settings.corruption_subset, settings.seed)
    correct = dict.fromkeys(pairs, 0)
    clean_correct = 0
    with torch.no_grad():
        for images, labels in iterate_batches(inputs, subset):  # each batch converted once, corrupted 75 ways
            clean_correct += (model(images).argmax(dim=1) == labels).sum().item()
            for pair in pairs:
                corrupted = corrupt(images, *pair, generators[pair])
                correct[pair] += (model(corrupted).argmax(dim=1) == labels).sum().item()
    size = subset.shape[0]
    return {pair: count / size for pair, count in correct.items()}, clean_correct / size


@metric(
    "corruptions",
    "Accuracy under the 15 CIFAR-10-C corruptions x 5 severities (Hendrycks & Dietterich 2019) on a seeded "
    "class-balanced subset: per family and severity, per family, and the mean corruption accuracy.",
    *(Column(column, "higher", "fraction", "summary" if column.endswith("/corruption_accuracy") else "detail")
      for column in corruption_columns("{split}")),
)
def _corruptions(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    accuracies, clean = corruption_accuracies(inputs)
    split = inputs.split
    columns = dict.fromkeys(corruption_columns(split), math.nan)
    family_means = []
    for family in dict.fromkeys(family for family, _ in accuracies):
        values = [value for (name, _), value in accuracies.items() if name == family]
        family_means.append(sum(values) / len(values))
        columns[f"{split}/c_{family}_accuracy"] = family_means[-1]
    for (family, severity), value in accuracies.items():
        columns[f"{split}/c_{family}_s{severity}_accuracy"] = value
    columns[f"{split}/corruption_accuracy"] = sum(family_means) / len(family_means)
    columns[f"{split}/corruption_clean_accuracy_subset"] = clean
    return columns
