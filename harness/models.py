"""The model registry: architectures sized by the dataset (input channels, classes, image size).

Every model is wrapped in `Normalize`, so it takes images in [0, 1]: attacks and corruptions then
work in pixel space, and no loader has to remember the dataset's mean and std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from harness.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    build: Callable[[int, int, int], nn.Module]  # (in_channels, num_classes, image_size) -> net


MODELS: Registry[ModelSpec] = Registry("model")


class Normalize(nn.Module):
    """Per-channel standardisation as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with max-pooling, then global pooling: fast on CPU, ~90% on Fashion-MNIST."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, image_size
        for width in widths:
            layers.append(conv_bn_relu(cin, width))
            if size >= 8:  # pool while the map is large enough (8x8 digits pool once)
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class FastCNN(nn.Module):
    """Two conv blocks and a linear head on the pooled map: ~89% on Fashion-MNIST in one CPU minute."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, image_size
        for width in widths:
            layers += [conv_bn_relu(cin, width), nn.MaxPool2d(2)]
            cin, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * size * size, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class BasicBlock(nn.Module):
    """The two-conv residual block of He et al. (2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet for small images: 3x3 stem, no max-pool, stages of BasicBlocks, global pooling."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages, cin = [], widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(cin, width, stride))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(images)))


def _register(name: str, summary: str, build: Callable[[int, int, int], nn.Module]) -> None:
    MODELS.add(name, ModelSpec(name, summary, build))


_register("small_cnn", "3-block CNN, 32-64-128 channels (~94k parameters)",
          lambda c, k, s: SmallCNN(c, k, s, (32, 64, 128)))
_register("tiny_cnn", "3-block CNN, 16-32-64 channels (~24k parameters), for smoke tests",
          lambda c, k, s: SmallCNN(c, k, s, (16, 32, 64)))
_register("wide_cnn", "3-block CNN, 64-128-256 channels (~370k parameters), a teacher for small_cnn",
          lambda c, k, s: SmallCNN(c, k, s, (64, 128, 256)))
_register("fast_cnn", "2 conv blocks (16-32 channels) + linear head (~20k parameters): the CPU quickstart student",
          lambda c, k, s: FastCNN(c, k, s, (16, 32)))
_register("fast_cnn_narrow", "2 conv blocks (2-4 channels) + linear head (~2k parameters): a student that a "
          "CPU-trained fast_cnn_wide clearly beats, for distillation claims",
          lambda c, k, s: FastCNN(c, k, s, (2, 4)))
_register("fast_cnn_wide", "2 conv blocks (32-64 channels) + linear head (~50k parameters): fast_cnn's teacher",
          lambda c, k, s: FastCNN(c, k, s, (32, 64)))
_register("resnet20", "CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 blocks, 16-32-64 channels",
          lambda c, k, s: ResNet(c, k, (16, 32, 64), (3, 3, 3)))
_register("resnet18", "ResNet-18 adapted to small images: 3x3 stem, no max-pool, 64-512 channels",
          lambda c, k, s: ResNet(c, k, (64, 128, 256, 512), (2, 2, 2, 2)))


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
                mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """A registered architecture behind a `Normalize` layer, taking images in [0, 1]."""
    net = MODELS.get(name).build(in_channels, num_classes, image_size)
    return nn.Sequential(Normalize(mean, std), net)
