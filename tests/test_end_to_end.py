"""The whole product, through real Ray Tune and Ray Train: `python -m harness.run suites/smoke.yaml`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.leaderboard import leaderboard
from harness.store import RESULTS_FILE, ResultStore, read_results, row_file_name
from harness.suite import load_suite

pytestmark = pytest.mark.ray
METHODS = ["erm", "kd", "label_smoothing", "pgd_at"]
FINAL_COLUMNS = [
    "test/accuracy", "test/nll", "test/ece", "test/pgd_linf_accuracy", "test/gaussian_noise_accuracy",
    "model/params", "model/fwd_flops_2xmac_per_image", "latency/cpu_b1_median_ms", "latency/cpu_b1_p95_ms",
    "latency/threads", "throughput/images_per_s", "train/wall_s", "train/samples_seen", "train/steps",
]


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.run", "suites/smoke.yaml", *args], cwd=root,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def smoke_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("smoke")
    proc = run_cli(repo_root, "--out", str(out))
    run_dir = out / "smoke" / load_suite(repo_root / "suites" / "smoke.yaml").hash
    return out, run_dir, proc


def test_smoke_suite_succeeds_and_prints_the_leaderboard(smoke_run) -> None:
    _, run_dir, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    for method in METHODS:
        assert method in proc.stdout
    assert "ranked by test/accuracy" in proc.stdout
    assert "tune 8/8" in proc.stderr and "final 8/8" in proc.stderr
    assert (run_dir / "suite.yaml").is_file()


def test_tuning_rows_follow_the_held_out_protocol(smoke_run) -> None:
    _, run_dir, _ = smoke_run
    rows = read_results(run_dir)
    tune = rows[rows["phase"] == "tune"]
    assert sorted(tune["method"].unique()) == METHODS
    assert (tune.groupby("method").size() == 2).all()  # the same number of trials for every method
    assert (tune["status"] == "ok").all()
    assert set(tune["splits_read"]) == {"tune_train,tune_val"}
    assert set(tune["protocol"]) == {"holdout"} and set(tune["trial_index"]) == {0, 1}  # the study's trial numbers
    assert tune["val/accuracy"].between(0.0, 1.0).all()
    for config in tune["config_json"]:
        assert {"train.lr", "train.weight_decay"} <= set(json.loads(config))


def test_every_row_carries_an_audit_that_verify_checks(smoke_run, repo_root) -> None:
    _, run_dir, _ = smoke_run
    rows = read_results(run_dir)
    assert rows["audit_digest"].notna().all() and rows["data_files_read"].notna().all()
    proc = subprocess.run([sys.executable, "-m", "harness.verify", str(run_dir)], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout and f"ok: {len(rows)} audit records match their digests" in proc.stdout
    # every job mapped its splits from the object store the driver put them in, and got the same bytes
    assert "ok: every row that received a split from the object store got the same bytes (digits:test, " \
           "digits:train)" in proc.stdout


def test_final_rows_carry_metrics_and_provenance(smoke_run) -> None:
    _, run_dir, _ = smoke_run
    rows = read_results(run_dir)
    final = rows[rows["phase"] == "final"]
    assert len(final) == len(METHODS) * 2 and (final["status"] == "ok").all()
    assert set(final["splits_read"]) == {"test,train"}
    for column in FINAL_COLUMNS:
        assert final[column].notna().all(), column
    assert final["suite_hash"].nunique() == 1 and final["git_commit"].str.len().min() > 6
    assert final["library_versions"].str.contains('"torch"').all()
    # 4 epochs over digits' 1,438 training images at batch 64 (last partial batch dropped)
    assert set(final["train/samples_seen"]) == {4 * (1438 // 64) * 64}
    by_method = final.groupby("method")
    assert by_method["test/accuracy"].mean()["erm"] > 0.85
    assert by_method["test/pgd_linf_accuracy"].mean()["pgd_at"] > by_method["test/pgd_linf_accuracy"].mean()["erm"]


def test_final_runs_use_the_best_tuning_config(smoke_run) -> None:
    _, run_dir, _ = smoke_run
    rows = read_results(run_dir)
    tune, final = rows[rows["phase"] == "tune"], rows[rows["phase"] == "final"]
    for method, trials in tune.groupby("method"):
        best = trials.sort_values(["val/accuracy", "trial_index"], ascending=[False, True]).iloc[0]
        assert set(final[final["method"] == method]["config_json"]) == {best["config_json"]}


def test_teachers_are_trained_once_per_phase_and_seed(smoke_run) -> None:
    _, run_dir, _ = smoke_run
    rows = read_results(run_dir)
    teachers = rows[rows["phase"] == "teacher"]
    assert sorted(teachers["row_id"]) == ["teacher:final:digits:digits:s0", "teacher:final:digits:digits:s1",
                                          "teacher:tune:digits:digits:s0"]
    assert (teachers["status"] == "ok").all() and (teachers["train/wall_s"] > 0).all()
    assert len(list((run_dir / "teachers").glob("*.pt"))) == 3


def test_results_file_and_dashboard_are_written(smoke_run) -> None:
    _, run_dir, _ = smoke_run
    assert len(read_results(run_dir)) == len(__import__("pandas").read_parquet(run_dir / RESULTS_FILE))
    page = run_dir / "dashboard" / "index.html"
    html = page.read_text()
    assert (run_dir / "dashboard" / "plotly.min.js").is_file()
    for method in METHODS:
        assert method in html
    assert "cdn." not in html


def test_resume_skips_completed_work_and_reruns_only_what_is_missing(smoke_run, repo_root) -> None:
    out, run_dir, _ = smoke_run
    store = ResultStore(run_dir)
    before = {p.name: p.stat().st_mtime_ns for p in store.rows_dir.glob("*.parquet")}

    again = run_cli(repo_root, "--out", str(out))  # without --resume: refused, nothing touched
    assert again.returncode == 2 and "--resume" in again.stderr

    removed = store.rows_dir / row_file_name("final:holdout:digits:erm:s1")
    removed.unlink()
    resumed = run_cli(repo_root, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    after = {p.name: p.stat().st_mtime_ns for p in store.rows_dir.glob("*.parquet")}
    assert set(after) == set(before)
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {removed.name}  # exactly the missing run was redone; no row lost or duplicated
    assert store.completed("final:holdout:digits:erm:s1") is not None
    assert "already stored" in resumed.stderr


def test_protocols_tune_on_their_own_splits_and_share_identical_final_runs(repo_root, tmp_path) -> None:
    """One trial per cell: holdout and oracle draw the same configuration (the same seeded sampler), so
    their final runs are identical and run once; the oracle's tuning read the test split, labelled so."""
    overrides = ("protocols=[holdout, oracle]", "allow_oracle=true", "methods=[{name: erm}]", "tuning.trials=1",
                 "final.seeds=[0]")
    args = ["--out", str(tmp_path), "--no-dashboard", *[x for o in overrides for x in ("--set", o)]]
    proc = run_cli(repo_root, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    rows = read_results(tmp_path / suite.name / suite.hash).set_index("row_id")
    assert rows.loc["tune:holdout:digits:erm:0000", "splits_read"] == "tune_train,tune_val"
    assert rows.loc["tune:oracle:digits:erm:0000", "splits_read"] == "test,tune_train"
    holdout, oracle = rows.loc["final:holdout:digits:erm:s0"], rows.loc["final:oracle:digits:erm:s0"]
    assert holdout["config_json"] == oracle["config_json"] and holdout["test/accuracy"] == oracle["test/accuracy"]
    assert {holdout.get("reused_from"), oracle.get("reused_from")} & {"final:holdout:digits:erm:s0",
                                                                      "final:oracle:digits:erm:s0"}
    assert (oracle["protocol"], holdout["protocol"]) == ("oracle", "holdout")
    assert "oracle (tuned on test)" in proc.stdout


def test_start_from_defaults_runs_the_defaults_as_each_cells_first_trial(repo_root, tmp_path) -> None:
    """`tuning.start_from_defaults`: trial 0 trains the benchmark's train settings and the method's config
    (clipped into its search space), TPE proposes trial 1; without the key the suite hash is unchanged."""
    overrides = ("methods=[{name: label_smoothing, config: {smoothing: 0.5}}]", "tuning.trials=2",
                 "tuning.start_from_defaults=true", "final.seeds=[0]")
    args = ["--out", str(tmp_path), "--no-dashboard", *[x for o in overrides for x in ("--set", o)]]
    proc = run_cli(repo_root, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    assert suite.hash != load_suite(repo_root / "suites" / "smoke.yaml", overrides[:-2] + overrides[-1:]).hash
    rows = read_results(tmp_path / suite.name / suite.hash).set_index("row_id")
    first = json.loads(rows.loc["tune:holdout:digits:label_smoothing:0000", "config_json"])
    assert first == {"method.smoothing": 0.3, "train.lr": 0.05, "train.weight_decay": 0.0005}  # 0.5 clipped to 0.3
    second = json.loads(rows.loc["tune:holdout:digits:label_smoothing:0001", "config_json"])
    assert second != first and 0.0 <= second["method.smoothing"] <= 0.3


def test_repeats_tune_independent_studies_on_the_objective_and_retrain_each(repo_root, tmp_path) -> None:
    """`tuning.repeats: 2` with `sobol_tpe` and an objective with a floor: two studies per method, each with
    its own sampler seed, selecting on val/nll among trials that clear the floor; every study's best config
    is retrained for every seed, so the leaderboard's n is seeds x studies."""
    overrides = ("methods=[{name: erm}]", "tuning.trials=2", "tuning.repeats=2",
                 "tuning.sampler=sobol_tpe", "tuning.objective={metric: val/nll, floor: {val/accuracy: 0.2}}",
                 "final.seeds=[0, 1]")
    proc = run_cli(repo_root, "--out", str(tmp_path), "--no-dashboard", *[x for o in overrides for x in ("--set", o)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    rows = read_results(tmp_path / suite.name / suite.hash)
    tune, final = rows[rows["phase"] == "tune"], rows[rows["phase"] == "final"]
    assert len(tune) == 2 * 2 and (tune["status"] == "ok").all() and tune["val/nll"].notna().all()
    assert set(tune["study"]) == {0, 1} and set(tune["sampler"]) == {"sobol_tpe"}
    assert tune["sampler_settings"].nunique() == 2  # each study has its own seed
    assert len(final) == 2 * 2 and (final["status"] == "ok").all()
    assert "final:holdout:digits:erm:s0" in set(final["row_id"]) and "final:holdout:digits:erm#1:s1" in set(final["row_id"])
    for (method, study), runs in final.groupby(["method", "study"]):
        trials = tune[(tune["method"] == method) & (tune["study"] == study)]
        passing = trials[trials["val/accuracy"] >= 0.2]
        best = (passing if len(passing) else trials).sort_values(["val/nll", "trial_index"]).iloc[0]
        assert set(runs["config_json"]) == {best["config_json"]}
        fell_back = "selection_fallback" in runs and runs["selection_fallback"].notna().all()
        assert fell_back == passing.empty
    assert set(leaderboard(rows)["n"]) == {4}
