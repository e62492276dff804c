"""A claim's declared preconditions (`harness.preconditions`) checked on one suite run's rows, as gates.

Pure: the caller (`harness.claims`) passes the run's rows, the suite copy it wrote (plain data) and the
benchmark and method being judged; each precondition becomes one `Gate`, named "precondition: ..." so a
"not tested" verdict says which condition of the paper the run lacked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard import seed_scores
from harness.method import Claim
from harness.preconditions import (
    LargeBatch,
    MemorisationMeasurable,
    PaperBaseline,
    Precondition,
    TeacherMargin,
)
from harness.train_settings import TrainSpec
from harness.verdicts import Gate

CLEAN_ACCURACY = "test/accuracy"
TRAINING_LOSS = "train/final_loss"


@dataclass(frozen=True)
class ClaimRun:
    """What the checks read: all rows of the run, the judged benchmark's successful final rows (`final`),
    the suite copy and the benchmark's block of it (and its name), the method's suite label and its claim."""

    rows: pd.DataFrame
    final: pd.DataFrame
    suite: Mapping[str, Any]
    bench: Mapping[str, Any]
    benchmark: str
    label: str
    claim: Claim
    num_classes: int | None


def precondition_gates(run: ClaimRun) -> tuple[Gate, ...]:
    """One gate per precondition the claim declares, in declaration order."""
    return tuple(check(pre, run) for pre in run.claim.preconditions)


def check(pre: Precondition, run: ClaimRun) -> Gate:
    """The gate of one precondition on the run."""
    if isinstance(pre, TeacherMargin):
        return teacher_margin(pre, run)
    if isinstance(pre, LargeBatch):
        return large_batch(pre, run)
    if isinstance(pre, MemorisationMeasurable):
        return memorisation(pre, run)
    return paper_baseline(pre, run)


def _clean_mean(final: pd.DataFrame, method: str) -> float:
    scores = seed_scores(final, CLEAN_ACCURACY)
    return float(scores[method].mean()) if method in scores else float("nan")


def teacher_margin(pre: TeacherMargin, run: ClaimRun) -> Gate:
    """The final-phase teacher's mean clean accuracy minus the baseline student's, against `points`."""
    rows = run.rows
    teacher = rows[(rows["phase"] == "teacher") & (rows["benchmark"] == run.benchmark)]
    if "tune_phase" in teacher:
        teacher = teacher[teacher["tune_phase"] == "final"]
    if "status" in teacher:
        teacher = teacher[teacher["status"] == "ok"]
    accuracy = float(teacher[CLEAN_ACCURACY].mean()) if CLEAN_ACCURACY in teacher and len(teacher) else float("nan")
    student = _clean_mean(run.final, run.claim.baseline)
    margin = accuracy - student
    ok = math.isfinite(margin) and margin >= pre.points
    detail = (f"teacher {100 * accuracy:.2f} vs {run.claim.baseline} {100 * student:.2f}: "
              f"{100 * margin:.2f} points, needs {100 * pre.points:g}") if math.isfinite(margin) else "no teacher rows"
    return Gate("precondition: teacher margin", ok, detail)


def trained_batch_size(pre: LargeBatch, run: ClaimRun) -> int:
    """The batch the method trained with: its (tuned, else suite) `config_key`, else the benchmark's batch."""
    entry = next((m for m in run.suite["methods"] if (m.get("label") or m["name"]) == run.label), {})
    tuned = run.final[run.final["method"] == run.label]["config_json"].dropna() if "config_json" in run.final else ()
    params = json.loads(tuned.iloc[0]) if len(tuned) else {}
    if pre.config_key is not None:
        own = params.get(f"method.{pre.config_key}", (entry.get("config") or {}).get(pre.config_key))
        if own is not None:
            return int(own)
    default = TrainSpec.model_fields["batch_size"].default
    return int(params.get("train.batch_size", (run.bench.get("train") or {}).get("batch_size", default)))


def large_batch(pre: LargeBatch, run: ClaimRun) -> Gate:
    size = trained_batch_size(pre, run)
    return Gate("precondition: large batch", size >= pre.size, f"trained at batch {size}, the claim needs >= {pre.size}")


def noise_entropy(record: Mapping[str, Any], num_classes: int) -> float:
    """Entropy (nats) of a noisy label given the clean one, averaged over the classes' counts: the least
    cross-entropy a model that predicts from the clean label can reach on the noisy training labels."""
    noise = record.get("label_noise") or {}
    rates = np.asarray(noise.get("per_class_rate") or [], dtype=float)
    if rates.size == 0:
        return float("nan")
    counts = np.asarray(record.get("class_counts") or np.ones_like(rates), dtype=float)
    others = num_classes - 1 if noise.get("kind") == "symmetric" else 1  # flipped to one class, or any other
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = -np.nan_to_num((1 - rates) * np.log(1 - rates)) - np.nan_to_num(rates * np.log(rates / others))
    return float((per_class * counts).sum() / counts.sum())


def memorisation(pre: MemorisationMeasurable, run: ClaimRun) -> Gate:
    """The baseline's mean final training loss against the entropy of the run's label noise."""
    base = run.final[run.final["method"] == run.claim.baseline]
    records = base["scenario_record"].dropna() if "scenario_record" in base else ()
    floor = (noise_entropy(json.loads(records.iloc[0]), run.num_classes)
             if len(records) and run.num_classes else float("nan"))
    loss = float(base[TRAINING_LOSS].mean()) if TRAINING_LOSS in base and len(base) else float("nan")
    name = "precondition: memorisation measurable"
    if not math.isfinite(floor):
        return Gate(name, False, "the benchmark has no label noise to memorise")
    ok = math.isfinite(loss) and loss <= floor - pre.margin
    return Gate(name, ok, f"{run.claim.baseline}'s final training loss {loss:.3g} vs the noise's entropy {floor:.3g} "
                          "nats (below it: fitting flipped labels)")


def paper_baseline(pre: PaperBaseline, run: ClaimRun) -> Gate:
    labels = {m.get("label") or m["name"] for m in run.suite["methods"]}
    ok = pre.label in labels
    detail = (f"`{pre.label}` ({pre.described}) ran" if ok
              else f"the paper's baseline {pre.label} ({pre.described}) is not in this suite")
    return Gate("precondition: paper's baseline", ok, detail)
