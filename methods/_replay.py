"""A reservoir replay buffer for the continual-learning methods (`er`, `weight_aligning`). Registers nothing.

Reservoir sampling (Vitter 1985) keeps every example of the stream with the same probability
capacity / seen, whatever the stream's length. Two eviction rules from Buzzega et al. (ICPR 2020) change
*which* stored example an accepted one replaces, never whether it is accepted: `balanced` evicts from
the class most represented once the newcomer is counted (the newcomer's own class when it ties), so a
class can only lose slots to a smaller one; `loss_aware` evicts with probability growing as the stored
example's last loss falls (max loss - loss, plus a tiny floor), keeping the examples still hard to fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

_FLOOR = 1e-6  # every candidate keeps some chance of eviction, so equal losses give a uniform choice


class ReservoirBuffer:
    """Images (as the method offers them), labels and last losses of up to `capacity` stream examples; own seeded RNG."""

    def __init__(self, capacity: int, *, balanced: bool = False, loss_aware: bool = False) -> None:
        self.capacity, self.balanced, self.loss_aware = capacity, balanced, loss_aware
        self.images: torch.Tensor | None = None    # [capacity, C, H, W] on the training device
        self.labels = torch.zeros(capacity, dtype=torch.int64)   # CPU: eviction decisions are made there
        self.losses = torch.zeros(capacity)
        self.size = 0
        self.seen = 0
        self.generator: torch.Generator | None = None

    def __len__(self) -> int:
        return self.size

    def seed(self, seed: int) -> None:
        """Seed the buffer's own generator once (the engine's data-order generator is never drawn from)."""
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(seed)

    def to(self, device: torch.device) -> None:
        """Keep the stored images on `device` (a checkpoint restores them on CPU)."""
        if self.images is not None and self.images.device != device:
            self.images = self.images.to(device)

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels[: self.size], minlength=num_classes).tolist()

    def add(self, images: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """Offer each example of a batch to the reservoir, in order."""
        if self.generator is None:
            self.seed(0)
        if self.images is None:
            self.images = images.new_zeros((self.capacity, *images.shape[1:]))
        labels_cpu = labels.detach().cpu()
        losses_cpu = losses.detach().float().cpu() if losses is not None else torch.zeros(len(labels_cpu))
        draws = torch.rand(len(labels_cpu), generator=self.generator)
        written: dict[int, int] = {}  # slot -> batch index (a later example may overwrite an earlier one)
        for index in range(len(labels_cpu)):
            self.seen += 1
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                position = int(draws[index] * self.seen)
                if position >= self.capacity:
                    continue
                slot = self._victim(position, int(labels_cpu[index]))
            self.labels[slot], self.losses[slot] = labels_cpu[index], losses_cpu[index]
            written[slot] = index
        if written:
            slots = torch.tensor(list(written), device=self.images.device)
            self.images[slots] = images.detach()[torch.tensor(list(written.values()), device=images.device)]

    def _victim(self, position: int, incoming: int) -> int:
        """The slot an accepted example replaces: the reservoir's own draw, or the balanced / loss-aware choice."""
        if not (self.balanced or self.loss_aware):
            return position
        candidates = torch.arange(self.size)
        if self.balanced:
            counts = torch.bincount(self.labels[: self.size], minlength=incoming + 1)
            counts[incoming] += 1
            largest = counts == counts.max()
            evict = incoming if bool(largest[incoming]) else int(largest.nonzero()[0])
            candidates = candidates[self.labels[: self.size] == evict]
            if len(candidates) == 0:  # only the newcomer's class is largest and none is stored: nothing to balance
                return position
        if self.loss_aware:
            losses = self.losses[candidates]
            weights = losses.max() - losses + _FLOOR
            return int(candidates[torch.multinomial(weights, 1, generator=self.generator)])
        return int(candidates[torch.randint(len(candidates), (1,), generator=self.generator)])

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(slots, images, labels) of `count` stored examples drawn uniformly without replacement (fewer if
        the buffer holds fewer); images and labels on the buffer's device."""
        assert self.images is not None and self.size > 0
        slots = torch.randperm(self.size, generator=self.generator)[:count]
        device = self.images.device
        return slots, self.images[slots.to(device)], self.labels[slots].to(device)

    def update_losses(self, slots: torch.Tensor, losses: torch.Tensor) -> None:
        self.losses[slots] = losses.detach().float().cpu()

    def stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of everything stored, on the buffer's device."""
        assert self.images is not None
        return self.images[: self.size], self.labels[: self.size].to(self.images.device)

    def state_dict(self) -> dict[str, Any]:
        return {"images": None if self.images is None else self.images.detach().cpu().clone(),
                "labels": self.labels.clone(), "losses": self.losses.clone(), "size": self.size,
                "seen": self.seen, "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | None = None) -> None:
        images = state["images"]
        self.images = None if images is None else images.to(device or "cpu")
        self.labels, self.losses = state["labels"].clone(), state["losses"].clone()
        self.size, self.seen = int(state["size"]), int(state["seen"])
        self.generator = None
        if state["generator"] is not None:
            self.generator = torch.Generator()
            self.generator.set_state(state["generator"])
