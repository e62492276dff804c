"""Layer surgery shared by the methods that change the model: find and replace modules in place.

Replacements keep parameter names wherever they can (a swapped `Linear` or `Conv2d` is a subclass
with the same `weight`), so a prepared model's state dict still reads like the original's. The walk
knows the harness's own building blocks (`conv_bn_relu` Sequentials, the residual `BasicBlock`,
whose ReLUs are calls rather than modules); an activation it cannot place is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.models import BasicBlock


def replace_modules(model: nn.Module, matches: Callable[[nn.Module], bool],
                    build: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every submodule for which `matches` holds by `build(old)`; return how many.

    Replacements are not searched again, so `build` may wrap the module it replaces.
    """
    count = 0
    for name, child in list(model.named_children()):
        if matches(child):
            setattr(model, name, build(child))
            count += 1
        else:
            count += replace_modules(child, matches, build)
    return count


def output_layer(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent, attribute name, layer) of the classifier: the last `nn.Linear` in module order."""
    found: tuple[nn.Module, str, nn.Linear] | None = None
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, name, child)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer to modify")
    return found


def _channels(layer: nn.Module) -> int | None:
    """Channels a layer outputs, for the normalisation and convolution layers that precede activations."""
    for attribute in ("num_features", "out_channels"):
        if isinstance(getattr(layer, attribute, None), int):
            return getattr(layer, attribute)
    return None


class ResidualBlockWithActivations(BasicBlock):
    """`harness.models.BasicBlock` with its two ReLUs as modules, so they can be swapped.

    Shares the block's layers (same parameter names); computes the same function when both
    activations are ReLUs.
    """

    def __init__(self, block: BasicBlock, act1: nn.Module, act2: nn.Module) -> None:
        nn.Module.__init__(self)
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.shortcut = block.shortcut
        self.act1, self.act2 = act1, act2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


def swap_activations(model: nn.Module, build: Callable[[int], nn.Module]) -> int:
    """Replace every ReLU of the model by `build(channels)`; return how many were replaced.

    Handles ReLU modules that follow a layer with a channel count inside a Sequential, and the
    functional ReLUs of the residual `BasicBlock`. Raises if any ReLU module is left unplaced.
    """
    relus = sum(isinstance(m, nn.ReLU) for m in model.modules())
    relus += 2 * sum(type(m) is BasicBlock for m in model.modules())
    sites: list[tuple[nn.Module, str, int]] = []
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for index, (name, child) in enumerate(children):
                channels = _channels(children[index - 1][1]) if index > 0 else None
                if isinstance(child, nn.ReLU) and channels is not None:
                    sites.append((parent, name, channels))
    blocks = replace_modules(
        model, lambda m: type(m) is BasicBlock,
        lambda b: ResidualBlockWithActivations(b, build(b.bn1.num_features), build(b.bn2.num_features)))
    for parent, name, channels in sites:
        setattr(parent, name, build(channels))
    if len(sites) + 2 * blocks != relus:
        raise ValueError(f"found {relus} ReLUs but could place only {len(sites) + 2 * blocks}: "
                         "an activation without a preceding conv/norm layer cannot be swapped")
    return len(sites) + 2 * blocks


def forward_with_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features [B, D], logits) of one forward pass: the features are the input of the
    classifier (the last `nn.Linear`), caught by a forward hook that is removed again afterwards."""
    caught: list[torch.Tensor] = []
    _, _, classifier = output_layer(model)
    handle = classifier.register_forward_hook(lambda module, inputs, output: caught.append(inputs[0]))
    try:
        logits = model(images)
    finally:
        handle.remove()
    if len(caught) != 1:
        raise ValueError(f"the classifier ran {len(caught)} times in one forward pass; expected once")
    return caught[0].flatten(1), logits
