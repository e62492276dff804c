"""`python -m harness.verify`: each contradiction in a run's rows is found and fails it; what rows cannot
prove is said. Hand-built run directories (no Ray); the smoke run's own check is in test_end_to_end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.audit import canonical_record, record_digest
from harness.store import ResultStore
from harness.suite import load_suite, suite_as_yaml
from harness.verify import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main

ROOT = Path(__file__).resolve().parent.parent
DIGITS = {"file": "/x/sklearn/datasets/data/digits.csv.gz", "holds": "digits:test,digits:train"}
T10K = {"file": "/data/t10k-images-idx3-ubyte.gz", "holds": "fashion_mnist:test"}
SHARED_TEST = {"object": "digits:test", "holds": "digits:test", "digest": "d" * 64}  # from Ray's object store
SHARED_TRAIN = {"object": "digits:train", "holds": "digits:train", "digest": "a" * 64, "while_training": False}


def audited(row: dict[str, Any], *reads: dict[str, Any]) -> dict[str, Any]:
    text = canonical_record(list(reads), [DIGITS["file"], T10K["file"]])
    return {**row, "data_files_read": text, "audit_digest": record_digest(text)}


def run_dir_with(tmp_path: Path, *rows: dict[str, Any]) -> Path:
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    run_dir = tmp_path / suite.name / suite.hash
    run_dir.mkdir(parents=True)
    (run_dir / "suite.yaml").write_text(suite_as_yaml(suite))
    store = ResultStore(run_dir)
    for row in rows:
        store.write({"suite_hash": suite.hash, "git_commit": "0" * 40, **row})
    return run_dir


def honest_rows() -> list[dict[str, Any]]:
    before = {**DIGITS, "while_training": False}
    return [audited({"row_id": "tune:holdout:digits:erm:0000", "phase": "tune", "protocol": "holdout",
                     "status": "ok", "splits_read": "tune_train,tune_val"}, before),
            audited({"row_id": "final:holdout:digits:erm:s0", "phase": "final", "protocol": "holdout",
                     "status": "ok", "splits_read": "test,train"}, before),
            audited({"row_id": "tune:holdout:digits:probe:0000", "phase": "tune", "protocol": "holdout",
                     "status": "failed", "splits_read": "", "error": "SealBrokenError: refused open of t10k"},
                    {**T10K, "while_training": True})]


def verify(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(run_dir)])
    return code, capsys.readouterr().out


def test_an_honest_run_passes_and_says_what_it_cannot_prove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(run_dir_with(tmp_path, *honest_rows()), capsys)
    assert code == EXIT_OK, out
    assert "FAIL" not in out
    assert "ok: 3 audit records match their digests" in out
    assert "ok: 1 row(s) failed because the audit refused a read (the seal held)" in out
    assert "cannot prove: the audit sees what Python's own file and process functions do" in out


def test_a_run_on_object_store_splits_passes_when_every_row_got_the_same_bytes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tune, final, _ = honest_rows()
    rows = [audited(tune, SHARED_TRAIN), audited(final, SHARED_TRAIN, {**SHARED_TEST, "while_training": False})]
    code, out = verify(run_dir_with(tmp_path, *rows), capsys)
    assert code == EXIT_OK and "FAIL" not in out, out
    assert "ok: every row that received a split from the object store got the same bytes (digits:test, " \
           "digits:train)" in out


@pytest.mark.parametrize(("damage", "says"), [
    ("edited", "final:holdout:digits:erm:s0: data_files_read does not match its audit_digest"),
    ("test_while_training", "opened /data/t10k-images-idx3-ubyte.gz (fashion_mnist:test) while training"),
    ("honest_reads_test_file", "an honest tuning job opened /data/t10k-images-idx3-ubyte.gz"),
    ("honest_receives_test", "an honest tuning job received the object-store split digits:test"),
    ("receives_test_while_training", "final:holdout:digits:erm:s0: received the object-store split digits:test "
                                     "while training"),
    ("shared_bytes_differ", "rows received different bytes for the object-store split digits:train"),
    ("splits", "splits outside the row's phase and protocol: tune:holdout:digits:erm:0000 read test"),
    ("suite_hash", "rows of another suite hash: 0123456789abcdef"),
])
def test_each_contradiction_fails_verification(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str,
                                               says: str) -> None:
    rows = honest_rows()
    tune, final = rows[0], rows[1]
    if damage == "edited":
        final["data_files_read"] = final["data_files_read"].replace("false", "true")
    elif damage == "test_while_training":
        rows[1] = audited(final, {**T10K, "while_training": True})
    elif damage == "honest_reads_test_file":
        rows[0] = audited(tune, {**T10K, "while_training": False})
    elif damage == "honest_receives_test":
        rows[0] = audited(tune, {**SHARED_TEST, "while_training": False})
    elif damage == "receives_test_while_training":
        rows[1] = audited(final, {**SHARED_TEST, "while_training": True})
    elif damage == "shared_bytes_differ":
        rows[0], rows[1] = audited(tune, SHARED_TRAIN), audited(final, {**SHARED_TRAIN, "digest": "b" * 64})
    elif damage == "splits":
        tune["splits_read"] = "test,tune_train"
    else:
        tune["suite_hash"] = "0123456789abcdef"
    code, out = verify(run_dir_with(tmp_path, *rows), capsys)
    assert code == EXIT_FAILED and any(line.startswith("FAIL: ") and says in line for line in out.splitlines()), out


def test_a_published_run_from_before_the_audit_still_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = ROOT / "docs" / "leaderboard" / "label_noise" / "d679d91e4b17bd35"  # published 2026-11-29
    code, out = verify(run_dir, capsys)
    assert code == EXIT_OK, out
    assert "carry no audit record" in out and "only their splits_read speaks for them" in out


def test_a_directory_that_is_not_a_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == EXIT_BAD_INPUT
    assert "is not a run directory" in capsys.readouterr().err


def test_an_unreadable_row_fails_verification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_dir_with(tmp_path, *honest_rows())
    (run_dir / "rows" / "final_x.parquet").write_bytes(b"PAR1 cut short")
    code, out = verify(run_dir, capsys)
    assert code == EXIT_FAILED and "final_x.parquet: unreadable row file" in out and "--resume" in out
