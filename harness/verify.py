"""`python -m harness.verify RUN_DIR`: check what a run's rows say about the seal, and say what they cannot prove.

Per row: the splits it read are those its phase and protocol may read; its audit record matches its
digest, and no successful row opened a test split's file or received a test split from Ray's object
store while training (an honest tuning row, never at all); its suite hash is the run's. Across rows:
every split received from the object store has one digest (every job got the same bytes). For the run: the frozen `suite.yaml` hashes to the directory's
name, and the code version the rows name. Exit codes: 0 every check passed (what could not be checked
is listed), 1 a check failed, 2 RUN_DIR is not a run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.audit import record_digest
from harness.data.access import PHASE_SPLITS
from harness.errors import HarnessInputError
from harness.protocols import PROTOCOLS, must_not_read_test
from harness.provenance import git_commit
from harness.store import RESULTS_FILE, UnreadableRowError, read_results
from harness.suite import validate_suite

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
LIMITS = (
    "the audit sees what Python's own file and process functions do in the processes that ran training code; "
    "a C extension reading files by itself, or code that rewrites the interpreter's state, is not seen",
    "a digest shows that a record was not changed without it; whoever can write the store can rewrite both "
    "(a checksum, not a signature)",
    "a job that found its train split already cached in its process opened no file: its record is empty, "
    "and its splits_read column alone says what it was handed",
    "a split mapped from Ray's object store is recorded by the data layer when it hands the split out; a raw "
    "ray.get of an object reference is not seen (no tuning job is handed a test split's reference, and none "
    "is in the object store while a suite tunes)",
)


@dataclass
class Findings:
    """What verification found: checks passed, checks failed, and what cannot be proved."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        yield from (f"ok: {line}" for line in self.passed)
        yield from (f"FAIL: {line}" for line in self.failed)
        yield from (f"cannot prove: {line}" for line in self.unproven)


def allowed_splits(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The splits a row's phase and protocol may read: a tuning row its protocol's `tuning_splits` (an
    unknown protocol, the held-out ones), a teacher its phase's, a final run `PHASE_SPLITS["final"]`."""
    phase = str(row.get("phase"))
    if phase == "tune":
        protocol = str(row.get("protocol"))
        return PROTOCOLS.get(protocol).tuning_splits if protocol in PROTOCOLS else PHASE_SPLITS["tune"]
    if phase == "teacher":
        return PHASE_SPLITS["tune" if row.get("tune_phase") == "tune" else "final"]
    return PHASE_SPLITS["final"]


def honest_tuning(row: Mapping[str, Any]) -> bool:
    """A tuning job that must never have seen the test split: an honest protocol's trial, a tuning teacher."""
    return (row.get("phase") == "tune" and must_not_read_test(row.get("protocol"))) or (
        row.get("phase") == "teacher" and row.get("tune_phase") == "tune")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) and str(value) != ""


def check_splits(rows: list[dict[str, Any]], findings: Findings) -> None:
    bad = []
    for row in rows:
        read = {s for s in str(row.get("splits_read") or "").split(",") if s} if _present(row.get("splits_read")) else set()
        extra = read - set(allowed_splits(row))
        if extra:
            bad.append(f"{row['row_id']} read {','.join(sorted(extra))}")
    if bad:
        findings.failed += [f"splits outside the row's phase and protocol: {line}" for line in bad]
    else:
        findings.passed.append(f"every row read only the splits its phase and protocol allow ({len(rows)} rows)")


def audit_problems(row: Mapping[str, Any]) -> list[str]:
    """Why a row's audit record contradicts the seal (empty when it does not)."""
    text = str(row["data_files_read"])
    if record_digest(text) != row.get("audit_digest"):
        return [f"{row['row_id']}: data_files_read does not match its audit_digest (edited after the run?)"]
    problems = []
    ok = row.get("status") == "ok"
    for read in json.loads(text).get("reads", []):
        holds_test = any(part.endswith(":test") for part in str(read.get("holds", "")).split(","))
        test_only = holds_test and not any(part.endswith(":train") for part in str(read["holds"]).split(","))
        if ok and read.get("while_training") and holds_test:
            problems.append(f"{row['row_id']}: {_what_it_read(read)} while training")
        elif ok and honest_tuning(row) and test_only:
            problems.append(f"{row['row_id']}: an honest tuning job {_what_it_read(read)}")
    return problems


def _what_it_read(read: Mapping[str, Any]) -> str:
    """`opened FILE (holds)` for a file, `received the object-store split NAME` for a shared split."""
    if "object" in read:
        return f"received the object-store split {read['object']}"
    return f"opened {read['file']} ({read['holds']})"


def check_audit(rows: list[dict[str, Any]], findings: Findings) -> None:
    audited = [row for row in rows if _present(row.get("data_files_read"))]
    problems = [problem for row in audited for problem in audit_problems(row)]
    findings.failed += problems
    if audited and not problems:
        findings.passed.append(f"{len(audited)} audit records match their digests and show no test split opened "
                               "or received while training, nor by honest tuning")
    refused = [row["row_id"] for row in rows if "SealBrokenError" in str(row.get("error") or "")]
    if refused:
        findings.passed.append(f"{len(refused)} row(s) failed because the audit refused a read (the seal held): "
                               + ", ".join(refused[:5]) + (" ..." if len(refused) > 5 else ""))
    missing = len(rows) - len(audited)
    if missing:
        findings.unproven.append(f"{missing} of {len(rows)} rows carry no audit record (written before the audit "
                                 "existed, or a trial that failed before its first report): only their "
                                 "splits_read speaks for them")


def check_shared_bytes(rows: list[dict[str, Any]], findings: Findings) -> None:
    """Every row that received a split from the object store got the same bytes (one digest per split)."""
    digests: dict[str, set[str]] = {}
    for row in rows:
        if _present(row.get("data_files_read")) and record_digest(str(row["data_files_read"])) == row.get("audit_digest"):
            for read in json.loads(str(row["data_files_read"])).get("reads", []):
                if "object" in read:
                    digests.setdefault(str(read["object"]), set()).add(str(read.get("digest")))
    differing = {name: sorted(found) for name, found in digests.items() if len(found) > 1}
    findings.failed += [f"rows received different bytes for the object-store split {name}: digests "
                        + ", ".join(digest[:12] for digest in found) for name, found in sorted(differing.items())]
    if digests and not differing:
        findings.passed.append(f"every row that received a split from the object store got the same bytes "
                               f"({', '.join(sorted(digests))})")


def check_hashes(run_dir: Path, rows: list[dict[str, Any]], findings: Findings) -> None:
    try:
        frozen = validate_suite(yaml.safe_load((run_dir / "suite.yaml").read_text()), source=str(run_dir))
    except HarnessInputError as error:
        findings.failed.append(f"suite.yaml no longer validates: {error}")
        return
    if frozen.hash != run_dir.name:
        findings.failed.append(f"suite.yaml hashes to {frozen.hash}, not to the run directory's name {run_dir.name}")
    else:
        findings.passed.append(f"suite.yaml hashes to the run directory's name ({run_dir.name})")
    strangers = sorted({str(row.get("suite_hash")) for row in rows} - {run_dir.name})
    if strangers:
        findings.failed.append(f"rows of another suite hash: {', '.join(strangers)}")
    else:
        findings.passed.append("every row carries the run's suite hash")


def check_code_version(rows: list[dict[str, Any]], findings: Findings) -> None:
    commits = sorted({str(row.get("git_commit")) for row in rows if _present(row.get("git_commit"))})
    if not commits or commits == ["unknown"]:
        findings.unproven.append("which code made the rows: they name no git commit")
        return
    dirty = [c for c in commits if c.endswith("+dirty")]
    findings.passed.append(f"rows made by commit(s) {', '.join(c[:12] + ('+dirty' if c in dirty else '') for c in commits)}"
                           f"; this checkout is {git_commit()[:12]}")
    if len(commits) > 1:
        findings.unproven.append(f"that one code version made every row: {len(commits)} commits (a run resumed "
                                 "across code changes)")
    if dirty:
        findings.unproven.append("what the uncommitted changes ('+dirty') of the code that made some rows were")


def verify(run_dir: Path) -> Findings:
    """Every check on one run directory (raises HarnessInputError when it is not one)."""
    if not (run_dir / "suite.yaml").is_file() or not ((run_dir / "rows").is_dir() or (run_dir / RESULTS_FILE).is_file()):
        raise HarnessInputError(f"{run_dir} is not a run directory (it needs suite.yaml and rows/ or {RESULTS_FILE})")
    findings = Findings()
    try:
        frame = read_results(run_dir)
    except UnreadableRowError as error:
        findings.failed.append(f"{error}; `harness.run --resume` sets it aside and reruns its work")
        return findings
    rows = frame.to_dict("records")
    check_hashes(run_dir, rows, findings)
    check_code_version(rows, findings)
    check_splits(rows, findings)
    check_audit(rows, findings)
    check_shared_bytes(rows, findings)
    findings.unproven += list(LIMITS)
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.verify", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory, e.g. results/smoke/<suite-hash>")
    args = parser.parse_args(argv)
    try:
        findings = verify(args.run_dir)
    except HarnessInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in findings.lines():
        print(line)
    return EXIT_FAILED if findings.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
