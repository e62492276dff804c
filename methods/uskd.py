"""Universal self-knowledge distillation, USKD (Yang, Zeng, Li, Zhang, Yuan and Li, "From Knowledge
Distillation to Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft
Labels", ICCV 2023; catalogue T11): NKD's soft labels made without a teacher.

Target: the student's own target probability, squared and re-centred on 1 over the batch,
p_t = S_t^2 + 1 - mean(S_t^2), weights -log S_t. Non-target: a linear "weak" classifier on a pooled
intermediate feature map (trained with mu * CE, label smoothing 0.1) and the final output rank the
non-target classes; rank k gets the Zipf weight 1/k, renormalised over the K-1 non-target classes:

    L = CE(z, y) + alpha * (-p_t log S_t) + beta * CE(Zipf labels, N(S)) + mu * CE_0.1(z_weak, y)

Assumptions (the abstract says only "the rank of the intermediate feature with Zipf's law"; details
follow the authors' code, yzd-v/cls_KD `USKDLoss`): the feature is the output of the last stage before
the final width, e.g. stage 3 of 4 in ResNet-18 as in their configs; the ranking score is the sum of the
weak and final non-target probabilities, each renormalised (their code adds the final *log*-probabilities,
which we read as a slip); the target takes rank 1, so non-target ranks start at 2. `prepare_model` adds
the weak classifier (run in training mode only, so inference cost is unchanged, its parameters are
counted). Without it (an unprepared model) the final output alone ranks and the weak term is absent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange
from methods._common import drop_target_column, non_target_log_softmax


class USKDConfig(MethodConfig):
    alpha: float = Field(1.0, ge=0.0, description="weight of the soft target-class term")
    beta: float = Field(0.1, ge=0.0, description="weight of the Zipf non-target term")
    mu: float = Field(0.005, ge=0.0, description="weight of the weak classifier's cross-entropy")


class WithWeakClassifier(nn.Module):
    """`backbone` plus a linear classifier on its pooled feature map at `tap`, evaluated in training mode only."""

    def __init__(self, backbone: nn.Module, tap: str, channels: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.tap = tap
        self.weak = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        self.weak_logits: torch.Tensor | None = None  # of the last training-mode forward; taken by the loss

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.backbone(images)
        captured: list[torch.Tensor] = []
        tap = self.backbone.get_submodule(self.tap)
        handle = tap.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            logits = self.backbone(images)
        finally:
            handle.remove()
        self.weak_logits = self.weak(captured[-1])
        return logits


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def intermediate_tap(model: nn.Module) -> tuple[str, int]:
    """(module name, channels) of the last block before the final width in the model's main trunk.

    The trunk is the nn.Sequential with the most convolutional children (`features` or `stages` in
    `harness.models`); a child's width is its last convolution's output channels.
    """
    trunks = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Sequential)]
    name, trunk = max(trunks, key=lambda item: sum(_has_conv(c) for c in item[1].children()), default=("", None))
    widths: list[int] = []
    for child in trunk.children() if trunk is not None else ():
        convs = [m.out_channels for m in child.modules() if isinstance(m, nn.Conv2d)]
        widths.append(convs[-1] if convs else (widths[-1] if widths else 0))
    narrower = [i for i, width in enumerate(widths) if 0 < width != widths[-1]]
    if not narrower:
        raise ValueError("uskd needs a convolutional trunk with at least two widths for its intermediate feature")
    index = narrower[-1]
    return f"{name}.{index}" if name else str(index), widths[index]


def zipf_non_target_labels(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B,K-1] soft labels: non-target classes ranked by `scores` (descending) get 1/(rank + 1), normalised."""
    non_target = drop_target_column(scores, labels)
    ranks = non_target.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # 0 = highest score
    weights = 1.0 / (ranks.to(scores.dtype) + 2.0)  # the target holds rank 1
    return weights / weights.sum(dim=1, keepdim=True)


def soft_target_weights(target_probs: torch.Tensor) -> torch.Tensor:
    """p_t = S_t^2 + 1 - mean_batch(S_t^2): above 1 for confident examples, below 1 for hard ones."""
    squared = target_probs.detach() ** 2
    return squared + 1.0 - squared.mean()


def _renormalised_non_target(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    target = probs.gather(1, labels.unsqueeze(1))
    return probs / (1.0 - target).clamp_min(1e-6)


@register_method
class UniversalSelfKD(Method):
    """Teacher-free NKD: soft target from the student's own confidence, Zipf non-target labels."""

    info = MethodInfo(
        name="uskd",
        summary="Teacher-free self-KD: smoothed own target probability plus Zipf-law non-target labels.",
        paper="Yang et al., From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with "
              "Normalized Loss and Customized Soft Labels, ICCV 2023",
        modifies_model=True,
        cost_factor=1.0,  # one extra linear layer on a pooled feature map,
        claim=Claim("teacher-free USKD beats plain training (+1.17% MobileNet, +0.55% DeiT-Tiny on ImageNet) at negligible cost"),
    )
    Config = USKDConfig
    search_space = {
        "alpha": FloatRange(low=0.05, high=1.0, log=True),
        "beta": FloatRange(low=0.01, high=1.0, log=True),
        "mu": FloatRange(low=0.001, high=0.1, log=True),
    }

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        tap, channels = intermediate_tap(model)
        return WithWeakClassifier(model, tap, channels, ctx.num_classes)

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        logits = model(images)
        wrapper = ctx.plain_model(model)  # the plain model: under DDP `model` is the wrapper
        weak_logits = getattr(wrapper, "weak_logits", None)
        if weak_logits is not None:
            wrapper.weak_logits = None  # drop the graph reference once used
        cfg, student = self.config, logits.float()
        log_probs = F.log_softmax(student, dim=1)
        probs = log_probs.exp()
        target_log_probs = log_probs.gather(1, labels.unsqueeze(1))
        hard = F.cross_entropy(student, labels)
        target = -(soft_target_weights(target_log_probs.exp()) * target_log_probs).mean()
        scores = _renormalised_non_target(probs.detach(), labels)
        parts = {"hard": hard.detach(), "target": target.detach()}
        loss = hard + cfg.alpha * target
        if weak_logits is not None:
            weak = weak_logits.float()
            scores = scores + _renormalised_non_target(F.softmax(weak.detach(), dim=1), labels)
            weak_loss = F.cross_entropy(weak, labels, label_smoothing=0.1)
            loss = loss + cfg.mu * weak_loss
            parts["weak"] = weak_loss.detach()
        zipf = zipf_non_target_labels(scores, labels)
        non_target = -(zipf * non_target_log_softmax(student, labels)).sum(dim=1).mean()
        parts["non_target"] = non_target.detach()
        return LossOutput(loss + cfg.beta * non_target, parts=parts, logits=logits)
