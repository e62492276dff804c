"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018).

Training solves the saddle-point problem min_theta E[ max_{||delta||_inf <= eps} L(theta, x + delta, y) ]:
the inner maximisation is approximated by k steps of projected gradient ascent from a random start
in the eps-ball (step size alpha), and the outer minimisation takes an SGD step on those worst-case
inputs. `clean_weight` > 0 mixes in the clean loss (a TRADES-free way to trade accuracy for robustness).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.evaluation.attacks import pgd_linf
from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange


class PGDATConfig(MethodConfig):
    epsilon: float = Field(0.1, gt=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    steps: int = Field(3, ge=1, description="k: PGD iterations of the inner maximisation")
    step_size: float | None = Field(None, gt=0.0, description="alpha; default 2.5 * eps / k")
    clean_weight: float = Field(0.0, ge=0.0, le=1.0, description="weight of the clean-input loss")


@register_method
class PGDAdversarialTraining(Method):
    """Train on PGD adversarial examples crafted against the current model."""

    info = MethodInfo(
        name="pgd_at",
        summary="Madry PGD-L-inf adversarial training (random start, k steps).",
        paper="Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018",
        cost_factor=4.0,
        claim=Claim("PGD adversarial training buys robust accuracy under PGD-L-inf attacks", metric="test/pgd_linf_accuracy"),
    )
    Config = PGDATConfig
    search_space = {"clean_weight": FloatRange(low=0.0, high=0.5)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        cfg = self.config
        step_size = cfg.step_size or 2.5 * cfg.epsilon / cfg.steps
        adversarial = pgd_linf(model, images, labels, epsilon=cfg.epsilon, steps=cfg.steps,
                               step_size=step_size, random_start=True, generator=None)
        robust = F.cross_entropy(model(adversarial).float(), labels)
        if cfg.clean_weight == 0.0:
            return LossOutput(robust, parts={"robust": robust.detach()})
        logits = model(images)
        clean = F.cross_entropy(logits.float(), labels)
        loss = (1.0 - cfg.clean_weight) * robust + cfg.clean_weight * clean
        return LossOutput(loss, parts={"robust": robust.detach(), "clean": clean.detach()}, logits=logits)
