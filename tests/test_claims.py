"""Claims: `harness.claims` judges verdicts from rows (rules on known intervals, one synthetic run per
verdict), and `dashboards.claims` builds docs/claims.md from real result stores."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from dashboards.claims import budget_text, claim_rows, command, main
from harness.claims import judge_claims, metric_number, unmeasured_claims
from harness.method import Claim
from harness.store import ResultStore

SUITE = {"name": "toy", "benchmarks": [{"name": "b", "dataset": "ten", "model": "m", "budget": {"steps": 50}}],
         "methods": [{"name": "erm"}, {"name": "up"}, {"name": "down"}, {"name": "flat"}, {"name": "late"},
                     {"name": "up", "label": "up_again"}], "final": {"seeds": [0, 1, 2]}}
CLAIMS = {"up": Claim("gains"), "down": Claim("gains"), "flat": Claim("gains"), "late": Claim("gains"),
          "unrun": Claim("never measured")}


def final_rows(effects: dict[str, tuple[float, ...]], *, protocol: str = "holdout", seeds: tuple = (0, 1, 2)) -> list:
    """Final store rows: per method, `test/accuracy` = 0.5 + the effect of each seed in `seeds`."""
    return [{"phase": "final", "status": "ok", "benchmark": "b", "protocol": protocol, "method": method,
             "seed": seed, "test/accuracy": 0.5 + effect} for method, values in effects.items()
            for seed, effect in zip(seeds, values, strict=True)]


def test_judge_claims_gives_each_verdict_from_rows_alone() -> None:
    rows = final_rows({"erm": (0.0, 0.0, 0.0), "up": (0.02, 0.03, 0.025), "down": (-0.05, -0.04, -0.06),
                       "flat": (0.01, -0.01, 0.0), "up_again": (0.02, 0.03, 0.025)})
    rows += final_rows({"late": (0.1, 0.1, 0.1)}, seeds=(7, 8, 9))  # no seed shared with erm: nothing to pair
    rows += final_rows({"erm": (0.0,), "up": (-0.3,)}, protocol="oracle", seeds=(0,))  # never judged
    judged = {record.method: record for record in judge_claims(pd.DataFrame(rows), SUITE, CLAIMS, {"ten": 10})}
    assert {name: record.verdict for name, record in judged.items()} == {
        "up": "supported", "up_again": "supported", "down": "not supported", "flat": "inconclusive",
        "late": "not measured"}  # up_again is labelled: its claim is up's; Holm across the run's four claims
    assert judged["up"].interval_method == "skew-corrected t (Hall) at 98.7% (n = 3)" and judged["flat"].n_to_resolve is None
    flat = judged["flat"]  # the reason states the MDE in the unit of its row (accuracy points), not a fraction
    assert f"MDE {metric_number(flat.mde, 'test/accuracy')} at n = 3" in flat.reason and flat.mde < 0.5
    up = judged["up"]
    assert (up.suite, up.benchmark, up.seeds) == ("toy", "b", 3)
    assert up.difference == pytest.approx(0.025) and up.baseline_mean == pytest.approx(0.5)
    assert up.budget is not None and (up.budget.final.steps, up.budget.trials, up.budget.seeds) == (50, 8, 3)
    assert judged["late"].seeds == 0 and all(record.at_chance == 0 for record in judged.values())

    missing = unmeasured_claims(judged.values(), CLAIMS, [SUITE, {**SUITE, "name": "other"}])
    assert [(record.method, record.verdict, record.suite) for record in missing] == [("unrun", "not run", "")]


def test_judge_claims_takes_direction_from_the_column_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """`test/spread` reads as higher-is-better by name; declared lower, a drop is a gain."""
    import harness.columns

    monkeypatch.setattr(harness.columns, "_DECLARED", dict(harness.columns._DECLARED))  # undone after the test
    rows = pd.DataFrame(final_rows({"erm": (0.0, 0.0, 0.0), "up": (-0.02, -0.03, -0.025)})).rename(
        columns={"test/accuracy": "test/spread"})
    claims = {"up": Claim("spreads less", metric="test/spread")}
    assert judge_claims(rows, SUITE, claims, {})[0].verdict == "not supported"  # undeclared: the name's guess
    harness.columns.declare_columns("test_claims", [harness.columns.Column("{split}/spread", "lower", "fraction")])
    assert judge_claims(rows, SUITE, claims, {})[0].verdict == "supported"


def test_judge_claims_counts_seeds_at_chance_only_for_known_datasets() -> None:
    rows = pd.DataFrame(final_rows({"erm": (0.3, 0.3, 0.3), "up": (-0.39, 0.35, 0.36)}))  # seed 0 at 11%
    assert judge_claims(rows, SUITE, CLAIMS, {"ten": 10})[0].at_chance == 1
    assert judge_claims(rows, SUITE, CLAIMS, {})[0].at_chance == 0  # an unknown dataset's chance is unknown
    assert judge_claims(rows.assign(phase="tune"), SUITE, CLAIMS, {"ten": 10}) == []  # final rows only


def test_a_collapsed_continual_seed_is_flagged_on_either_side() -> None:
    """Class-incremental over 5 tasks of a 10-class set: forgetting leaves about 20%, a collapse 10% or less."""
    suite = {**SUITE, "benchmarks": [{**SUITE["benchmarks"][0], "scenario": {"continual": {"tasks": 5}}}]}
    rows = pd.DataFrame(final_rows({"erm": (-0.483, -0.4, -0.3), "up": (-0.3, -0.29, -0.31)}))  # erm: 1.7%, 10%
    record = judge_claims(rows, suite, CLAIMS, {"ten": 10})[0]
    assert (record.at_chance, record.baseline_at_chance) == (0, 2)


def test_a_baseline_below_the_declared_reference_accuracy_leaves_the_claim_not_tested() -> None:
    rows = pd.DataFrame(final_rows({"erm": (0.0, 0.0, 0.0), "up": (0.02, 0.03, 0.025)}))  # erm at 50%
    suite = {**SUITE, "benchmarks": [{**SUITE["benchmarks"][0], "reference_accuracy": 0.91}]}
    record = next(r for r in judge_claims(rows, suite, CLAIMS, {"ten": 10}) if r.method == "up")
    assert record.verdict == "not tested" and "baseline adequate" in record.reason
    assert next(r for r in judge_claims(rows, SUITE, CLAIMS, {"ten": 10}) if r.method == "up").verdict == "supported"


def test_the_reference_accuracy_is_held_to_erm_even_when_a_claim_names_a_robust_baseline() -> None:
    """xat is judged against pgd_at, whose clean accuracy is low by design: the reference is erm's to reach."""
    rows = pd.DataFrame(final_rows({"erm": (0.4, 0.41, 0.39), "down": (0.2, 0.21, 0.19), "up": (0.22, 0.23, 0.22)}))
    suite = {**SUITE, "benchmarks": [{**SUITE["benchmarks"][0], "reference_accuracy": 0.91}]}
    claims = {"up": Claim("beats the robust baseline", baseline="down")}
    record = judge_claims(rows, suite, claims, {"ten": 10})[0]
    gate = next(g for g in record.gates if g.name == "baseline adequate")
    assert gate.passed and gate.checked and gate.detail == "erm 0.9 vs reference 0.91"
    assert record.verdict == "supported"
    weak = rows.assign(**{"test/accuracy": rows["test/accuracy"].where(rows["method"] != "erm", 0.5)})
    assert "baseline adequate" in judge_claims(weak, suite, claims, {"ten": 10})[0].reason  # erm at 50% fails it
    no_erm = rows[rows["method"] != "erm"]
    unchecked = next(g for g in judge_claims(no_erm, suite, claims, {"ten": 10})[0].gates if g.name == "baseline adequate")
    assert not unchecked.checked and "runs no erm" in unchecked.detail


def test_an_undeclared_reference_is_shown_as_not_checked_never_as_passed() -> None:
    from dashboards.claims import gates_cell

    rows = pd.DataFrame(final_rows({"erm": (0.0, 0.0, 0.0), "up": (0.02, 0.03, 0.025)}))
    record = next(r for r in judge_claims(rows, SUITE, CLAIMS, {"ten": 10}) if r.method == "up")
    cell = gates_cell(record)
    assert "not checked: baseline adequate (the benchmark declares no reference_accuracy)" in cell
    assert "baseline adequate" not in cell.split("not checked:")[0]

def write_run(root: Path) -> Path:
    """A suite run with erm, kd (+2 points in every seed) and label_smoothing (+-0.5, no consistent gain),
    and kd's teacher."""
    run_dir = root / "distill" / "0123456789abcdef"
    suite = {"name": "distill", "benchmarks": [{"name": "fm", "dataset": "fashion_mnist", "model": "fast_cnn",
                                                "budget": {"epochs": 1}, "tuning_budget": {"steps": 200},
                                                "scenario": {"seed": 0, "label_noise": {"kind": "symmetric",
                                                                                        "rate": 0.4}}}],
             "methods": [{"name": "erm"}, {"name": "kd"}, {"name": "label_smoothing", "label": "ls"}],
             "tuning": {"trials": 3}, "final": {"seeds": [0, 1, 2]}}
    run_dir.mkdir(parents=True)
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(suite))
    store = ResultStore(run_dir)
    base = {0: 0.80, 1: 0.82, 2: 0.81}
    effects = {"erm": (0.0, 0.0, 0.0), "kd": (0.02, 0.021, 0.019), "ls": (0.005, -0.005, 0.001)}
    for method, effect in effects.items():
        for seed, delta in zip(base, effect, strict=True):
            store.write({"row_id": f"final:holdout:fm:{method}:s{seed}", "phase": "final", "status": "ok",
                         "benchmark": "fm", "protocol": "holdout", "method": method, "seed": seed,
                         "test/accuracy": base[seed] + delta})
    for seed in base:  # kd's teacher, 5 points above erm: its teacher-margin precondition holds
        store.write({"row_id": f"teacher:final:fm:fm:s{seed}", "phase": "teacher", "tune_phase": "final",
                     "status": "ok", "benchmark": "fm", "method": "teacher:fast_cnn_wide", "seed": seed,
                     "test/accuracy": 0.86})
    return run_dir


def test_claim_rows_pair_by_seed_and_judge(tmp_path: Path) -> None:
    rows = {row.method: row for row in claim_rows(write_run(tmp_path))}
    assert set(rows) == {"kd", "ls"}  # erm is the baseline; a label maps back to its method's claim
    kd = rows["kd"]
    assert kd.difference == pytest.approx(0.02) and kd.seeds == 3
    assert kd.verdict == "supported" and kd.baseline_mean == pytest.approx(0.81)
    assert rows["ls"].verdict == "inconclusive" and rows["ls"].mde > 0.005 and "MDE" in rows["ls"].reason
    assert budget_text(kd.budget) == ("fashion_mnist, fast_cnn, 1 ep; tune 3x200 steps; 3 seeds; "
                         "scenario: label_noise kind=symmetric, rate=0.4")
    assert command(kd, tmp_path) == f"python -m harness.run suites/distill.yaml --out {tmp_path}"


def test_a_claim_against_another_method_is_paired_with_that_method(tmp_path: Path) -> None:
    """xat claims to match additive AT (pgd_at), not to beat erm: its row pairs it with pgd_at."""
    run_dir = tmp_path / "robust" / "0123456789abcdef"
    suite = {"name": "robust", "benchmarks": [{"name": "fm", "dataset": "fashion_mnist", "model": "fast_cnn",
                                               "budget": {"epochs": 1}}],
             "methods": [{"name": "erm"}, {"name": "pgd_at"}, {"name": "xat"}], "final": {"seeds": [0, 1, 2]}}
    run_dir.mkdir(parents=True)
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(suite))
    store = ResultStore(run_dir)
    accuracy = {"erm": (0.85, 0.86, 0.84), "pgd_at": (0.78, 0.79, 0.77), "xat": (0.775, 0.786, 0.768)}
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            store.write({"row_id": f"final:holdout:fm:{method}:s{seed}", "phase": "final", "status": "ok",
                         "benchmark": "fm", "protocol": "holdout", "method": method, "seed": seed,
                         "test/accuracy": value, "test/pgd_linf_accuracy": {"erm": 0.1, "pgd_at": 0.11}.get(method, 0.5)})
    rows = {row.method: row for row in claim_rows(run_dir)}
    xat = rows["xat"]
    assert xat.claim.baseline == "pgd_at" and xat.baseline_mean == pytest.approx(0.78)
    assert xat.difference == pytest.approx(-0.0036666, abs=1e-6) and xat.verdict == "supported"  # within 1 point
    assert rows["pgd_at"].baseline_mean == pytest.approx(0.1)  # pgd_at's own claim is on PGD accuracy, vs erm
    assert all(row.at_chance == 0 for row in rows.values())  # robust accuracy at 11% is no collapse
    page = (tmp_path / "claims.md")
    assert main([str(tmp_path), "-o", str(page)]) == 0
    assert "(no worse than pgd_at by > 1.00)" in page.read_text() and "| 78.00 (`pgd_at`) |" in page.read_text()


def test_a_seed_that_ended_at_chance_is_named_beside_the_verdict(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path)
    ResultStore(run_dir).write({"row_id": "final:holdout:fm:kd:s1", "phase": "final", "status": "ok", "benchmark": "fm",
                                "protocol": "holdout", "method": "kd", "seed": 1, "test/accuracy": 0.1})  # diverged
    rows = {row.method: row for row in claim_rows(run_dir)}
    assert (rows["kd"].at_chance, rows["ls"].at_chance) == (1, 0)  # 10 classes: 10% is chance
    notes = tmp_path / "notes.md"
    notes.write_text("kd diverged on seed 1 at lr 0.3.\n")
    out = tmp_path / "claims.md"
    assert main([str(tmp_path), "-o", str(out), "--notes", str(notes)]) == 0
    page = out.read_text()
    assert rows["kd"].verdict == "not tested"  # a collapsed seed is no evidence: the gate names it
    assert "**not tested** (failed gate: no seed at chance); 1 of 3 seeds at chance |" in page
    assert "FAILED no seed at chance: method 1, baseline 0 runs at chance" in page
    assert "## Notes\n\nkd diverged on seed 1 at lr 0.3." in page and f"--notes {notes}`" in page
    assert main([str(tmp_path), "--notes", str(tmp_path / "missing.md")]) == 2


def test_main_writes_the_page_and_refuses_an_empty_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_run(tmp_path / "runs")
    out = tmp_path / "claims.md"
    assert main([str(tmp_path / "runs"), "-o", str(out)]) == 0
    page = out.read_text()
    assert "| `kd` |" in page and "**supported**" in page and "**inconclusive**" in page
    assert "| 3 x 1; skew-corrected t (Hall) at 98.7% (n = 3); MDE " in page
    assert "| 83.00 [" in page  # kd's mean accuracy in %, (0.82 + 0.841 + 0.829) / 3
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no suite run" in capsys.readouterr().err


def test_publish_keeps_the_run_essentials_and_one_plotly(tmp_path: Path) -> None:
    from dashboards.page import build_dashboard
    from dashboards.publish import main as publish
    from harness.store import read_results

    run_dir = write_run(tmp_path / "runs")
    (run_dir / "ray_train").mkdir()  # Ray's scratch: never published
    (run_dir / "ray_train" / "checkpoint.pt").write_bytes(b"x" * 100)
    build_dashboard(run_dir)
    dest = tmp_path / "docs" / "leaderboard"
    assert publish([str(tmp_path / "runs"), str(dest)]) == 0
    target = dest / "distill" / "0123456789abcdef"
    assert sorted(p.name for p in target.iterdir()) == ["dashboard", "results.parquet", "suite.yaml"]
    assert len(read_results(target)) == 12  # every row (9 final, 3 teacher), from results.parquet alone
    page = (target / "dashboard" / "index.html").read_text()
    assert 'src="../../../plotly.min.js"' in page and (dest / "plotly.min.js").is_file()
    assert (target / "dashboard" / "../../../plotly.min.js").resolve() == (dest / "plotly.min.js").resolve()
    assert "`python -m harness.run suites/distill.yaml --out docs/leaderboard`" in (dest / "README.md").read_text()
    assert main([str(dest), "-o", str(tmp_path / "claims.md")]) == 0  # claims read the published copy
    assert "| `kd` |" in (tmp_path / "claims.md").read_text()


def test_a_method_no_run_measured_gets_a_not_run_row_naming_its_suite(tmp_path: Path) -> None:
    from dashboards.claims import missing_rows

    measured = claim_rows(write_run(tmp_path / "runs"))
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "noisy.yaml").write_text(yaml.safe_dump({
        "name": "noisy", "methods": [{"name": "erm"}, {"name": "p_diff"}],
        "benchmarks": [{"dataset": "fashion_mnist", "model": "fast_cnn", "budget": {"epochs": 2}}]}))
    rows = {row.method: row for row in missing_rows(measured, suites)}
    assert "kd" not in rows and "erm" not in rows  # measured, and the baseline has no claim
    assert rows["p_diff"].verdict == "not run" and rows["p_diff"].suite == "noisy"
    assert command(rows["p_diff"], tmp_path / "runs") == f"python -m harness.run suites/noisy.yaml --out {tmp_path / 'runs'}"
    assert command(rows["bd_kd"], tmp_path / "runs") == "no shipped suite" and rows["bd_kd"].budget is None


def test_the_published_claims_page_is_what_its_command_builds(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    """docs/claims.md is generated: rebuilding it from docs/leaderboard and the notes gives the same page, so
    a hand edit, a changed claim or a republished run without a rebuild fails here."""
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    assert main(["docs/leaderboard", "--notes", "docs/claims-notes.md"]) == 0
    assert capsys.readouterr().out == (root / "docs" / "claims.md").read_text()


def test_runs_at_chance_are_counted_out_of_the_runs_not_the_seeds() -> None:
    """With 2 tuning studies a (study, seed) pair is one run: "3 of 3 seeds" would overstate a collapse that
    hit 3 of 6 runs."""
    from dashboards.claims import _verdict_cell
    from harness.claims import ClaimVerdict

    row = ClaimVerdict(method="m", suite="toy", benchmark="b", claim=Claim("gains", metric="test/accuracy"),
                       mean=0.8, ci=(0.7, 0.9), baseline_mean=0.1, difference=0.7, difference_ci=(0.6, 0.8),
                       seeds=3, budget=None, verdict="not tested", baseline_at_chance=3, studies=2)
    assert _verdict_cell(row).endswith("; erm: 3 of 6 runs at chance")
    one_study = ClaimVerdict(**{**row.__dict__, "studies": 1, "at_chance": 1, "baseline_at_chance": 0})
    assert _verdict_cell(one_study).endswith("; 1 of 3 seeds at chance")
