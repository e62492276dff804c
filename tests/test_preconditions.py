"""A claim's declared preconditions gate its verdict: teacher margin, large batch, memorisation under label
noise and the paper's baseline each yield "not tested" with the gate named when the run lacks them, and
pass when it has them (synthetic rows through `harness.claims.judge_claims`)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from harness.claims import ClaimVerdict, judge_claims
from harness.method import METHODS, Claim
from harness.plugins import discover_methods
from harness.precondition_checks import noise_entropy
from harness.preconditions import LargeBatch, MemorisationMeasurable, PaperBaseline, TeacherMargin

BENCH = {"name": "b", "dataset": "ten", "model": "m", "budget": {"steps": 50}, "train": {"batch_size": 128}}


def suite_of(*methods: dict[str, Any], bench: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "toy", "benchmarks": [bench or BENCH], "methods": [{"name": "erm"}, *methods],
            "final": {"seeds": [0, 1, 2]}}


def final_rows(method: str, accuracy: float, **extra: Any) -> list[dict[str, Any]]:
    """Three seeds of `method` at `accuracy` + 0.01 * seed (a clear, consistent +2-point gain over erm below)."""
    return [{"phase": "final", "status": "ok", "benchmark": "b", "protocol": "holdout", "method": method,
             "seed": seed, "test/accuracy": accuracy + 0.001 * seed, **extra} for seed in range(3)]


def judged(claim: Claim, rows: list[dict[str, Any]], suite: dict[str, Any]) -> ClaimVerdict:
    return next(r for r in judge_claims(pd.DataFrame(rows), suite, {"up": claim}, {"ten": 10}) if r.method == "up")


def teacher_rows(accuracy: float) -> list[dict[str, Any]]:
    return [{"phase": "teacher", "tune_phase": phase, "status": "ok", "benchmark": "b", "method": "teacher:m",
             "seed": seed, "test/accuracy": accuracy if phase == "final" else float("nan")}
            for seed in range(3) for phase in ("tune", "final")]


def test_a_teacher_barely_above_the_student_leaves_a_distillation_claim_not_tested() -> None:
    claim = Claim("distils", preconditions=(TeacherMargin(points=0.03),))
    rows = final_rows("erm", 0.849) + final_rows("up", 0.869)
    weak = judged(claim, rows + teacher_rows(0.861), suite_of({"name": "up"}))
    assert weak.verdict == "not tested" and "precondition: teacher margin" in weak.reason
    gate = next(g for g in weak.gates if g.name == "precondition: teacher margin")
    assert "1.10 points, needs 3" in gate.detail
    assert judged(claim, rows + teacher_rows(0.90), suite_of({"name": "up"})).verdict == "supported"
    assert judged(claim, rows, suite_of({"name": "up"})).verdict == "not tested"  # no teacher rows at all


def test_a_large_batch_claim_needs_the_large_batch_trained() -> None:
    claim = Claim("closes the large-batch gap", preconditions=(LargeBatch(size=1024, config_key="large_batch"),))
    rows = final_rows("erm", 0.849) + final_rows("up", 0.869)
    small = judged(claim, rows, suite_of({"name": "up"}))
    assert small.verdict == "not tested" and "precondition: large batch" in small.reason
    assert "trained at batch 128" in next(g.detail for g in small.gates if g.name == "precondition: large batch")
    regime = suite_of({"name": "up", "config": {"large_batch": 2048}})
    assert judged(claim, rows, regime).verdict == "supported"
    big_bench = {**BENCH, "train": {"batch_size": 1024}}
    assert judged(claim, rows, suite_of({"name": "up"}, bench=big_bench)).verdict == "supported"
    tuned = final_rows("erm", 0.849) + final_rows("up", 0.869, config_json=json.dumps({"method.large_batch": 4096}))
    assert judged(claim, tuned, suite_of({"name": "up"})).verdict == "supported"


NOISE = {"label_noise": {"kind": "symmetric", "rate": 0.4, "per_class_rate": [0.4] * 10},
         "class_counts": [6000] * 10}


def test_noise_entropy_is_the_least_loss_of_a_clean_label_model() -> None:
    """40% symmetric over 10 classes: -(0.6 ln 0.6) - 0.4 ln(0.4 / 9) = 1.552 nats; asymmetric: one target."""
    assert noise_entropy(NOISE, 10) == pytest.approx(1.5519, abs=1e-4)
    asymmetric = {**NOISE, "label_noise": {**NOISE["label_noise"], "kind": "asymmetric"}}
    assert noise_entropy(asymmetric, 10) == pytest.approx(0.6730, abs=1e-4)
    assert noise_entropy({"label_noise": {}}, 10) != noise_entropy({"label_noise": {}}, 10)  # NaN: no noise


def test_a_label_noise_claim_needs_a_baseline_that_memorises() -> None:
    claim = Claim("learns from noisy labels", preconditions=(MemorisationMeasurable(),))
    record = json.dumps(NOISE)
    early = (final_rows("erm", 0.849, scenario_record=record, **{"train/final_loss": 1.64})
             + final_rows("up", 0.869, scenario_record=record, **{"train/final_loss": 1.2}))
    stopped = judged(claim, early, suite_of({"name": "up"}))
    assert stopped.verdict == "not tested" and "precondition: memorisation measurable" in stopped.reason
    late = (final_rows("erm", 0.849, scenario_record=record, **{"train/final_loss": 0.9})
            + final_rows("up", 0.869, scenario_record=record, **{"train/final_loss": 1.2}))
    assert judged(claim, late, suite_of({"name": "up"})).verdict == "supported"
    clean = final_rows("erm", 0.849) + final_rows("up", 0.869)
    assert judged(claim, clean, suite_of({"name": "up"})).verdict == "not tested"  # no label noise at all


def test_a_claim_against_the_papers_baseline_needs_it_in_the_suite() -> None:
    claim = Claim("beats plain ER", preconditions=(PaperBaseline("er_plain", "ER without the tricks"),))
    rows = final_rows("erm", 0.849) + final_rows("up", 0.869)
    absent = judged(claim, rows, suite_of({"name": "up"}))
    assert absent.verdict == "not tested"
    detail = next(g.detail for g in absent.gates if g.name == "precondition: paper's baseline")
    assert detail == "the paper's baseline er_plain (ER without the tricks) is not in this suite"
    present = suite_of({"name": "up"}, {"name": "up", "label": "er_plain"})
    assert judged(claim, rows, present).verdict == "supported"


@pytest.mark.parametrize(("method", "kind"), [("kd", TeacherMargin), ("nkd", TeacherMargin), ("pld", TeacherMargin),
                                              ("gambler_kd", TeacherMargin), ("ghost_bn", LargeBatch),
                                              ("p_diff", MemorisationMeasurable), ("er", PaperBaseline),
                                              ("aimp", PaperBaseline)])
def test_the_methods_declare_their_papers_preconditions_beside_the_claim(method: str, kind: type) -> None:
    discover_methods()
    claim = METHODS.get(method).info.claim
    assert claim is not None and any(isinstance(pre, kind) for pre in claim.preconditions)
