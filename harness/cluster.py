"""Connecting to Ray (a local runtime or a running cluster) and running plain tasks on it.

Ray Tune lives in `harness.tuning` and Ray Train in `harness.final_runs`; this module holds the
rest of what the driver asks of Ray: start-up, resources, and the teacher-training task.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.plugins import PLUGINS_ENV
from harness.provenance import node_id

QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_TRAIN_V2_ENABLED": "1",
    # Ray Train's controller polls workers this often; each report waits for a poll (2 s by default).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster as the driver found it at connect: concurrency is sized from these totals, once."""

    address: str
    cpus: float
    gpus: float
    nodes: int

    def slots(self, cpus: float, gpus: float = 0.0) -> int:
        """How many units of work needing `cpus` CPUs and `gpus` GPUs each fit at once (at least 1)."""
        return slots(self.cpus, self.gpus, cpus, gpus)

    def shortfall(self, cpus: float, gpus: float = 0.0) -> str | None:
        """Why one unit needing `cpus` / `gpus` can never be placed here, or None when it fits."""
        if gpus > 0 and self.gpus < gpus:
            return f"needs {gpus:g} GPU(s) but the cluster has {self.gpus:g}"
        if cpus > self.cpus:
            return f"needs {cpus:g} CPUs but the cluster has {self.cpus:g}"
        return None


def slots(cluster_cpus: float, cluster_gpus: float, cpus: float, gpus: float = 0.0) -> int:
    """Units of (`cpus`, `gpus`) that fit in (`cluster_cpus`, `cluster_gpus`): the scarcer resource decides.

    A unit that needs no CPU (a trial that only drives Ray Train workers) is limited by its GPUs alone.
    The small epsilon keeps 3 x 0.1 GPU from counting as 2.
    """
    limits = [int(cluster_cpus / cpus + 1e-9)] if cpus > 0 else []
    if gpus > 0:
        limits.append(int(cluster_gpus / gpus + 1e-9))
    return max(1, min(limits)) if limits else 1


def connect(address: str | None = None, *, verbose: bool = False, num_cpus: int | None = None) -> ClusterInfo:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start Ray on this machine."""
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {}
        if address is None:  # a new local instance: its workers inherit this environment (set above)
            kwargs.update(include_dashboard=False, num_cpus=num_cpus)
        else:  # a running cluster's workers do not; a job-wide runtime_env would also keep a local instance
            # from using the workers it prestarts, so every trial actor and Train worker waited for a new one
            kwargs.update(runtime_env={"env_vars": worker_env()})
        ray.init(address=address, log_to_driver=verbose, configure_logging=True,
                 logging_level=logging.INFO if verbose else logging.ERROR, **kwargs)
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return ClusterInfo(address=ray.get_runtime_context().gcs_address, cpus=float(resources.get("CPU", 1)),
                       gpus=float(resources.get("GPU", 0)), nodes=nodes)


def worker_env() -> dict[str, str]:
    """Environment every Ray worker gets: quiet logs, the Train poll interval, and unpackaged plugins."""

    env = {key: os.environ[key] for key in QUIET_ENV}
    for key in (PLUGINS_ENV, "HARNESS_DATA_DIR", "HARNESS_OFFLINE"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def submit_teacher(bench: Any, phase: str, seed: int, split_seed: int, cpus: float, gpus: float = 0.0,
                   data: Any = None) -> Any:
    """Train a teacher as a Ray task; returns ObjectRefs (weights, metrics), so students can wait on the weights.

    It holds one final-run worker's share (`cpus`, `gpus`): with a GPU it trains there (`pick_device`).
    `data` is the phase's `harness.data.shared.SplitHandles` (None: the task reads the files).
    """
    import ray

    from harness.jobs import train_teacher

    task = ray.remote(num_cpus=cpus, num_gpus=gpus, num_returns=2, max_retries=0)(_teacher_task)
    return task.remote(train_teacher, bench, phase, seed, split_seed, max(1, int(cpus)), data)


def _teacher_task(fn: Any, bench: Any, phase: str, seed: int, split_seed: int, threads: int, data: Any) -> Any:
    state, metrics = fn(bench, phase, seed, split_seed, threads, data)
    metrics["node_id"] = node_id()
    metrics["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return state, metrics
