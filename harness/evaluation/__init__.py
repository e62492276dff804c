"""Final evaluation of a trained model: accuracy, calibration, robustness and cost, as named columns.

Importing this package registers every built-in metric in `METRICS`; `evaluate` runs a selection.
"""

from harness.evaluation.attacks import default_pgd_step_size, pgd_linf
from harness.evaluation.calibration import brier_score, expected_calibration_error, negative_log_likelihood
from harness.evaluation.efficiency import cpu_latency_ms, forward_flops, images_per_second, parameter_count
from harness.evaluation.metrics import (
    DEFAULT_METRICS,
    METRICS,
    EvalCache,
    EvalInputs,
    EvaluationSettings,
    MetricSpec,
    evaluate,
    robust_subset_indices,
)

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "EvalCache",
    "EvalInputs",
    "EvaluationSettings",
    "MetricSpec",
    "brier_score",
    "cpu_latency_ms",
    "default_pgd_step_size",
    "evaluate",
    "expected_calibration_error",
    "forward_flops",
    "images_per_second",
    "negative_log_likelihood",
    "parameter_count",
    "pgd_linf",
    "robust_subset_indices",
]
