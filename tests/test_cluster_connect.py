"""`cluster.connect` without a cluster: what it asks `ray.init` for, on a local start and on joining one.

A local instance's workers inherit the driver's environment, and a job-wide runtime_env would keep the
workers Ray prestarts from being used (every trial actor and Train worker would wait for a fresh process),
so only a running cluster gets the environment as a runtime_env."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest
import ray

from harness import cluster
from harness.plugins import PLUGINS_ENV


@pytest.fixture
def ray_init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(gcs_address="127.0.0.1:1"))
    for key in (*cluster.QUIET_ENV, "RAY_ADDRESS", PLUGINS_ENV):
        monkeypatch.delenv(key, raising=False)  # restored after the test, whatever connect sets
    monkeypatch.setenv(PLUGINS_ENV, "tests.toy_method")
    return calls


def test_a_local_start_passes_no_runtime_env_and_sets_the_environment_its_workers_inherit(
        ray_init_calls: list[dict[str, Any]]) -> None:
    info = cluster.connect(num_cpus=2)
    (kwargs,) = ray_init_calls
    assert kwargs["address"] is None and kwargs["include_dashboard"] is False and kwargs["num_cpus"] == 2
    assert "runtime_env" not in kwargs
    assert all(os.environ[key] == value for key, value in cluster.QUIET_ENV.items())
    assert info.cpus == 2.0 and info.nodes == 1


def test_joining_a_cluster_sends_the_workers_environment(ray_init_calls: list[dict[str, Any]]) -> None:
    cluster.connect("10.0.0.1:6379")
    (kwargs,) = ray_init_calls
    assert kwargs["address"] == "10.0.0.1:6379" and "num_cpus" not in kwargs
    env = kwargs["runtime_env"]["env_vars"]
    assert env == cluster.worker_env() and env[PLUGINS_ENV] == "tests.toy_method"
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == cluster.QUIET_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
