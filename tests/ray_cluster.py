"""A throw-away two-node Ray cluster on this machine with token authentication, for tests.

Each node is a `ray start ... --block` process in its own session, with its own free ports and a
temp dir of its own (never /tmp/ray, whose `ray_current_cluster` file would make every other
`ray.init()` on the machine join this cluster). Tear-down kills exactly the processes this
module started (the two process groups and everything they spawned) and checks that none is left.

Ray 2.60 rewrites a loopback node or GCS address (`--node-ip-address=127.0.0.1`, `--address=127.0.0.1:P`,
`ray.init(address="127.0.0.1:P")`) to the machine's primary address (`resolve_ip_for_localhost`), so
nodes register and connect under that address; the kernel still routes it through `lo`. The dashboard,
which the tests talk to over HTTP, stays bound to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# Anything that would point a client at another cluster, or at another token.
FOREIGN_VARS = ("RAY_ADDRESS", *AUTH_VARS)
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")
NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (all sockets held until every port is picked).

    Checked on every interface: Ray binds its GCS and raylets to all of them, whatever the node address.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]


def client_env(token: str | None, home: Path | None = None) -> dict[str, str]:
    """This process's environment without any Ray address or token, plus `token` (token auth) if given.

    `home` replaces $HOME, so that a default token file (~/.ray/auth_token) cannot stand in for a
    missing one.
    """
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN_VARS}
    if token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    if home is not None:
        env["HOME"] = str(home)
    return env


@dataclass
class Node:
    node_id: str
    is_head: bool
    cpus: float


@dataclass
class LocalCluster:
    """Addresses, token and processes of a running test cluster."""

    temp_dir: Path
    log_dir: Path
    token: str
    gcs_port: int
    dashboard_port: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """The environment of a client holding the cluster's token."""
        return client_env(self.token)

    def node_ids(self) -> set[str]:
        return {node.node_id for node in self.nodes}


def _node_args(ports: dict[str, int], temp_dir: Path, cpus: int) -> list[str]:
    args = [f"--{name}={port}" for name, port in ports.items()]
    return [*args, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
            f"--temp-dir={temp_dir}", "--object-store-memory=200000000", "--disable-usage-stats", "--block"]


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_terminate_with_parent)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _alive_nodes(cluster: LocalCluster) -> list[Node]:
    """The cluster's live nodes, from the dashboard's state API (what `ray list nodes` reads)."""
    request = urllib.request.Request(f"{cluster.dashboard_url}/api/v0/nodes?detail=true&limit=100",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        nodes = json.loads(response.read())["data"]["result"]["result"]
    return [Node(node_id=n["node_id"], is_head=n["is_head_node"], cpus=n["resources_total"].get("CPU", 0))
            for n in nodes if n["state"] == "ALIVE"]


def _wait_for_nodes(cluster: LocalCluster, count: int, timeout: float) -> list[Node]:
    deadline, alive = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        for process in cluster.processes:
            if process.poll() is not None:
                raise RuntimeError(f"`{' '.join(map(str, process.args[:3]))}` exited with {process.returncode}; "
                                   f"see the logs in {cluster.log_dir}")
        try:
            alive = _alive_nodes(cluster)
        except (OSError, KeyError, ValueError):  # the dashboard's state API is still starting
            alive = []
        if len(alive) >= count:
            return alive
        time.sleep(1)
    raise TimeoutError(f"{len(alive)} of {count} nodes alive after {timeout:.0f} s; see the logs in {cluster.log_dir}")


@contextlib.contextmanager
def local_cluster(log_dir: Path, *, nodes: int = 2, cpus_per_node: int = 1, timeout: float = 240,
                  node_env: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """Start a head and `nodes - 1` worker nodes with token auth on this machine; always tear them down.

    `node_env` is added to the nodes' environment, which their Ray workers inherit."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    head_ports = dict(zip(HEAD_PORTS + NODE_PORTS, free_ports(len(HEAD_PORTS) + len(NODE_PORTS)), strict=True))
    cluster = LocalCluster(temp_dir=temp_dir, log_dir=log_dir, token=secrets.token_hex(32),
                           gcs_port=head_ports["port"], dashboard_port=head_ports["dashboard-port"])
    # a SIGTERMed `ray start --block` drains its node for up to 30 s first; a test cluster has nothing to drain
    env = {**cluster.env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           **(node_env or {})}
    try:
        head_log = log_dir / "ray-head.log"
        cluster.processes.append(_spawn(
            [RAY, "start", "--head", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             *_node_args(head_ports, temp_dir, cpus_per_node)], env, head_log))
        _wait_for_port(cluster.dashboard_port, cluster.processes[0], head_log, timeout)
        for index in range(1, nodes):
            ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS)), strict=True))
            cluster.processes.append(_spawn(
                [RAY, "start", f"--address={cluster.address}", *_node_args(ports, temp_dir, cpus_per_node)],
                env, log_dir / f"ray-worker-{index}.log"))
        cluster.nodes = _wait_for_nodes(cluster, nodes, timeout)
        yield cluster
    finally:
        stop_cluster(cluster)


# ---------------------------------------------------------------- tear-down


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], fields[19]


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(roots: list[int]) -> dict[int, str]:
    """Every live process under `roots` (roots included), as pid -> start time (to survive pid reuse)."""
    parents: dict[int, int] = {}
    starts: dict[int, str] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None and stat[1] != "Z":
            parents[pid], starts[pid] = stat[0], stat[2]
    found = {pid for pid in roots if pid in starts}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return {pid: starts[pid] for pid in found}


def _mentions(temp_dir: Path) -> set[int]:
    """Live processes whose command line names the cluster's temp dir (raylet, GCS, dashboard, agents)."""
    needle = str(temp_dir).encode()
    found = set()
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes() and (_stat(pid) or (0, "Z"))[1] != "Z":
                found.add(pid)
    return found


def survivors(started: dict[int, str], temp_dir: Path) -> set[int]:
    alive = {pid for pid, start in started.items() if (stat := _stat(pid)) and stat[1] != "Z" and stat[2] == start}
    return alive | (_mentions(temp_dir) - {os.getpid()})


def stop_cluster(cluster: LocalCluster, grace: float = 30) -> None:
    """SIGTERM the nodes' process groups (workers first), SIGKILL what is left, check nothing remains."""
    started = descendants([process.pid for process in cluster.processes])
    started.update({pid: stat[2] for pid in _mentions(cluster.temp_dir) if (stat := _stat(pid))})
    for process in reversed(cluster.processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in cluster.processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    while survivors(started, cluster.temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    for process in cluster.processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for pid in survivors(started, cluster.temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for process in cluster.processes:
        process.wait(timeout=30)
    time.sleep(1)
    left = survivors(started, cluster.temp_dir)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    if left:
        raise RuntimeError(f"Ray processes of the test cluster survived its tear-down: {sorted(left)}")
