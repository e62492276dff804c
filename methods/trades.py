"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019).

The robust error splits into the natural error plus a boundary error, which TRADES bounds by a
smoothness term: fit the labels on clean inputs, and keep the prediction stable inside the eps-ball:

    L = CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x')),   x' = argmax_{||x' - x||_inf <= eps} KL(...)

x' comes from k steps of projected sign-gradient ascent on the KL (not on the label loss, as in PGD
training), started at x + 0.001 * N(0, I). As in the authors' code, the attack runs the model in eval
mode and the outer KL differentiates through both the clean and the adversarial prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.evaluation.attacks import default_pgd_step_size
from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange


class TRADESConfig(MethodConfig):
    epsilon: float = Field(0.1, gt=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    steps: int = Field(3, ge=1, description="k: ascent steps of the inner maximisation")
    step_size: float | None = Field(None, gt=0.0, description="per-step move; default 2.5 * eps / k")
    beta: float = Field(6.0, ge=0.0, description="1/lambda: weight of the robustness (KL) term")


def kl_divergence(clean_logits: torch.Tensor, other_logits: torch.Tensor,
                  reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(clean) || softmax(other)), summed over classes."""
    return F.kl_div(F.log_softmax(other_logits.float(), dim=1), F.log_softmax(clean_logits.float(), dim=1),
                    reduction=reduction, log_target=True)


def kl_attack(model: nn.Module, images: torch.Tensor, *, epsilon: float, steps: int,
              step_size: float) -> torch.Tensor:
    """Projected sign-gradient ascent on KL(f(x) || f(x')) in the L-inf ball and [0,1]; detached.

    The model runs in eval mode and is handed back in the mode it came in; only the input is differentiated.
    """
    images = images.detach()
    lower, upper = (images - epsilon).clamp(0.0, 1.0), (images + epsilon).clamp(0.0, 1.0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            clean_logits = model(images)
        adversarial = torch.clamp(images + 0.001 * torch.randn_like(images), lower, upper)
        for _ in range(steps):
            adversarial.requires_grad_(True)
            with torch.enable_grad():
                divergence = kl_divergence(clean_logits, model(adversarial), reduction="sum")
                (gradient,) = torch.autograd.grad(divergence, adversarial)
            adversarial = torch.clamp(adversarial.detach() + step_size * gradient.sign(), lower, upper)
    finally:
        model.train(was_training)
    return adversarial.detach()


def trades_objective(model: nn.Module, images: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
                     beta: float) -> LossOutput:
    """CE on the clean inputs plus beta times the KL from the clean to the adversarial prediction."""
    logits = model(images)
    natural = F.cross_entropy(logits.float(), labels)
    robust = kl_divergence(logits, model(adversarial))
    parts = {"natural": natural.detach(), "robust_kl": robust.detach()}
    return LossOutput(natural + beta * robust, parts=parts, logits=logits)


@register_method
class TRADES(Method):
    """Clean cross-entropy plus a KL penalty on the worst-case change of the prediction in the eps-ball."""

    info = MethodInfo(
        name="trades",
        summary="TRADES: clean CE + beta * KL(f(x) || f(x')) with x' a PGD maximiser of that KL.",
        paper="Zhang et al., Theoretically Principled Trade-off between Robustness and Accuracy, ICML 2019",
        cost_factor=5.3,  # at the default 3 steps: 3 attack passes, a no-grad clean forward, 2 trained passes,
        claim=Claim("TRADES improves robust accuracy under PGD-L-inf (and trades it against clean accuracy)", metric="test/pgd_linf_accuracy"),
    )
    Config = TRADESConfig
    search_space = {"beta": FloatRange(low=1.0, high=10.0, log=True)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        cfg = self.config
        step_size = cfg.step_size or default_pgd_step_size(cfg.epsilon, cfg.steps)
        adversarial = kl_attack(model, images, epsilon=cfg.epsilon, steps=cfg.steps, step_size=step_size)
        return trades_objective(model, images, adversarial, labels, cfg.beta)
