"""Channel pruning in one training run with polarization-regularised gates (catalogue T88: "Learning a
Consensus Sub-Network with Polarization Regularization"; the regulariser is Zhuang et al., "Neuron-level
Structured Pruning using Polarization Regularizer", NeurIPS 2020).

Every BatchNorm2d gets a gate per channel, g in [0, 1] (initialised to 1, clamped after each step),
multiplying its output. The loss adds lambda * (t * ||g||_1 - ||g - mean(g)||_1), the mean taken over
all gates of the network: the L1 term pushes every gate down, the second term pushes gates away from
their mean, so they split into a cluster at 0 and one high. `finalize` removes the `target_sparsity`
share of channels with the lowest gates (globally; plus any gate below `threshold`, never a layer's last
channel): the channel's BatchNorm scale and shift and the filter of the convolution feeding it become 0,
so it outputs exactly 0; the kept gates are folded into the BatchNorm scale and shift, and the gated
layers become plain BatchNorm2d again (gates removed at inference, the model has its original shape).

Assumptions: gates sit after the BatchNorms (the catalogue's "binary gating modules" are continuous gates
here); the convolution feeding a BatchNorm is the one just before it in module order (true for every
model of `harness.models`). A removed channel's weights in the *next* layer are left as they are, so the
`compression` metric counts only the removed filters: a conservative count of what channel pruning saves.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from harness.data import ImageArrays
from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange
from methods._layers import replace_modules


class GatedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d whose output channels are multiplied by gates (same parameter names, plus `gate`)."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                         track_running_stats=norm.track_running_stats, device=norm.running_mean.device
                         if norm.running_mean is not None else None)
        self.load_state_dict(norm.state_dict())
        self.gate = nn.Parameter(torch.ones(norm.num_features, device=self.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gate.view(1, -1, 1, 1)


class PolarizationConfig(MethodConfig):
    target_sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="share of gated channels removed by finalize")
    strength: float = Field(0.01, ge=0.0, description="lambda: weight of the polarization regulariser")
    t: float = Field(1.0, gt=0.0, description="t: how hard the L1 term pushes every gate down (Zhuang et al.)")
    threshold: float = Field(0.05, ge=0.0, le=1.0, description="gates below it are removed whatever the target")


def polarization(gates: torch.Tensor, t: float) -> torch.Tensor:
    """Zhuang et al.'s regulariser t * ||g||_1 - ||g - mean(g)||_1 over a flat vector of gates."""
    return t * gates.abs().sum() - (gates - gates.mean()).abs().sum()


def gated_layers(model: nn.Module) -> list[GatedBatchNorm2d]:
    return [module for module in model.modules() if isinstance(module, GatedBatchNorm2d)]


def channels_to_remove(gates: list[torch.Tensor], target: float, threshold: float) -> list[torch.Tensor]:
    """Per layer, a boolean mask of the channels to remove: the lowest `target` share globally, plus every gate
    below `threshold`, but never all of a layer's channels (its highest gate stays)."""
    flat = torch.cat(gates)
    remove = flat < threshold
    count = round(target * flat.numel())
    if count > 0:
        remove[flat.argsort()[:count]] = True
    masks = list(remove.split([g.numel() for g in gates]))
    for gate, mask in zip(gates, masks, strict=True):
        if bool(mask.all()):
            mask[gate.argmax()] = False
    return masks


def feeding_convolutions(model: nn.Module) -> dict[nn.Module, nn.Conv2d]:
    """Each gated BatchNorm -> the convolution just before it in module order (None if none fits)."""
    feeding, last_conv = {}, None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last_conv = module
        elif isinstance(module, GatedBatchNorm2d) and last_conv is not None \
                and last_conv.out_channels == module.num_features:
            feeding[module] = last_conv
    return feeding


@register_method
class PolarizationPrune(Method):
    """Channel gates pushed to 0 or high by the polarization regulariser; low gates removed at the end."""

    info = MethodInfo(
        name="polarization_prune",
        summary="Channel gates after each BatchNorm with Zhuang et al.'s polarization regulariser; "
                "finalize removes the lowest-gated channels and folds the rest.",
        paper="Learning a Consensus Sub-Network with Polarization Regularization (catalogue T88); Zhuang et al., "
              "Neuron-level Structured Pruning using Polarization Regularizer, NeurIPS 2020",
        modifies_model=True,
        cost_factor=1.05,  # one multiply per channel and a regulariser over a few hundred gates
        claim=Claim("50% of connections removed with less than 1% accuracy drop (CIFAR)", kind="no_worse",
                    margin=0.01),
    )
    Config = PolarizationConfig
    search_space = {"strength": FloatRange(low=1e-3, high=5e-2, log=True), "t": FloatRange(low=0.6, high=1.4)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        if replace_modules(model, lambda m: type(m) is nn.BatchNorm2d, GatedBatchNorm2d) == 0:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d to gate")
        return model

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        out = super().training_loss(model, images, labels, ctx)
        gates = torch.cat([layer.gate for layer in gated_layers(model)])
        regulariser = polarization(gates, self.config.t)
        return LossOutput(out.loss + self.config.strength * regulariser,
                          parts={"polarization": regulariser.detach()}, logits=out.logits)

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        for layer in gated_layers(model):
            layer.gate.clamp_(0.0, 1.0)

    @torch.no_grad()
    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        layers = gated_layers(model)
        if not layers:
            return model
        feeding = feeding_convolutions(model)
        gates = [layer.gate.detach().clamp(0.0, 1.0) for layer in layers]
        removed = channels_to_remove(gates, self.config.target_sparsity, self.config.threshold)
        for layer, gate, remove in zip(layers, gates, removed, strict=True):
            kept = torch.where(remove, torch.zeros_like(gate), gate)
            layer.weight.mul_(kept)
            layer.bias.mul_(kept)
            if layer in feeding:
                feeding[layer].weight[remove] = 0.0
        replace_modules(model, lambda m: isinstance(m, GatedBatchNorm2d), _plain_batch_norm)
        return model


def _plain_batch_norm(layer: GatedBatchNorm2d) -> nn.BatchNorm2d:
    """The BatchNorm2d a gated one folds into (its gates already multiplied into weight and bias)."""
    plain = nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                           track_running_stats=layer.track_running_stats, device=layer.weight.device)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "gate"})
    return plain.train(layer.training)
