"""Continual-learning scores from the accuracy matrix of a class-incremental run.

After training task t the job measures a[t][j], the test accuracy on the classes of task j (j <= t),
predicting among every class seen so far (class-incremental: no task label at test time; the logits
of classes not yet seen are masked out). From that matrix, with T tasks (Chaudhry et al., "Riemannian
Walk for Incremental Learning", ECCV 2018; Rebuffi et al., iCaRL, CVPR 2017):

- average accuracy        A_T = mean_j a[T-1][j]                      (after the last task)
- average incremental acc.    = mean_t mean_{j<=t} a[t][j]            (the area under the learning curve)
- forgetting              F_T = mean_{j<T-1} max_{t<T-1} (a[t][j] - a[T-1][j])

The job of a continual scenario writes these columns beside the metrics' (they need the whole task
stream, not one trained model); `CONTINUAL_COLUMNS` declares what they mean, as a metric does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.columns import Column, declare_columns

CONTINUAL_COLUMNS = (
    Column("continual/avg_accuracy", "higher", "fraction"),
    Column("continual/avg_incremental_accuracy", "higher", "fraction"),
    Column("continual/forgetting", "lower", "fraction"),
    Column("continual/task{task}_accuracy", "higher", "fraction"),  # after the last task, per task
)
declare_columns("continual", CONTINUAL_COLUMNS)


def task_accuracies(logits: torch.Tensor, labels: torch.Tensor, task_classes: Sequence[Sequence[int]],
                    upto: int) -> list[float]:
    """a[upto][j] for j = 0..upto: accuracy on each seen task's examples, argmax over the seen classes."""
    seen = torch.tensor([c for classes in task_classes[: upto + 1] for c in classes])
    masked = torch.full_like(logits, float("-inf"))
    masked[:, seen] = logits[:, seen]
    correct = masked.argmax(1) == labels
    row = []
    for classes in task_classes[: upto + 1]:
        members = torch.isin(labels, torch.tensor(list(classes)))
        row.append(float(correct[members].float().mean()) if bool(members.any()) else float("nan"))
    return row


def continual_scores(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """The row metrics of an accuracy matrix whose row t holds a[t][0..t] (a lower triangle)."""
    tasks = len(matrix)
    if tasks == 0 or any(len(row) != t + 1 for t, row in enumerate(matrix)):
        raise ValueError("the accuracy matrix must hold row t = a[t][0..t] for every task t")
    last = matrix[-1]
    scores = {"continual/avg_accuracy": sum(last) / tasks,
              "continual/avg_incremental_accuracy": sum(sum(row) / len(row) for row in matrix) / tasks,
              "continual/forgetting": (sum(max(matrix[t][j] for t in range(j, tasks - 1)) - last[j]
                                           for j in range(tasks - 1)) / (tasks - 1)) if tasks > 1 else 0.0}
    scores.update({f"continual/task{j}_accuracy": value for j, value in enumerate(last)})
    return scores
