"""A toy metric from outside the harness, to show that a new metric is one decorated function.

`toy_wrong_confidence` is the mean max-softmax confidence on the test examples the model gets wrong:
how sure a model is when it errs (0 when it never errs). Lower is better, and its column name,
`{split}/mean_wrong_confidence`, holds none of the substrings the harness once guessed direction from,
so only its declaration can tell the leaderboard and the dashboard which way to rank it.

Loaded through $HARNESS_PLUGINS (`HARNESS_PLUGINS=tests.toy_metric`), never shipped in `harness/`.
"""

from __future__ import annotations

import torch

from harness.columns import Column
from harness.evaluation.metrics import EvalCache, EvalInputs, metric

NAME = "toy_wrong_confidence"
COLUMN = "{split}/mean_wrong_confidence"


@metric(NAME, "Mean max-softmax confidence on the misclassified test examples (0 when none is wrong).",
        Column(COLUMN, "lower", "fraction"))
def _mean_wrong_confidence(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    confidence, prediction = torch.softmax(cache.class_logits().double(), dim=1).max(dim=1)
    wrong = prediction != inputs.labels
    value = float(confidence[wrong].mean()) if bool(wrong.any()) else 0.0
    return {COLUMN.format(split=inputs.split): value}
