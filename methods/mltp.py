"""MLTP, the meta-learning based training procedure (Deng and Zhang, "Is the Meta-Learning Idea Able to
Improve the Generalization of Deep Neural Networks on the Standard Supervised Learning?", ICPR 2020;
catalogue T50).

Each mini-batch is a task. The update must not only lower the loss of the current batch i but make
a gradient step on it also lower the loss of a new batch j (MAML's look-ahead):

    L(theta) = [L_i(theta) + beta * L_j(theta - alpha * grad L_i(theta))] / (1 + beta)

The engine draws two loader batches per step (`candidate_batches`): `select_batch` returns the first as
the current task and keeps the second for `training_loss` as the new one (a batch that comes alone, the
last of an epoch, is split in halves). The engine's `samples_seen` counts the current batch only.

Assumptions (the abstract gives only the idea): the objective above with one inner SGD step of a fixed
inner learning rate alpha (no momentum or weight decay inside) and a weight beta on the look-ahead term,
as in MAML/MLDG-style training, divided by 1 + beta so the gradient keeps ERM's scale and the tuned
learning rate means the same (an undivided 20-step smoke run blew up at lr 0.065). Second-order by
default (the gradient flows through grad L_i, via `torch.func.functional_call`); first-order (grad L_i
treated as a constant) optional. The virtual step's
forward pass uses batch statistics like any train-mode pass, on copies of the BatchNorm buffers, so
running statistics are updated once per step, by the current batch. Unlabelled images do not count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from harness.method import (
    Batch,
    Claim,
    LossOutput,
    Method,
    MethodConfig,
    MethodInfo,
    TrainContext,
    labelled_cross_entropy,
    register_method,
)
from harness.search_space import FloatRange


class MLTPConfig(MethodConfig):
    inner_lr: float = Field(0.05, gt=0.0, description="alpha: learning rate of the virtual step on the current batch")
    meta_weight: float = Field(1.0, ge=0.0, description="beta: weight of the new batch's loss after the virtual step")
    first_order: bool = Field(False, description="treat grad L_i as a constant (no second derivatives)")


def look_ahead_loss(model: nn.Module, current: Batch, new: Batch, inner_lr: float, first_order: bool = False,
                    net: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_i(theta), L_j(theta - inner_lr * grad L_i(theta)), logits of the current batch).

    `model` runs the current batch (it may be a data-parallel wrapper); `net` (default `model`) is the
    plain module whose parameters take the virtual step.
    """
    net = net if net is not None else model
    logits = model(current[0])
    loss_current = labelled_cross_entropy(logits, current[1])
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_current, [p for _, p in named], create_graph=not first_order,
                                retain_graph=True, allow_unused=True)
    stepped = {name: p if g is None else p - inner_lr * (g.detach() if first_order else g)
               for (name, p), g in zip(named, grads, strict=True)}
    buffers = {name: b.clone() for name, b in net.named_buffers()}  # the virtual pass leaves running stats alone
    loss_new = labelled_cross_entropy(functional_call(net, {**buffers, **stepped}, (new[0],)), new[1])
    return loss_current, loss_new, logits


@register_method
class MLTP(Method):
    """Minimise the current batch's loss plus a new batch's loss after a virtual step on the current one."""

    info = MethodInfo(
        name="mltp",
        summary="Meta-learning look-ahead: a step on the current batch must also lower a new batch's loss.",
        paper="Deng, Zhang, Is the Meta-Learning Idea Able to Improve the Generalization of Deep Neural "
              "Networks on the Standard Supervised Learning?, ICPR 2020",
        cost_factor=4.5,  # two batches per step, second-order backward through the inner gradient (~4.5x on CPU)
        claim=Claim("look-ahead meta-training gives consistent accuracy improvements over standard training (no numbers)"),
    )
    Config = MLTPConfig
    search_space = {"inner_lr": FloatRange(low=0.005, high=0.5, log=True),
                    "meta_weight": FloatRange(low=0.25, high=2.0, log=True)}

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self._new_task: Batch | None = None  # held from select_batch to training_loss of the same step

    def candidate_batches(self, ctx: TrainContext) -> int:
        return 2

    def select_batch(self, model: nn.Module, candidates: Sequence[Batch], ctx: TrainContext) -> Batch:
        """The first batch is the current task; the second, if any, is kept as the new one."""
        self._new_task = candidates[1] if len(candidates) > 1 else None
        return candidates[0]

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        new, self._new_task = self._new_task, None
        batch = images.shape[0]
        if new is None:  # no second batch: the halves of this one play the two tasks
            half = images.shape[0] // 2
            if half == 0:
                return super().training_loss(model, images, labels, ctx)
            images, labels, new = images[:half], labels[:half], (images[half:], labels[half:])
        cfg = self.config
        loss_current, loss_new, logits = look_ahead_loss(model, (images, labels), new, cfg.inner_lr,
                                                         cfg.first_order, net=ctx.plain_model(model))
        loss = (loss_current + cfg.meta_weight * loss_new) / (1.0 + cfg.meta_weight)  # ERM's gradient scale
        return LossOutput(loss, parts={"current": loss_current.detach(), "look_ahead": loss_new.detach()},
                          logits=logits if logits.shape[0] == batch else None)
