"""`output.storage`: where Ray Train checkpoints and Tune state go (a path, or a URI through pyarrow's
filesystem layer), apart from the run directory where results always land.

A real s3:// or gs:// bucket is out of reach offline, so the non-local case runs a final run through
Ray Train on a `SubTreeFileSystem`: a pyarrow filesystem that is not the local one, whose paths mean
nothing to code that would assume a local folder.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs
import pytest

from harness.errors import SuiteError
from harness.run import EXIT_BAD_INPUT, main
from harness.storage import Storage, check_storage_uri, local_storage, resolve_storage
from harness.suite import load_suite

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
UNREACHABLE_S3 = "s3://bucket/scratch?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"


@pytest.mark.parametrize("value", ["/shared/scratch", "relative/scratch", "file:///shared/scratch",
                                   "s3://bucket/prefix", "gs://bucket", "s3://bucket/p?region=eu-west-1"])
def test_paths_and_uris_that_pyarrow_opens_pass_the_suite_check(value: str) -> None:
    assert check_storage_uri(value) == value
    assert load_suite(SMOKE, [f"output.storage={value}"]).output.storage == value


@pytest.mark.parametrize(("value", "says"), [
    ("s4://bucket/x", "unknown storage scheme 's4://'"),
    ("s3://", "needs a bucket or host"),
    ("gs:///path", "needs a bucket or host"),
    ("file://relative/x", "names an absolute path"),
    ("'  '", "give a path or a URI"),
])
def test_bad_storage_uris_name_the_key(value: str, says: str) -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(SMOKE, [f"output.storage={value}"])
    assert caught.value.key_path == "output.storage" and says in str(caught.value)


def test_storage_does_not_change_the_suite_hash() -> None:
    assert load_suite(SMOKE, ["output.storage=s3://bucket/x"]).hash == load_suite(SMOKE).hash


def test_without_storage_the_scratch_stays_in_the_run_directory(tmp_path: Path) -> None:
    storage = resolve_storage(None, tmp_path / "run", "smoke", "abc")
    assert storage.is_local and storage.path == str((tmp_path / "run").resolve())
    assert storage.child("ray_train").ray_storage() == {"storage_path": str((tmp_path / "run" / "ray_train").resolve()),
                                                        "storage_filesystem": None}


@pytest.mark.parametrize("spelling", ["plain", "file"])
def test_a_local_storage_gets_the_suite_and_hash_below_it(tmp_path: Path, spelling: str) -> None:
    value = str(tmp_path / "scratch") if spelling == "plain" else f"file://{tmp_path}/scratch"
    storage = resolve_storage(value, tmp_path / "run", "smoke", "abc").child("ray_tune")
    assert storage.path == str(tmp_path / "scratch" / "smoke" / "abc" / "ray_tune")
    assert storage.ray_storage()["storage_filesystem"] is None  # Ray's own local handling, as without storage


def test_a_non_local_filesystem_travels_with_its_paths(tmp_path: Path) -> None:
    storage = Storage(pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem()), "bucket/run", "sub://")
    ray_args = storage.child("ray_train").ray_storage()
    assert ray_args["storage_path"] == "bucket/run/ray_train"
    assert isinstance(ray_args["storage_filesystem"], pyarrow.fs.SubTreeFileSystem)
    storage.filesystem.create_dir("bucket/run/ray_train/stale/checkpoint_0")
    assert storage.exists("ray_train", "stale") and (tmp_path / "bucket/run/ray_train/stale").is_dir()
    storage.child("ray_train").remove("stale")
    storage.child("ray_train").remove("never-there")
    assert not (tmp_path / "bucket/run/ray_train/stale").exists()


@pytest.mark.parametrize("value", ["s4://bucket/x", UNREACHABLE_S3])
def test_the_cli_exits_2_on_a_bad_storage_and_writes_nothing(tmp_path: Path, value: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    """A scheme pyarrow does not know fails the suite check; a bucket it cannot reach (here: nothing listens
    on the endpoint) fails when the driver opens the storage, still before anything is written."""
    code = main([str(SMOKE), "--out", str(tmp_path), "--set", f"output.storage={value}"])
    assert code == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "output.storage" in error
    assert ("unknown storage scheme" if value.startswith("s4") else "cannot open it") in error
    assert not any(tmp_path.iterdir())


@pytest.mark.ray
def test_a_final_run_checkpoints_through_a_non_local_filesystem(tmp_path: Path) -> None:
    """Ray Train gets the filesystem object, pickled to its workers: checkpoints land under the subtree's
    root (where a local-path assumption would never put them), and the metrics come back through it."""
    from harness import cluster
    from harness.final_runs import Workers, fit_final
    from harness.jobs import RunSpec

    suite = load_suite(SMOKE, ["methods=[{name: erm}]", "benchmarks[0].budget={epochs: 2}"])
    spec = RunSpec(benchmark=suite.benchmarks[0], method=suite.methods[0], seed=0, metrics=("accuracy",))
    root = tmp_path / "bucket-root"
    root.mkdir()
    storage = Storage(pyarrow.fs.SubTreeFileSystem(str(root), pyarrow.fs.LocalFileSystem()), "scratch", "sub://")
    storage.filesystem.create_dir("scratch/ray_train/run-s0/stale-attempt")  # an earlier attempt: removed first
    cluster.connect(num_cpus=2)
    try:
        metrics = fit_final(spec, None, storage=storage.child("ray_train"), name="run-s0", workers=Workers(),
                            checkpoint_every=1)
    finally:
        cluster.shutdown()
    assert 0.5 < metrics["test/accuracy"] <= 1.0 and metrics["world_size"] == 1
    run = root / "scratch" / "ray_train" / "run-s0"
    checkpoints = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint_"))
    assert checkpoints, sorted(p.name for p in run.iterdir())  # engine state after epoch 1, and the metrics
    assert not (run / "stale-attempt").exists()
    assert any((run / name / "metrics.json").exists() for name in checkpoints)
    assert local_storage(tmp_path).exists("bucket-root", "scratch", "ray_train", "run-s0")
