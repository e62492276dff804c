"""Provenance stamped on every row: code version, library versions, hardware, node."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "torchvision", "ray", "optuna", "numpy", "pyarrow", "pydantic", "plotly")


@functools.cache
def git_commit(path: str | None = None) -> str:
    """The checked-out commit (with '+dirty' when the tree has changes), or 'unknown'."""
    cwd = path or str(Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("HARNESS_GIT_COMMIT", "unknown")
    return commit + ("+dirty" if dirty else "")


@functools.cache
def library_versions() -> str:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return json.dumps(versions, sort_keys=True)


def hardware() -> str:
    """CPU model, core count and accelerator of the process that ran the work."""
    import torch

    info = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return json.dumps(info, sort_keys=True)


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def node_id() -> str:
    """The Ray node this process runs on, or the hostname outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        pass
    return platform.node()
