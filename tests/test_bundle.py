"""Result bundles: `python -m harness.bundle RUN_DIR` and the site's loader reading them back.

A bundle of a published run must give the loader the rows the run directory gives, the same bytes every
time it is made, and merge with another bundle of the run without doubling a row; a damaged one is refused
naming the file (exit 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from dashboards.sources import ADDED_COLUMNS, SourceError, load_sources
from harness.audit import record_digest
from harness.bundle import MANIFEST, SUFFIX, archive_bytes, main, read_bundle, write_bundle
from harness.store import RESULTS_FILE, ResultStore, read_results
from harness.suite import load_suite, suite_as_yaml

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "docs" / "leaderboard" / "label_noise" / "d679d91e4b17bd35"


def store_rows(run) -> pd.DataFrame:
    return run.rows.drop(columns=list(ADDED_COLUMNS))


def copy_run(tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name / RUN.name
    shutil.copytree(RUN, target, ignore=shutil.ignore_patterns("dashboard"))
    return target


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(RUN, tmp_path_factory.mktemp("bundle"))


def test_a_bundle_gives_the_rows_its_run_directory_gives(bundle: Path) -> None:
    assert bundle.name == f"label_noise-{RUN.name}{SUFFIX}"
    from_bundle = load_sources([bundle]).run(RUN.name)
    from_store = load_sources([RUN]).run(RUN.name)
    pd.testing.assert_frame_equal(store_rows(from_bundle), store_rows(from_store))
    assert from_bundle.suite_yaml == (RUN / "suite.yaml").read_text() and from_bundle.run_dir is None
    assert from_bundle.code_versions == from_store.code_versions and from_bundle.hardware == from_store.hardware
    assert members_of(bundle)["studies.journal"] == (RUN / "studies.journal").read_bytes()


def test_the_same_run_gives_the_same_bytes_wherever_it_lies(tmp_path: Path, bundle: Path) -> None:
    again = write_bundle(copy_run(tmp_path), tmp_path / "again.tar.gz")
    assert again.read_bytes() == bundle.read_bytes()
    assert bundle.read_bytes()[3:8] == bytes(5)  # gzip header: no file name flag, mtime 0
    with tarfile.open(bundle, "r:gz") as tar:
        infos = tar.getmembers()
    assert [info.name for info in infos] == sorted(info.name for info in infos)
    assert {(info.mtime, info.uid, info.uname) for info in infos} == {(0, 0, "")}


def test_the_manifest_holds_every_members_sha256_and_the_format_version(bundle: Path) -> None:
    members = members_of(bundle)
    manifest = json.loads(members[MANIFEST])
    assert manifest["format_version"] == 1 and manifest["suite_hash"] == RUN.name and manifest["rows"] == 12
    assert {name: entry["sha256"] for name, entry in manifest["members"].items()} == {
        name: hashlib.sha256(data).hexdigest() for name, data in members.items() if name != MANIFEST}
    splits = json.loads(members["splits.json"])["benchmarks"]["fashion_mnist_noisy40"]
    assert splits["tuning"]["holdout"]["tune_val_size"] == 1000 and splits["final"]["split_seed"] == 0
    assert splits["splits_read"] == {"final": {"test,train": 6}, "tune": {"tune_train,tune_val": 6}}
    versions = json.loads(members["environment.json"])["library_versions"]
    assert versions == [{"value": json.loads(read_results(RUN)["library_versions"][0]), "rows": 12}]


def test_two_bundles_of_one_run_merge_to_its_rows(tmp_path: Path, bundle: Path) -> None:
    other = write_bundle(copy_run(tmp_path), tmp_path / f"other{SUFFIX}")
    run = load_sources([bundle, other, RUN]).run(RUN.name)
    assert len(run.rows) == len(read_results(RUN))
    assert run.origins == (str(bundle), str(other), str(RUN)) and run.run_dir == RUN
    assert not run.rows["provenance_differs"].any()


def test_a_bundled_row_of_other_hardware_is_marked(tmp_path: Path, bundle: Path) -> None:
    copy = copy_run(tmp_path)
    rows = read_results(copy)
    rows.loc[rows.index[rows["phase"] == "final"][0], "hardware"] = '{"cuda": "NVIDIA H100"}'
    rows.to_parquet(copy / RESULTS_FILE, index=False)
    other = write_bundle(copy, tmp_path / f"other{SUFFIX}")
    run = load_sources([bundle, other]).run(RUN.name)
    marked = run.rows[run.rows["provenance_differs"]]
    assert len(run.rows) == 13 and len(marked) == 1
    assert marked["provenance_note"].iloc[0].startswith('worker hardware {"cuda": "NVIDIA H100"}')
    assert marked["row_origins"].iloc[0] == str(other)


def test_a_store_of_row_files_bundles_as_consolidated(tmp_path: Path) -> None:
    live = tmp_path / RUN.name
    live.mkdir()
    shutil.copy(RUN / "suite.yaml", live / "suite.yaml")
    store = ResultStore(live)
    for row in read_results(RUN).to_dict("records"):
        store.write({key: value for key, value in row.items() if not (isinstance(value, float) and pd.isna(value))})
    bundle = write_bundle(live, tmp_path)
    assert "studies.journal" not in members_of(bundle)
    pd.testing.assert_frame_equal(read_bundle(bundle).rows(), read_results(live))


def test_audit_digests_are_carried_and_checked(tmp_path: Path) -> None:
    copy = copy_run(tmp_path)
    rows = read_results(copy)
    record = json.dumps({"reads": []})
    rows["data_files_read"] = [record, record] + [None] * (len(rows) - 2)
    rows["audit_digest"] = [record_digest(record), "0" * 64] + [None] * (len(rows) - 2)
    rows.to_parquet(copy / RESULTS_FILE, index=False)
    audit = json.loads(members_of(write_bundle(copy, tmp_path))["audit.json"])
    assert (audit["audited"], audit["matching"], audit["without_record"]) == (2, 1, len(rows) - 2)


def _rewritten(bundle: Path, target: Path, change) -> Path:
    members = members_of(bundle)
    change(members)
    target.write_bytes(archive_bytes(members))
    return target


@pytest.mark.parametrize("damage", ["truncated", "member_changed", "member_added", "not_gzip"])
def test_a_damaged_bundle_is_refused_naming_the_file(tmp_path: Path, bundle: Path, damage: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / f"damaged{SUFFIX}"
    if damage == "truncated":
        target.write_bytes(bundle.read_bytes()[:2000])
    elif damage == "member_changed":
        _rewritten(bundle, target, lambda m: m.__setitem__("suite.yaml", m["suite.yaml"] + b"# edited\n"))
    elif damage == "member_added":
        _rewritten(bundle, target, lambda m: m.__setitem__("studies.journal.bak", b"{}"))
    else:
        target.write_text("name: not an archive\n")
    assert main(["--check", str(target)]) == 2
    error = capsys.readouterr().err
    assert str(target) in error, error
    if damage == "member_changed":
        assert "suite.yaml does not match its sha256" in error
    with pytest.raises(SourceError, match=str(target)):
        load_sources([target])


def test_the_cli_bundles_checks_and_refuses_what_is_not_a_run(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"run{SUFFIX}"
    assert main([str(RUN), "-o", str(out)]) == 0 and capsys.readouterr().out.strip() == str(out)
    assert main(["--check", str(out)]) == 0
    assert "suite label_noise (d679d91e4b17bd35), 12 rows" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run directory" in capsys.readouterr().err


def test_rows_of_another_suite_hash_are_not_bundled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = copy_run(tmp_path)
    rows = read_results(copy)
    rows.loc[0, "suite_hash"] = "feedfacefeedface"
    rows.to_parquet(copy / RESULTS_FILE, index=False)
    assert main([str(copy), "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "but the rows carry d679d91e4b17bd35, feedfacefeedface" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()


def test_an_archive_lacking_the_manifest_is_refused(tmp_path: Path, bundle: Path) -> None:
    members = members_of(bundle)
    del members[MANIFEST]
    (tmp_path / "b.tar.gz").write_bytes(archive_bytes(members))
    with pytest.raises(SourceError, match="holds no manifest.json"):
        load_sources([tmp_path / "b.tar.gz"])


def _fresh_smoke_run(root: Path, overrides: tuple[str, ...] = ()) -> Path:
    """A run directory of the smoke suite (digits) before its first row: its frozen suite and empty rows/."""
    suite = load_suite(ROOT / "suites" / "smoke.yaml", overrides)
    run_dir = root / suite.hash
    (run_dir / "rows").mkdir(parents=True)
    (run_dir / "suite.yaml").write_text(suite_as_yaml(suite))
    return run_dir


def _examples(bundle: Path) -> dict:
    digits = json.loads(members_of(bundle)["splits.json"])["benchmarks"]["digits"]
    return {"final": digits["final"]["examples_sha256"], "holdout": digits["tuning"]["holdout"]["examples_sha256"]}


def test_hash_splits_adds_the_sha256_of_each_splits_examples(tmp_path: Path) -> None:
    run_dir = _fresh_smoke_run(tmp_path / "a")
    plain = members_of(write_bundle(run_dir, tmp_path / "plain.tar.gz"))
    assert "examples_sha256" not in json.loads(plain["splits.json"])["benchmarks"]["digits"]["final"]
    hashed = _examples(write_bundle(run_dir, tmp_path / "hashed.tar.gz", hash_splits=True))
    assert hashed == _examples(write_bundle(run_dir, tmp_path / "again.tar.gz", hash_splits=True))
    assert set(hashed["final"]) == {"train", "test"} and set(hashed["holdout"]) == {"tune_train", "tune_val"}
    assert len(set(hashed["final"].values()) | set(hashed["holdout"].values())) == 4
    other_seed = _examples(write_bundle(_fresh_smoke_run(tmp_path / "b", ("tuning.split_seed=7",)),
                                        tmp_path / "seed7.tar.gz", hash_splits=True))
    assert other_seed["final"] == hashed["final"]  # final.split_seed defaults to the sampler's, unchanged
    assert other_seed["holdout"]["tune_val"] != hashed["holdout"]["tune_val"]


def test_check_names_members_that_contradict_each_other(tmp_path: Path, bundle: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A bundle rewritten with a consistent manifest passes the checksums; --check still catches it."""
    members = members_of(bundle)
    rows = pd.read_parquet(io.BytesIO(members[RESULTS_FILE])).iloc[1:]
    members[RESULTS_FILE] = rows.to_parquet(index=False)
    members["suite.yaml"] += b"final: {seeds: [0]}\n"
    manifest = json.loads(members[MANIFEST])
    for name in (RESULTS_FILE, "suite.yaml"):
        manifest["members"][name] = {"sha256": hashlib.sha256(members[name]).hexdigest(), "bytes": len(members[name])}
    members[MANIFEST] = json.dumps(manifest).encode()
    target = tmp_path / f"rewritten{SUFFIX}"
    target.write_bytes(archive_bytes(members))
    assert main(["--check", str(target)]) == 1
    failures = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 5, failures
    assert any("suite.yaml hashes to" in line for line in failures)
    assert any("holds 11 rows, the manifest says 12" in line for line in failures)
    assert main(["--check", str(bundle)]) == 0
