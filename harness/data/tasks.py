"""Task streams for continual learning: a training split cut into a sequence of tasks of classes.

Class-incremental learning (van de Ven et al., "Three scenarios for continual learning", 2019):
task t holds only the examples of its classes, the model sees the tasks one after another, and at
test time it must tell apart every class seen so far, with no task label. The engine trains a
`TaskStream` task by task (`harness.engine.train`); a method sees the current task in its context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.data.sources import ImageArrays
from harness.errors import HarnessInputError


class TaskStreamError(HarnessInputError, ValueError):
    """A task split the data cannot support (more tasks than classes, an empty task)."""


@dataclass(frozen=True)
class TaskStream:
    """Tasks in training order: `tasks[t]` holds the examples of the classes `classes[t]`."""

    tasks: tuple[ImageArrays, ...]
    classes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.tasks or len(self.tasks) != len(self.classes):
            raise TaskStreamError(f"a task stream needs one class set per task, got {len(self.tasks)} tasks "
                                  f"and {len(self.classes)} class sets")

    def __len__(self) -> int:
        """Training examples over all tasks (what an epoch budget is counted on)."""
        return sum(len(task) for task in self.tasks)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def seen_classes(self, task: int) -> tuple[int, ...]:
        """Every class of tasks 0..task."""
        return tuple(c for classes in self.classes[: task + 1] for c in classes)


def task_classes(num_classes: int, num_tasks: int) -> tuple[tuple[int, ...], ...]:
    """Classes 0..K-1 in order, cut into `num_tasks` contiguous groups as equal as possible (first ones larger)."""
    if not 2 <= num_tasks <= num_classes:
        raise TaskStreamError(f"continual.tasks must lie in 2..{num_classes} for {num_classes} classes, got {num_tasks}")
    return tuple(tuple(int(c) for c in chunk) for chunk in torch.arange(num_classes).tensor_split(num_tasks))


def class_incremental(arrays: ImageArrays, num_tasks: int, num_classes: int) -> TaskStream:
    """Split `arrays` into the class-incremental tasks of `task_classes` (examples keep their order)."""
    classes = task_classes(num_classes, num_tasks)
    tasks = []
    for group in classes:
        member = torch.isin(arrays.labels, torch.tensor(group))
        if not bool(member.any()):
            raise TaskStreamError(f"the task of classes {list(group)} has no training example")
        tasks.append(arrays.subset(member))
    return TaskStream(tuple(tasks), classes)


def task_of_class(stream_classes: tuple[tuple[int, ...], ...]) -> dict[int, int]:
    """class -> the index of the task it belongs to."""
    return {c: t for t, classes in enumerate(stream_classes) for c in classes}
