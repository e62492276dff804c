"""Group-wise post-training quantisation with a short distillation stage (catalogue T77: "Towards Low-Bit
Quantization with Limited Data").

Training is ERM. `finalize` fake-quantises every conv/linear weight group-wise: the output channels are cut
into groups of `group_size` consecutive channels (between per-channel and per-layer quantisation), each
group with its own symmetric uniform grid, scale = max|w| / (2^(bits-1) - 1), so a group holds at most
2^bits - 1 distinct levels; each quantised layer carries `weight_bits` (read by the `compression` metric).
With `kd_steps` > 0 the quantised model is then distilled from its FP32 self on `kd_samples` training
images (KL between the two softmaxes, straight-through gradients through the rounding, BatchNorm
statistics frozen), and re-quantised. With `activation_bits` each quantised layer's input is also
fake-quantised, per tensor, on an asymmetric grid whose range is calibrated on `calibration_samples`
training images.

Assumptions: the paper's two-stage KD is a layer-wise stage (each layer matches the FP32 layer's output
independently) then a joint global stage; only the global stage is implemented. Weights are stored as
fake-quantised floats (a CPU int kernel is not used), so latency does not change; weight bytes do.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from harness.data import ImageArrays
from harness.evaluation.efficiency import WEIGHT_LAYERS, weight_layers
from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange, IntRange
from methods._layers import replace_modules

KD_BATCH = 64


class GroupwisePTQConfig(MethodConfig):
    bits: int = Field(4, ge=2, le=8, description="weight bits (symmetric grid of 2^bits - 1 levels per group)")
    group_size: int = Field(8, ge=1, description="output channels per quantisation group (each has its own scale)")
    activation_bits: int | None = Field(None, ge=2, le=16,
                                        description="fake-quantise each layer's input at these bits; None: off")
    calibration_samples: int = Field(512, ge=1, description="training images calibrating the activation ranges")
    kd_steps: int = Field(50, ge=0, description="steps of distillation from the FP32 model after quantising; 0: off")
    kd_samples: int = Field(256, ge=1, description="training images the distillation sees (limited data)")
    kd_lr: float = Field(1e-4, gt=0.0, description="Adam learning rate of the distillation stage")


def quantize_groupwise(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Symmetric uniform fake-quantisation with one scale per group of `group_size` output channels."""
    levels = 2 ** (bits - 1) - 1
    rows = weight.reshape(weight.shape[0], -1)
    groups = rows.split(group_size)
    quantized = []
    for group in groups:
        scale = group.abs().max().clamp(min=1e-12) / levels
        quantized.append(torch.round(group / scale).clamp(-levels, levels) * scale)
    return torch.cat(quantized).view_as(weight)


class StraightThroughQuantizer(nn.Module):
    """A parametrisation: the forward uses the quantised weight, the backward passes gradients straight through."""

    def __init__(self, bits: int, group_size: int) -> None:
        super().__init__()
        self.bits, self.group_size = bits, group_size

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (quantize_groupwise(weight, self.bits, self.group_size) - weight).detach()


class InputFakeQuant(nn.Module):
    """Observes its input's range while calibrating, then rounds it to an asymmetric grid of 2^bits levels."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits, self.calibrating = bits, True
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.low.copy_(torch.minimum(self.low, x.detach().min()))
            self.high.copy_(torch.maximum(self.high, x.detach().max()))
            return x
        scale = ((self.high - self.low) / (2 ** self.bits - 1)).clamp(min=1e-12)
        return torch.round((x - self.low) / scale).clamp(0, 2 ** self.bits - 1) * scale + self.low


def training_images(data: ImageArrays, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """A seeded random `count` of the training images, as floats in [0, 1] on `device`."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    return data.images[order].to(device).float() / 255.0


@register_method
class GroupwisePTQ(Method):
    """ERM training, then group-wise weight fake-quantisation, a short KD from FP32, optional activation quant."""

    info = MethodInfo(
        name="groupwise_ptq",
        summary="Post-training group-wise weight quantisation (per group of output channels), short KD from "
                "the FP32 model on a few samples, optional calibrated activation fake-quant.",
        paper="Towards Low-Bit Quantization with Limited Data (catalogue T77)",
        cost_factor=1.0,  # training is ERM; the post-training stage is a few hundred images
        claim=Claim("group-wise quantisation with two-stage KD on limited data significantly improves low-bit "
                    "accuracy (no numbers); here: 4-bit weights within 1 pp of the FP32 tuned erm",
                    kind="no_worse", margin=0.01),
    )
    Config = GroupwisePTQConfig
    # bits and group_size set the compression (fixed by the suite, not tuned for accuracy)
    search_space = {"kd_lr": FloatRange(low=1e-5, high=1e-3, log=True), "kd_steps": IntRange(low=0, high=200)}

    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        cfg = self.config
        full_precision = copy.deepcopy(model).eval()
        layers = [module for _, module in weight_layers(model)]
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", StraightThroughQuantizer(cfg.bits, cfg.group_size))
        if cfg.kd_steps > 0:
            self._distill(model, full_precision, training_images(data, cfg.kd_samples, seed=1, device=ctx.device))
        with torch.no_grad():
            for layer in layers:
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
                layer.weight.copy_(quantize_groupwise(layer.weight, cfg.bits, cfg.group_size))
                layer.weight_bits = cfg.bits
        if cfg.activation_bits is not None:
            self._calibrate_inputs(model, training_images(data, cfg.calibration_samples, seed=2, device=ctx.device))
        return model.eval()

    def _distill(self, model: nn.Module, teacher: nn.Module, images: torch.Tensor) -> None:
        """The global KD stage: match the FP32 model's softmax, straight-through the rounding, BN frozen."""
        model.eval()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.config.kd_lr)
        generator = torch.Generator().manual_seed(3)
        with torch.enable_grad():
            for _ in range(self.config.kd_steps):
                batch = images[torch.randint(len(images), (min(KD_BATCH, len(images)),), generator=generator)]
                with torch.no_grad():
                    target = F.log_softmax(teacher(batch).float(), dim=1)
                loss = F.kl_div(F.log_softmax(model(batch).float(), dim=1), target, reduction="batchmean",
                                log_target=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _calibrate_inputs(self, model: nn.Module, images: torch.Tensor) -> None:
        """Put an input fake-quantiser before every quantised layer and calibrate its range on `images`."""
        bits = self.config.activation_bits
        assert bits is not None
        replace_modules(model, lambda m: isinstance(m, WEIGHT_LAYERS),
                        lambda layer: nn.Sequential(InputFakeQuant(bits), layer))
        model.eval()
        for chunk in images.split(256):
            model(chunk)
        for module in model.modules():
            if isinstance(module, InputFakeQuant):
                module.calibrating = False
