"""Deep gamblers: learning to abstain (Liu, Wang, Liang, Salakhutdinov, Morency and Ueda, "Deep Gamblers:
Learning to Abstain with Portfolio Theory", NeurIPS 2019); the selective half of catalogue T1.

The classifier gets a (K+1)-th output, "abstain". Training is a horse race: the model bets p_i on each
class and keeps p_abstain in reserve; a correct bet pays o, the reserve pays 1, so it maximises the
doubling rate, i.e. minimises -log(p_y + p_abstain / o) with the softmax over all K+1 outputs. A payoff
o close to 1 makes abstaining cheap; o = K makes it worthless (1 < o <= K is required).

As in the authors' code, training may begin with plain cross-entropy on the K class logits for
`pretrain_fraction` of the steps, so the model does not settle on always abstaining (their CIFAR-10
runs pretrain 100 of 300 epochs). At test time the model returns K+1 logits, the harness's abstain
convention: the selective metrics rank by 1 - P(abstain) and predict the argmax of the K class logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange
from methods._common import add_abstain_output, check_payoff, gambler_loss


class GamblerConfig(MethodConfig):
    payoff: float = Field(2.2, gt=1.0, description="o: reward of a correct bet; abstaining pays 1 (needs o <= K)")
    pretrain_fraction: float = Field(1 / 3, ge=0.0, lt=1.0,
                                     description="fraction of steps trained with plain cross-entropy first")


@register_method
class DeepGamblers(Method):
    """K+1 outputs, the last one abstains; the loss is the negative log doubling rate of the bet."""

    info = MethodInfo(
        name="gambler",
        summary="Deep gamblers: an abstain output trained with -log(p_y + p_abstain / o).",
        paper="Liu et al., Deep Gamblers: Learning to Abstain with Portfolio Theory, NeurIPS 2019",
        modifies_model=True,
        claim=Claim("the deep gamblers' loss gives better selective classification (lower risk across coverages) than the softmax response", metric="test/aurc"),
    )
    Config = GamblerConfig
    search_space = {"payoff": FloatRange(low=1.5, high=6.0), "pretrain_fraction": FloatRange(low=0.0, high=0.5)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        check_payoff(self.config.payoff, ctx.num_classes)
        return add_abstain_output(model, ctx.num_classes)

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        logits = model(images)
        if ctx.progress < self.config.pretrain_fraction:
            loss = F.cross_entropy(logits[:, : ctx.num_classes].float(), labels)
            return LossOutput(loss, parts={"pretrain_ce": loss.detach()}, logits=logits)
        loss = gambler_loss(logits, labels, self.config.payoff, ctx.num_classes)
        abstain = F.softmax(logits.float(), dim=1)[:, ctx.num_classes:].sum(1).mean()
        return LossOutput(loss, parts={"gambler": loss.detach(), "p_abstain": abstain.detach()}, logits=logits)
