"""What a paper's claim needs of the experiment before a verdict means anything, declared beside the claim.

A distillation gain needs a teacher that knows more than the student; a large-batch fix needs a large
batch; a defence against memorising noisy labels needs a baseline that memorises; a claim against a named
baseline needs that baseline run. A method declares these in its `Claim(preconditions=...)`; the judging
(`harness.precondition_checks`) turns each into a gate on the run's rows, and a failed one makes the verdict
"not tested", with the gate named. Plain frozen data: no I/O, no rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TeacherMargin:
    """The benchmark's teacher (its final-phase rows' mean clean test accuracy) beats the claim's baseline
    student's mean by at least `points` (a fraction: 0.03 is 3 accuracy points)."""

    points: float


@dataclass(frozen=True)
class LargeBatch:
    """The method trained with batches of at least `size` examples: its config's `config_key` where the
    method sets its own regime (ghost_bn's `large_batch`), else the benchmark's `train.batch_size`."""

    size: int
    config_key: str | None = None


@dataclass(frozen=True)
class MemorisationMeasurable:
    """Under label noise the claim's baseline began fitting the flipped labels: its final training loss on
    the noisy labels is below the noise's entropy (the least loss a model of the clean labels can have there)
    by at least `margin` nats. A benchmark without label noise fails it too."""

    margin: float = 0.0


@dataclass(frozen=True)
class PaperBaseline:
    """The baseline the paper measured against ran in the same suite: a method labelled `label` (e.g. plain
    ER as `er` with the tricks off, labelled `er_plain`); `described` says what it is, for the reader."""

    label: str
    described: str


Precondition = TeacherMargin | LargeBatch | MemorisationMeasurable | PaperBaseline
