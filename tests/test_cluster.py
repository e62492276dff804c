"""The harness on a real two-node Ray cluster with token authentication (two raylets on this machine).

`python -m harness.run --address` spreads trials and final runs over both nodes; a client without
the cluster's token is refused, promptly and saying why; a suite submitted with `ray job submit`
runs on the head node and stores its results under its `--out` directory; and a suite whose data
files only the driver can read runs on both nodes, every job mapping its splits from Ray's object store.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.data import DATASETS
from harness.plugins import PLUGINS_ENV
from harness.store import read_results
from harness.suite import load_suite
from tests.driver_env import DRIVER_ENV
from tests.ray_cluster import RAY, LocalCluster, client_env, local_cluster

pytestmark = pytest.mark.ray

# Where the work runs is what these tests are about: final runs evaluate test accuracy only.
QUICK = ("evaluation.metrics=[accuracy]",)
TWO_METHODS = ("methods=[{name: erm}, {name: label_smoothing}]", "tuning.trials=2", "final.seeds=[0,1]", *QUICK)
ONE_METHOD = ("methods=[{name: erm}]", "tuning.trials=1", "final.seeds=[0]", *QUICK)
DRIVER_DATA = ("benchmarks[0].dataset=driver_digits", "methods=[{name: erm}]", "tuning.trials=2",
               "final.seeds=[0,1]", *QUICK)
REFUSED = "Authentication token is missing or incorrect"
JOB_DONE = ("SUCCEEDED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A head and a worker node, one CPU each, token auth on; torn down (and checked) after the module.
    Their workers import this repository's test plugins (tests/ on the path), as the driver does."""
    pythonpath = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))
    with local_cluster(tmp_path_factory.mktemp("ray-cluster-logs"), nodes=2, cpus_per_node=1,
                       node_env={"PYTHONPATH": pythonpath}) as running:
        assert len(running.nodes) == 2 and all(node.cpus == 1 for node in running.nodes)
        assert sorted(node.is_head for node in running.nodes) == [False, True]
        yield running


def suite_command(repo_root: Path, out: Path, overrides: tuple[str, ...], *extra: str) -> list[str]:
    args = [sys.executable, "-m", "harness.run", str(repo_root / "suites" / "smoke.yaml"), "--out", str(out),
            "--no-dashboard", *extra]
    for override in overrides:
        args += ["--set", override]
    return args


def run_dir(repo_root: Path, out: Path, overrides: tuple[str, ...]) -> Path:
    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    return out / suite.name / suite.hash


def test_a_suite_run_with_address_uses_both_nodes(cluster: LocalCluster, repo_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(suite_command(repo_root, tmp_path, TWO_METHODS, "--address", cluster.address),
                          cwd=repo_root, env=cluster.env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ray: 2 node(s), 2 CPUs" in proc.stderr

    rows = read_results(run_dir(repo_root, tmp_path, TWO_METHODS))
    tune, final = rows[rows["phase"] == "tune"], rows[rows["phase"] == "final"]
    assert len(tune) == 4 and len(final) == 4 and (rows["status"] == "ok").all()
    assert set(rows["node_id"]) <= cluster.node_ids()  # every row names the Ray node that did the work
    # two final runs hold one CPU each at a time, and each node has one CPU: they run on different nodes
    assert set(final["node_id"]) == cluster.node_ids()
    assert set(tune["node_id"]) | set(final["node_id"]) == cluster.node_ids()


@pytest.fixture
def driver_digits() -> Iterator[None]:
    """`driver_digits` registered in this process for one test (the run directory's hash needs the suite
    to load here), and gone after it, so no other test sees it in the dataset registry."""
    from tests import driver_only_dataset  # importing it registers the dataset

    DATASETS.add("driver_digits", driver_only_dataset.DATASET)  # again, if an earlier test removed it
    yield
    DATASETS._entries.pop("driver_digits", None)


@pytest.mark.usefixtures("driver_digits")
def test_nodes_without_the_data_files_run_a_suite_on_splits_from_the_object_store(cluster: LocalCluster,
                                                                                 repo_root: Path, tmp_path: Path) -> None:
    # the driver alone can read driver_digits; every Ray worker, on either node, is refused its files
    env = {**cluster.env(), PLUGINS_ENV: "tests.driver_only_dataset", DRIVER_ENV: "1"}
    proc = subprocess.run(suite_command(repo_root, tmp_path, DRIVER_DATA, "--address", cluster.address),
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    run = run_dir(repo_root, tmp_path, DRIVER_DATA)
    rows = read_results(run)
    assert len(rows) == 4 and (rows["status"] == "ok").all(), rows[["row_id", "error"]]
    assert set(rows.loc[rows["phase"] == "final", "node_id"]) == cluster.node_ids()  # both nodes ran a final run
    for row in rows.to_dict("records"):
        reads = json.loads(row["data_files_read"])["reads"]
        assert all("file" not in read for read in reads), (row["row_id"], reads)  # no job opened a data file
        expected = ["driver_digits:train"] + (["driver_digits:test"] if row["phase"] == "final" else [])
        assert [read["object"] for read in reads] == expected, row["row_id"]
    verified = subprocess.run([sys.executable, "-m", "harness.verify", str(run)], cwd=repo_root, env=env,
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout[-3000:]
    assert "got the same bytes (driver_digits:test, driver_digits:train)" in verified.stdout


def test_a_suite_run_without_the_token_is_refused(cluster: LocalCluster, repo_root: Path, tmp_path: Path) -> None:
    env = client_env(None, home=tmp_path / "home")  # and no ~/.ray/auth_token to fall back on
    started = time.monotonic()
    proc = subprocess.run(suite_command(repo_root, tmp_path / "out", ONE_METHOD, "--address", cluster.address),
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]  # a clear error, no traceback, nothing written
    assert "error: cannot connect to" in proc.stderr and REFUSED in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 240  # Ray retries for about 20 s, then gives up: no hang
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("token", [None, "0" * 64], ids=["no-token", "wrong-token"])
def test_a_job_submission_without_the_right_token_is_refused(cluster: LocalCluster, tmp_path: Path,
                                                             token: str | None) -> None:
    proc = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard_url, "--no-wait", "--", "true"],
                          env=client_env(token, home=tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    expected = "Missing authentication token" if token is None else "Invalid authentication token"
    assert expected in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


def job_api(cluster: LocalCluster, path: str) -> dict:
    """GET the dashboard's job REST API with the cluster's token, as `ray job status/logs` do."""
    request = urllib.request.Request(f"{cluster.dashboard_url}/api/jobs/{path}",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for_job(cluster: LocalCluster, submission_id: str, timeout: float) -> str:
    deadline, status = time.monotonic() + timeout, "unknown"
    while time.monotonic() < deadline:
        status = job_api(cluster, submission_id)["status"]
        if status in JOB_DONE:
            return status
        time.sleep(2)
    subprocess.run([RAY, "job", "stop", "--address", cluster.dashboard_url, submission_id], env=cluster.env(),
                   capture_output=True, timeout=120)
    raise TimeoutError(f"job {submission_id} still {status} after {timeout:.0f} s")


def test_a_suite_submitted_as_a_ray_job_stores_its_results(cluster: LocalCluster, repo_root: Path,
                                                           tmp_path: Path) -> None:
    # The job runs on the head node, in this venv: the entrypoint names its python and the suite by
    # absolute path, so nothing is uploaded (no --working-dir) and the job takes no CPU of its own.
    submission_id = f"smoke-{secrets.token_hex(4)}"
    submit = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard_url, "--submission-id",
                             submission_id, "--entrypoint-num-cpus", "0", "--no-wait", "--",
                             *suite_command(repo_root, tmp_path, ONE_METHOD)],
                            env=cluster.env(), capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]

    status = wait_for_job(cluster, submission_id, timeout=600)
    logs = job_api(cluster, f"{submission_id}/logs")["logs"]
    assert status == "SUCCEEDED", logs[-4000:]
    assert "ray: 2 node(s), 2 CPUs" in logs and "ranked by test/accuracy" in logs

    rows = read_results(run_dir(repo_root, tmp_path, ONE_METHOD))
    assert sorted(rows["row_id"]) == ["final:holdout:digits:erm:s0", "tune:holdout:digits:erm:0000"]
    assert (rows["status"] == "ok").all() and set(rows["node_id"]) <= cluster.node_ids()
    assert rows.loc[rows["phase"] == "final", "test/accuracy"].between(0.5, 1.0).all()
