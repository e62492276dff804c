"""What a final run is expected to cost, from what the suite declares: how the final phase balances its groups.

The estimate is the examples the run trains on times its method's `cost_factor` (the method's declared
cost per step relative to ERM; 1 when it declares none): `budget.epochs` x the training examples, or
`budget.steps` x `train.batch_size` for a budget in steps. The training examples are the dataset's
training split as the driver holds it (before any scenario subsamples it). It only orders work across
slots, never what a run computes, and it leaves out what it cannot know ahead (the model's size, a
tuned batch size, the evaluation battery), so it is a ranking of runs, not a prediction of seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.plan import FinalJob


def expected_examples(job: FinalJob, train_examples: Callable[[str], int]) -> float:
    """The examples `job` trains on: epochs x `train_examples(dataset)`, or steps x the batch size."""
    bench = job.cell.benchmark
    if bench.budget.steps is not None:
        return float(bench.budget.steps * bench.train.batch_size)
    return float(bench.budget.epochs or 0) * train_examples(bench.dataset)


def expected_cost(job: FinalJob, train_examples: Callable[[str], int]) -> float:
    """`expected_examples` x the method's `cost_factor`: the longest-processing-time-first key of
    `harness.scheduling.balanced_groups`."""
    return expected_examples(job, train_examples) * job.cell.method_info.cost_factor
