"""Perlin-noise initialisation ("Initialization Using Perlin Noise", ICPR 2020 by the catalogue's seed
file; authors not given there; catalogue T111).

Before training, the network learns to classify synthetic Perlin-noise images into categories of
noise complexity, with no real image; the weights it reaches are the initialisation of the real run.
The abstract does not define the categories, so we assume: category c of K is single-octave gradient
noise whose lattice frequency f_c runs geometrically from 1 cell to image_size / 2 cells across the
image (the finest a pixel grid still shows), with random gradients and phase, each image min-max
scaled to [0, 1]. The pre-training uses a temporary K-way output layer; the model's own classifier
and its BatchNorm running statistics are then restored to their untouched state.

What the tests hold it to (our check, not a number from the paper): the pre-trained first-layer
filters are no longer spatially white; adjacent taps anti-correlate (derivative-like filters, which
tell noise frequencies apart), where the random initialisation's taps are uncorrelated.
The pre-training is seeded (from `ctx.generator`, else the run's torch seed) and leaves the global
RNG as it found it. Its compute is not yet part of the engine's training counters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.data import DATASETS
from harness.engine import TrainSettings, build_optimizer, warmup_cosine
from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.models import Normalize
from harness.search_space import FloatRange, IntRange
from methods._layers import output_layer


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)  # Perlin's quintic: zero first and second derivative at 0, 1


def perlin_noise(frequency: torch.Tensor, channels: int, size: int, generator: torch.Generator,
                 random_phase: bool = True) -> torch.Tensor:
    """Gradient noise [B, C, size, size], image b with `frequency[b]` lattice cells across its width.

    Pixel (i, j) sits at lattice coordinates (i, j) * f / size (+ a random phase); the noise is 0 on
    lattice points, as Perlin noise is, and is not normalised.
    """
    batch = frequency.shape[0]
    lattice = int(math.ceil(float(frequency.max()))) + 3
    angles = torch.rand(batch, channels, lattice, lattice, generator=generator) * (2 * math.pi)
    gradients = torch.stack((angles.cos(), angles.sin()), dim=-1)  # [B, C, L, L, 2]
    phase = torch.rand(batch, 2, generator=generator) if random_phase else torch.zeros(batch, 2)
    pixels = torch.arange(size, dtype=torch.float32) / size
    rows = pixels * frequency[:, None] + phase[:, :1]  # [B, S]
    cols = pixels * frequency[:, None] + phase[:, 1:]
    row0, col0 = rows.floor().long(), cols.floor().long()
    dy, dx = rows - row0, cols - col0
    index = torch.arange(batch)[:, None, None]

    def corner(oy: int, ox: int) -> torch.Tensor:  # gradient . offset, [B, S, S, C]
        g = gradients[index, :, (row0 + oy)[:, :, None], (col0 + ox)[:, None, :]]  # [B, S, S, C, 2]
        return g[..., 0] * (dy - oy)[:, :, None, None] + g[..., 1] * (dx - ox)[:, None, :, None]

    sy, sx = _fade(dy)[:, :, None, None], _fade(dx)[:, None, :, None]
    top = torch.lerp(corner(0, 0), corner(0, 1), sx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), sx)
    return torch.lerp(top, bottom, sy).permute(0, 3, 1, 2).contiguous()


def perlin_batch(batch: int, shape: tuple[int, int, int], categories: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1], complexity labels): label c has frequency (size / 2) ** (c / (K - 1))."""
    channels, size, _ = shape
    labels = torch.randint(categories, (batch,), generator=generator)
    frequency = (size / 2) ** (labels.float() / max(1, categories - 1))
    noise = perlin_noise(frequency, channels, size, generator)
    low = noise.amin(dim=(1, 2, 3), keepdim=True)
    high = noise.amax(dim=(1, 2, 3), keepdim=True)
    return (noise - low) / (high - low).clamp_min(1e-8), labels


def input_shape(model: nn.Module, ctx: TrainContext) -> tuple[int, int, int]:
    """(C, H, W) the model takes: `ctx.input_shape`, else the largest registered dataset shape with the
    model's channel count that the model accepts (sized heads accept only their own)."""
    if ctx.input_shape is not None:
        return ctx.input_shape
    normalize = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    if normalize is None:
        raise ValueError("perlin_init needs ctx.input_shape for a model without a Normalize layer")
    channels = normalize.mean.shape[1]
    sizes = sorted({DATASETS.get(n).info.image_size for n in DATASETS.names()
                    if DATASETS.get(n).info.channels == channels}, reverse=True)
    was_training = model.training
    model.eval()
    try:
        for size in sizes:
            try:
                with torch.no_grad():
                    model(torch.zeros(1, channels, size, size, device=normalize.mean.device))
                return channels, size, size
            except RuntimeError:
                continue
    finally:
        model.train(was_training)
    raise ValueError(f"no registered image size ({sizes}) fits the model; pass ctx.input_shape")


class PerlinInitConfig(MethodConfig):
    steps: int = Field(200, ge=1, description="pre-training steps on Perlin noise")
    batch_size: int = Field(64, ge=2, description="noise images per pre-training step")
    categories: int = Field(8, ge=2, le=64, description="K: complexity classes of the noise")
    lr: float = Field(0.05, gt=0.0, description="peak learning rate of the pre-training (SGD, cosine)")


@register_method
class PerlinInit(Method):
    """Pre-train on Perlin-noise complexity classes, then train normally from those weights."""

    info = MethodInfo(
        name="perlin_init",
        summary="Initialise by pre-training to classify Perlin noise by complexity (no real images).",
        paper="Initialization Using Perlin Noise, ICPR 2020 (catalogue seed 002; authors not recorded)",
        claim=Claim("Perlin-noise pre-initialisation beats conventional initialisations (no numbers)"),
    )
    Config = PerlinInitConfig
    # `steps` stays fixed (the published runs tuned without it); its pre-training is charged in train/flops
    search_space = {"categories": IntRange(low=4, high=16), "lr": FloatRange(low=0.01, high=0.2, log=True)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        cfg = self.config
        shape = input_shape(model, ctx)
        seed = ctx.seed
        generator = torch.Generator().manual_seed(seed)
        parent, name, classifier = output_layer(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            setattr(parent, name, nn.Linear(classifier.in_features, cfg.categories))
        model.to(ctx.device).train()
        self._pretrain(model, shape, generator, ctx.device)
        setattr(parent, name, classifier.to(ctx.device))
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
        return model

    def _pretrain(self, model: nn.Module, shape: tuple[int, int, int], generator: torch.Generator,
                  device: torch.device) -> None:
        """SGD with the engine's parameter groups and cosine schedule, on fresh noise every step."""
        cfg = self.config
        optimizer = build_optimizer(model, TrainSettings(lr=cfg.lr, weight_decay=5e-4, steps=cfg.steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.steps, 0.0))
        for _ in range(cfg.steps):
            images, labels = perlin_batch(cfg.batch_size, shape, cfg.categories, generator)
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        optimizer.zero_grad(set_to_none=True)
