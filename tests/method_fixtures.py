"""Small models, images and training contexts the method unit tests share (CPU, 8x8 images, 10 classes).

One home for them, so the family test files (`tests/test_methods_*.py`) read as their methods' checks.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from harness.data import ImageArrays
from harness.method import TrainContext, build_method
from harness.models import build_model

CPU = torch.device("cpu")
CLASSES = 10


# ---------------------------------------------------------------- models


def net(name: str = "fast_cnn", seed: int = 0) -> nn.Module:
    """A seeded 1x8x8, 10-class model of the registered architecture `name`."""
    torch.manual_seed(seed)
    return build_model(name, in_channels=1, num_classes=CLASSES, image_size=8, mean=(0.5,), std=(0.25,))


def model(name: str = "fast_cnn", channels: int = 1, size: int = 8, seed: int = 0) -> nn.Module:
    """A seeded 10-class model for `channels` x `size` x `size` images."""
    torch.manual_seed(seed)
    return build_model(name, in_channels=channels, num_classes=CLASSES, image_size=size,
                       mean=(0.5,) * channels, std=(0.25,) * channels)


def tiny(channels: int = 1, classes: int = 10, size: int = 8, name: str = "fast_cnn") -> nn.Module:
    """A model with seed 0 and any class count."""
    torch.manual_seed(0)
    return build_model(name, in_channels=channels, num_classes=classes, image_size=size,
                       mean=(0.5,) * channels, std=(0.25,) * channels)


def tiny_model(seed: int = 0, name: str = "tiny_cnn") -> nn.Module:
    """A seeded `tiny_cnn` with digits-like normalisation."""
    torch.manual_seed(seed)
    return build_model(name, in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,))


def tiny_cnn(seed: int = 0) -> nn.Module:
    """A seeded 1x8x8 `fast_cnn`."""
    return net("fast_cnn", seed)


def constant_logits_model(bias: list[float]) -> nn.Module:
    """Logits equal to `bias` for every image (zero weights)."""
    linear = nn.Linear(4, len(bias))
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(bias))
    return nn.Sequential(nn.Flatten(), linear)


def prepared(method: str, name: str = "fast_cnn", channels: int = 1, size: int = 8,
             **config: object) -> tuple[nn.Module, nn.Module]:
    """(original, prepared copy) of a freshly built model."""
    original = model(name, channels, size)
    return original, build_method(method, config).prepare_model(copy.deepcopy(original), seeded_context())


def assert_maps_images_to_logits(net: nn.Module, channels: int = 1, size: int = 8) -> None:
    """The model trains (a backward pass runs) and, in eval mode, maps images to finite, repeatable logits."""
    images = torch.rand(6, channels, size, size, generator=torch.Generator().manual_seed(1))
    net.train()
    net(images).float().sum().backward()
    net.eval()
    with torch.no_grad():
        first, second = net(images), net(images)
    assert tuple(first.shape) == (6, CLASSES)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


# ---------------------------------------------------------------- images


def tiny_images(n: int = 64) -> ImageArrays:
    """Random uint8 1x8x8 images with balanced labels over 10 classes."""
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageArrays(images, torch.arange(n, dtype=torch.int64) % CLASSES)


def blank_images(n: int, channels: int = 1, size: int = 2) -> torch.Tensor:
    """All-zero float images (for losses that only read the logits)."""
    return torch.zeros(n, channels, size, size)


# ---------------------------------------------------------------- training contexts


def classes_context(num_classes: int, teacher: nn.Module | None = None, step: int = 0,
                    total_steps: int = 1) -> TrainContext:
    return TrainContext(step=step, total_steps=total_steps, epoch=0, num_classes=num_classes, device=CPU,
                        teacher=teacher)


def seeded_context(seed: int = 0) -> TrainContext:
    return TrainContext(step=0, total_steps=2, epoch=0, num_classes=CLASSES, device=CPU,
                        generator=torch.Generator().manual_seed(seed), seed=seed)


def step_context(step: int = 0, total_steps: int = 10) -> TrainContext:
    return TrainContext(step=step, total_steps=total_steps, epoch=0, num_classes=CLASSES, device=CPU,
                        generator=torch.Generator().manual_seed(0))


def fields_context(**changes: object) -> TrainContext:
    """A 10-class context at step 0 of 10, with any field changed."""
    fields = dict(step=0, total_steps=10, epoch=0, num_classes=10, device=CPU,
                  generator=torch.Generator().manual_seed(0))
    return TrainContext(**(fields | changes))


def teacher_context(teacher: nn.Module | None = None, teacher_model: str | None = "fast_cnn",
                    build: object = None) -> TrainContext:
    """A context with a teacher, the input shape and a `build_model` that makes seeded fresh models."""
    return TrainContext(step=0, total_steps=2, epoch=0, num_classes=CLASSES, device=CPU, teacher=teacher,
                        num_samples=64, input_shape=(1, 8, 8), teacher_model=teacher_model,
                        build_model=build or (lambda name=None: net(name or "fast_cnn", seed=7)))
