"""Knowledge-adjusted distillation with abstention (Xu, Pu and Zhao, "Knowledge Distillation with a Precise
Teacher and Prediction with Abstention", ICPR 2020; catalogue T1).

Two changes to KD. (a) Knowledge adjustment: rather than mixing a teacher loss and a label loss, the
teacher's soft targets are corrected with the label; where the teacher's top class is wrong, its
probability is swapped with the true class's, so the target keeps the teacher's shape but ranks the
label first. (b) The student abstains like a deep gambler (K+1 outputs) and is trained on those targets:

    L = -sum_i q_i log(p_i + p_abstain / o),   q = KA(softmax(z_teacher / T))

Assumptions (the abstract gives no rule): KA is the "probability shift" of Wen et al. ("Preparing
Lessons: Improve Knowledge Distillation with Better Supervision", 2019), which the catalogue names as
the standard form; the soft targets replace the one-hot label inside the gamblers' loss; T softens only
the teacher (the student bets with its test-time distribution, so its abstention stays calibrated at
T = 1); the optional cross-entropy warm-up of `gambler` uses the adjusted targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import TeacherMargin
from harness.search_space import FloatRange
from methods._common import add_abstain_output, check_payoff, gambler_loss, teacher_logits


class GamblerKDConfig(MethodConfig):
    payoff: float = Field(2.2, gt=1.0, description="o: reward of a correct bet; abstaining pays 1 (needs o <= K)")
    temperature: float = Field(1.0, gt=0.0, description="T: softens the teacher's targets")
    pretrain_fraction: float = Field(1 / 3, ge=0.0, lt=1.0,
                                     description="fraction of steps trained with soft-target cross-entropy first")


def knowledge_adjustment(teacher_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Swap the probabilities of the teacher's argmax and the label wherever they differ (Wen et al.)."""
    rows = torch.arange(labels.shape[0], device=labels.device)
    predicted = teacher_probs.argmax(dim=1)
    adjusted = teacher_probs.clone()
    adjusted[rows, labels] = teacher_probs[rows, predicted]
    adjusted[rows, predicted] = teacher_probs[rows, labels]
    return adjusted


@register_method
class GamblerKD(Method):
    """A deep-gambler student learning from label-corrected teacher targets."""

    info = MethodInfo(
        name="gambler_kd",
        summary="Label-corrected teacher targets for a deep-gamblers student that can abstain.",
        paper="Xu, Pu, Zhao, Knowledge Distillation with a Precise Teacher and Prediction with Abstention, "
              "ICPR 2020",
        needs=("teacher",),
        modifies_model=True,
        cost_factor=1.3,  # one no-grad teacher forward per step,
        claim=Claim("knowledge-adjusted KD with gambler abstention: higher prediction accuracy (and lower coverage error)",
                    preconditions=(TeacherMargin(points=0.03),)),  # a teacher clearly above the student
    )
    Config = GamblerKDConfig
    search_space = {
        "payoff": FloatRange(low=1.5, high=6.0),
        "temperature": FloatRange(low=1.0, high=8.0, log=True),
        "pretrain_fraction": FloatRange(low=0.0, high=0.5),
    }

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        check_payoff(self.config.payoff, ctx.num_classes)
        return add_abstain_output(model, ctx.num_classes)

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        cfg, k = self.config, ctx.num_classes
        teacher = teacher_logits(ctx, images, "gambler_kd")
        targets = knowledge_adjustment(F.softmax(teacher / cfg.temperature, dim=1), labels)
        logits = model(images)
        if ctx.progress < cfg.pretrain_fraction:
            loss = -(targets * F.log_softmax(logits[:, :k].float(), dim=1)).sum(dim=1).mean()
            return LossOutput(loss, parts={"pretrain_ce": loss.detach()}, logits=logits)
        loss = gambler_loss(logits, targets, cfg.payoff, k)
        return LossOutput(loss, parts={"gambler": loss.detach()}, logits=logits)
