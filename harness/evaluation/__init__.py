"""Final evaluation of a trained model: accuracy, calibration, robustness and cost, as named columns.

Importing this package registers every built-in metric in `METRICS`; `evaluate` runs a selection.
"""

from harness.evaluation import continual, efficiency_metrics  # noqa: F401  (declare continual/*; register params, ...)
from harness.evaluation.attacks import (
    default_pgd_step_size,
    expected_prediction,
    fgsm_linf,
    loss_gradient,
    pgd_l2,
    pgd_linf,
)
from harness.evaluation.calibration import (
    ReliabilityBins,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from harness.evaluation.corruption_metrics import corruption_columns
from harness.evaluation.corruptions import CORRUPTION_FAMILIES, CORRUPTIONS, CorruptionSpec, corrupt
from harness.evaluation.efficiency import (
    code_name,
    cpu_latency_ms,
    forward_flops,
    images_per_second,
    parameter_count,
)
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
from harness.evaluation.ood import (
    SYNTHETIC_OOD_SETS,
    aupr_in,
    auroc,
    detection_metrics,
    fpr_at_tpr,
    ood_scores,
    synthetic_ood_images,
)
from harness.evaluation.robustness import ATTACKS, auac, epsilon_label, run_attack  # registers the curves
from harness.evaluation.selective import (
    aurc,
    class_and_abstain_logits,
    confidence_and_prediction,
    optimal_aurc,
    risk_coverage_curve,
    selective_risk,
)

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "CORRUPTION_FAMILIES",
    "DEFAULT_METRICS",
    "METRICS",
    "CorruptionSpec",
    "EvalCache",
    "EvalInputs",
    "EvaluationSettings",
    "MetricSpec",
    "ReliabilityBins",
    "SYNTHETIC_OOD_SETS",
    "aupr_in",
    "aurc",
    "auroc",
    "brier_score",
    "class_and_abstain_logits",
    "code_name",
    "confidence_and_prediction",
    "corrupt",
    "corruption_columns",
    "cpu_latency_ms",
    "auac",
    "default_pgd_step_size",
    "detection_metrics",
    "epsilon_label",
    "evaluate",
    "expected_prediction",
    "expected_calibration_error",
    "fgsm_linf",
    "fit_temperature",
    "forward_flops",
    "fpr_at_tpr",
    "images_per_second",
    "loss_gradient",
    "negative_log_likelihood",
    "ood_scores",
    "optimal_aurc",
    "parameter_count",
    "pgd_l2",
    "pgd_linf",
    "reliability_bins",
    "risk_coverage_curve",
    "robust_subset_indices",
    "run_attack",
    "selective_risk",
    "synthetic_ood_images",
]
