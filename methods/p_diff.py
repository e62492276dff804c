"""P-DIFF (Hu, Zhao, Huang and Zhang, "P-DIFF: Learning Classifier with Noisy Labels based on Probability
Difference Distributions", ICPR 2020; catalogue T51).

Each example's probability difference delta = p_label - max_{j != label} p_j lies in [-1, 1]; noisy
labels pile up at negative delta. P-DIFF keeps the distribution of delta over a sliding window of recent
batches and drops (weight 0) the examples whose delta falls in its lowest `rate` fraction; the loss is
the cross-entropy of the rest, divided by the whole batch size. The rate ramps up over the first
`ramp_fraction` of training. With a known noise rate eps it is eps * ramp; without one (the default)
it is estimated as the share of the window below the threshold -1 + ramp (delta < 0 once ramped up),
re-estimated until the mean |delta| reaches `saturation` and then frozen.

Checked against the authors' Caffe layer (fistyee/P-DIFF, `PDIFFLayer`): delta, the window of 100
batches, the hard 0/1 weights and the automatic rate; their T_k = 20 of 200 epochs is ramp_fraction 0.1.
Assumptions: the window's exact empirical quantile replaces their 220-bin histogram, and training
progress replaces whole epochs. State (the window) lives in the method and restarts at step 0; each
data-parallel worker keeps its own window.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import MemorisationMeasurable
from harness.search_space import FloatRange


class PDiffConfig(MethodConfig):
    noise_rate: float | None = Field(None, ge=0.0, lt=1.0,
                                     description="known fraction of noisy labels; None estimates it (paper default)")
    ramp_fraction: float = Field(0.1, gt=0.0, le=1.0, description="T_k: fraction of training to ramp the rate up")
    window_batches: int = Field(100, ge=1, description="batches in the sliding window of the delta distribution")
    saturation: float = Field(0.9, gt=0.0, le=1.0, description="zeta: mean |delta| that freezes the estimated rate")


def probability_difference(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """delta [B] = p_label - (largest probability of another class)."""
    label_probs = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = probs.scatter(1, labels.unsqueeze(1), float("-inf"))
    return label_probs - others.max(dim=1).values


def keep_weights(delta: torch.Tensor, window: torch.Tensor, rate: float) -> torch.Tensor:
    """1.0 for examples whose delta is not among the lowest `rate` fraction of `window`, else 0.0."""
    threshold = window.sort().values[min(int(rate * window.numel()), window.numel() - 1)]
    return (delta >= threshold.to(delta.device)).to(delta.dtype)


@register_method
class PDiff(Method):
    """Cross-entropy that drops the examples whose probability difference looks most like label noise."""

    info = MethodInfo(
        name="p_diff",
        summary="P-DIFF: drop examples in the low tail of the probability-difference distribution (label noise).",
        paper="Hu, Zhao, Huang, Zhang, P-DIFF: Learning Classifier with Noisy Labels based on Probability "
              "Difference Distributions, ICPR 2020",
        claim=Claim("P-DIFF sample selection learns better from noisy labels than the alternatives (qualitative)",
                    # selection helps only once plain training starts fitting the flipped labels
                    preconditions=(MemorisationMeasurable(),)),
    )
    Config = PDiffConfig
    search_space = {"ramp_fraction": FloatRange(low=0.05, high=0.5), "saturation": FloatRange(low=0.7, high=0.99)}

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self._window: deque[torch.Tensor] = deque(maxlen=self.config.window_batches)
        self._estimated_rate: float | None = None

    def drop_rate(self, window: torch.Tensor, progress: float) -> float:
        """The fraction of the window's lowest deltas to drop at this point of training."""
        cfg = self.config
        ramp = min(1.0, progress / cfg.ramp_fraction)
        if cfg.noise_rate is not None:
            return cfg.noise_rate * ramp
        still_learning = progress <= cfg.ramp_fraction or float(window.abs().mean()) < cfg.saturation
        if self._estimated_rate is None or still_learning:
            self._estimated_rate = float((window < -1.0 + ramp).float().mean())
        return self._estimated_rate

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.step == 0:  # a new run
            self._window.clear()
            self._estimated_rate = None
        logits = model(images)
        log_probs = F.log_softmax(logits.float(), dim=1)
        per_example = F.nll_loss(log_probs, labels, reduction="none")
        delta = probability_difference(log_probs.detach().exp(), labels)
        self._window.append(delta.cpu())
        if len(self._window) < self.config.window_batches:  # the distribution is not yet estimated
            return LossOutput(per_example.mean(), parts={"kept": torch.ones(())}, logits=logits)
        window = torch.cat(tuple(self._window))
        rate = self.drop_rate(window, ctx.progress)
        weights = keep_weights(delta, window, rate)
        loss = (weights * per_example).sum() / labels.shape[0]
        return LossOutput(loss, parts={"kept": weights.mean(), "drop_rate": torch.tensor(rate)}, logits=logits)
