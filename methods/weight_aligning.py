"""Weight Aligning (Zhao, Xiao, Gan, Zhang and Xia, "Maintaining Discrimination and Fairness in Class
Incremental Learning", CVPR 2020; catalogue T71).

Discrimination: knowledge distillation from the model as it was at the end of the previous task (a frozen
snapshot taken in `on_task_end`, kept in the checkpoint state) on the old classes' logits,
L = (1 - lambda) * CE(seen classes) + lambda * T^2 * KL(p_old^T || q_old^T), lambda = |old| / |seen|.
Fairness: after each task, the new classes' classifier rows (weights and bias, so their logits scale alike)
are multiplied by gamma = mean ||w_old|| / mean ||w_new|| over the seen classes, so the new classes' mean
weight norm equals the old ones'; at the end of task 0 there is nothing to align.

Assumptions: like the paper, training replays a small exemplar memory (`memory_size`, 0 for none); ours is
a class-balanced reservoir (`methods._replay`) rather than iCaRL's herding, the same memory `er` uses. The
paper also clips the classifier's weights to be non-negative after each step (`positive_weights`, off by
default: the catalogue does not list it). It needs a task stream (a benchmark's `scenario.continual`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange
from methods._layers import output_layer
from methods._replay import ReservoirBuffer
from methods.er import seen_logits


class WeightAligningConfig(MethodConfig):
    temperature: float = Field(2.0, gt=0.0, description="T of the distillation on the old classes (paper: 2)")
    kd_weight: float | None = Field(None, ge=0.0, le=1.0,
                                    description="lambda; None: |old classes| / |seen classes| (the paper's)")
    memory_size: int = Field(500, ge=0, description="exemplars replayed beside each batch; 0 for none")
    positive_weights: bool = Field(False, description="clip the classifier's weights at 0 after every step")


def align_weights(head: nn.Linear, old: Sequence[int], new: Sequence[int]) -> float:
    """Scale the `new` rows of the classifier so their mean norm equals the `old` rows'; return gamma."""
    if not old or not new:
        return 1.0
    norms = head.weight.detach().norm(dim=1)
    gamma = float(norms[list(old)].mean() / norms[list(new)].mean().clamp(min=1e-12))
    rows = torch.tensor(list(new), device=head.weight.device)
    with torch.no_grad():
        head.weight[rows] *= gamma
        if head.bias is not None:
            head.bias[rows] *= gamma
    return gamma


def old_classes(ctx: TrainContext) -> list[int]:
    """Classes of the tasks before the current one."""
    current = set(ctx.task_classes)
    return [c for c in ctx.seen_classes if c not in current]


@register_method
class WeightAligning(Method):
    """Distil the previous task's model on old classes; align the new classes' weight norms after each task."""

    info = MethodInfo(
        name="weight_aligning",
        summary="Class-incremental KD from the previous task's model plus weight aligning of the new "
                "classes' classifier norms to the old classes' (WA).",
        paper="Zhao, Xiao, Gan, Zhang, Xia, Maintaining Discrimination and Fairness in Class Incremental "
              "Learning, CVPR 2020",
        needs=("task_stream",),
        cost_factor=2.5,  # the replay doubles the batch; the snapshot adds a forward pass
        claim=Claim("KD plus weight aligning significantly outperforms the state of the art in class-incremental "
                    "learning (no numbers); here: final average accuracy above the tuned erm",
                    metric="continual/avg_accuracy"),
    )
    Config = WeightAligningConfig
    search_space = {"temperature": FloatRange(low=1.0, high=4.0, log=True)}

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.memory = ReservoirBuffer(max(1, self.config.memory_size), balanced=True)
        self.previous: nn.Module | None = None
        self._pending_previous: dict[str, torch.Tensor] | None = None  # restored weights, until a model exists

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        self._restore_previous(ctx.plain_model(model))
        batch = images.shape[0]
        if self.config.memory_size > 0:
            self.memory.seed(ctx.seed + 1)
            self.memory.to(images.device)
            if len(self.memory) > 0:
                _, replay_images, replay_labels = self.memory.sample(batch)
                self.memory.add(images, labels)
                images, labels = torch.cat([images, replay_images]), torch.cat([labels, replay_labels])
            else:
                self.memory.add(images, labels)
        logits = model(images)
        ce = F.cross_entropy(seen_logits(logits, ctx.seen_classes), labels)
        old = old_classes(ctx)
        if self.previous is None or not old:
            return LossOutput(ce, logits=logits[:batch])
        t = self.config.temperature
        with torch.no_grad():
            target = self.previous(images).float()[:, old]
        kd = F.kl_div(F.log_softmax(logits.float()[:, old] / t, dim=1), F.log_softmax(target / t, dim=1),
                      reduction="batchmean", log_target=True) * (t * t)
        weight = self.config.kd_weight if self.config.kd_weight is not None else len(old) / len(ctx.seen_classes)
        loss = (1.0 - weight) * ce + weight * kd
        return LossOutput(loss, parts={"ce": ce.detach(), "kd": kd.detach()}, logits=logits[:batch])

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        if self.config.positive_weights:
            output_layer(model)[2].weight.clamp_(min=0.0)

    def on_task_end(self, model: nn.Module, ctx: TrainContext) -> None:
        if ctx.task > 0:
            align_weights(output_layer(model)[2], old_classes(ctx), ctx.task_classes)
        self.previous = copy.deepcopy(model).eval()
        for parameter in self.previous.parameters():
            parameter.requires_grad_(False)

    def _restore_previous(self, model: nn.Module) -> None:
        if self._pending_previous is None:
            return
        self.previous = copy.deepcopy(model).eval()
        self.previous.load_state_dict(self._pending_previous)
        for parameter in self.previous.parameters():
            parameter.requires_grad_(False)
        self._pending_previous = None

    def state_dict(self) -> dict[str, Any]:
        previous = None if self.previous is None else {k: v.detach().cpu().clone()
                                                       for k, v in self.previous.state_dict().items()}
        return {"memory": self.memory.state_dict(), "previous": previous or self._pending_previous}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "memory" in state:
            self.memory.load_state_dict(state["memory"])
        self.previous, self._pending_previous = None, state.get("previous")
