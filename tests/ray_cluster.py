"""Real local Ray clusters for tests.

`LocalCluster`: started and driven the way users do it: `ray start --head` on loopback with
token authentication, and `ray job submit` / `logs` / `stop` through the `ray` command line;
a job's status from the dashboard's job REST API, which the command line asks too.

`MultiNodeCluster`: a head and two worker nodes on loopback, each its own raylet with a custom
resource of its name, through Ray's own `ray.cluster_utils.Cluster` (`ray start --address`
cannot add a second node on loopback in Ray 2.60); a worker node can be killed midway and
added again."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

from tests.conftest import REPO

VENV_BIN = os.path.dirname(sys.executable)
# Token authentication on (clients that name an address must say so), and kept on loopback
# (otherwise Ray swaps 127.0.0.1 for the machine's routable address). The token is this test
# session's own: `ray start --head` refuses token mode without one, and a fresh machine has no
# ~/.ray/auth_token (the tests never write to the user's).
LOOPBACK_NODES = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOOPBACK = {**LOOPBACK_NODES, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def clean_env(**extra) -> dict:
    """This process's environment without Ray or torch.distributed settings (in-process
    training leaves RANK/MASTER_PORT behind), with the venv first on PATH so a job's
    `python` is ours, and the repository importable."""
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in drop}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO)
    return {**env, **LOOPBACK, **extra}


class LocalCluster:
    """`with LocalCluster(num_cpus=2) as c: c.submit(...)`; stopped (forcefully) on exit."""

    def __init__(self, num_cpus: int = 2):
        self.num_cpus = num_cpus
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        # Short: Ray puts unix sockets under it (path length limit).
        self.temp_dir = f"/tmp/ray-test-{self.port}"

    def ray(self, *args, timeout=120, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([os.path.join(VENV_BIN, "ray"), *args], env=clean_env(),
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} exited {proc.returncode}:\n"
                               f"{proc.stdout}\n{proc.stderr}")
        return proc

    def __enter__(self) -> "LocalCluster":
        # The dashboard agent's port is fixed (52365) by default: with any other Ray on the
        # machine holding it, this cluster's agent never serves and every job submission
        # fails with "No available agent to submit job".
        self.ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                 f"--num-cpus={self.num_cpus}", f"--dashboard-port={self.dashboard_port}",
                 f"--dashboard-agent-listen-port={free_port()}",
                 "--include-dashboard=true", "--disable-usage-stats",
                 f"--temp-dir={self.temp_dir}")
        return self

    def __exit__(self, *exc) -> None:
        """Kill this cluster's processes only (`ray stop` would stop every Ray on the
        machine): those naming its temp dir or address, and all their descendants."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 5
            while pids and time.time() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def processes(self) -> list[int]:
        parents, roots = {}, set()
        marks = (self.temp_dir.encode(), f"--address={self.address}".encode())
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if any(m in cmdline for m in marks):
                roots.add(int(entry))
        found, grew = set(roots), True
        while grew:
            children = {p for p, parent in parents.items() if parent in found} - found
            found |= children
            grew = bool(children)
        found.discard(os.getpid())
        return sorted(found)

    def submit(self, *entrypoint: str, runtime_env: dict | None = None,
               working_dir=REPO) -> str:
        """`ray job submit --no-wait`; returns the job's submission id."""
        job_id = f"test-{uuid.uuid4().hex[:10]}"
        args = ["job", "submit", "--no-wait", "--address", self.dashboard, "--submission-id",
                job_id, "--working-dir", str(working_dir)]
        if runtime_env:
            args += ["--runtime-env-json", json.dumps(runtime_env)]
        self.ray(*args, "--", *entrypoint)
        return job_id

    def status(self, job_id: str) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, from the dashboard's job REST API
        (what `ray job status` and the job SDK ask): polled every half second while a job
        runs, a process per question would take a core of a 2-core machine from the job."""
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/{job_id}", headers={
            "Authorization": f"Bearer {LOOPBACK['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["status"]

    def logs(self, job_id: str) -> str:
        return self.ray("job", "logs", "--address", self.dashboard, job_id).stdout

    def stop(self, job_id: str) -> None:
        self.ray("job", "stop", "--address", self.dashboard, job_id, check=False)

    def wait(self, job_id: str, timeout: float = 600) -> tuple[str, str]:
        """(final status, logs) of a job."""
        deadline = time.time() + timeout
        while (status := self.status(job_id)) not in FINAL:
            if time.time() > deadline:
                self.stop(job_id)
                raise TimeoutError(f"job {job_id} not finished after {timeout} s:\n"
                                   f"{self.logs(job_id)}")
            time.sleep(0.5)
        return status, self.logs(job_id)

    def run(self, *entrypoint: str, timeout: float = 600, **kw) -> tuple[str, str]:
        return self.wait(self.submit(*entrypoint, **kw), timeout)


class MultiNodeCluster:
    """`with MultiNodeCluster() as c:` a head with no CPUs (it only coordinates, as on a real
    cluster's head) and worker nodes `node_a` and `node_b`, 1 CPU each. Drivers join with
    `--ray-address c.address`. Only this cluster's processes are stopped on exit."""

    WORKERS = ("node_a", "node_b")

    def __enter__(self) -> "MultiNodeCluster":
        from ray.cluster_utils import Cluster

        os.environ.update(LOOPBACK_NODES)
        # The head's GCS declares a node dead after 3 failed health checks 1 s apart (Ray's
        # default: 5, 3 s apart), so a test that kills a node waits seconds, not 15 s, for
        # the cluster to notice. A check fails on a refused connection at once, or after
        # health_check_timeout_ms (10 s) on a stalled raylet: a busy machine is not a kill.
        head = {**self._args(0, "head"), "_system_config": {
            "health_check_period_ms": 1000, "health_check_failure_threshold": 3}}
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.nodes = {}
        for name in self.WORKERS:
            self.add(name)
        return self

    @staticmethod
    def _args(num_cpus: int, name: str) -> dict:
        # The address is explicit: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it
        # is first imported, and a test process that imported Ray before would otherwise put
        # the nodes on the machine's routable address. Every node's dashboard agent needs its
        # own port (the default, 52365, is one per machine: a second agent on it never serves).
        return {"num_cpus": num_cpus, "resources": {name: 1}, "include_dashboard": False,
                "node_ip_address": "127.0.0.1", "dashboard_agent_listen_port": free_port()}

    @property
    def address(self) -> str:
        return self.cluster.address

    @staticmethod
    def driver_env(**extra) -> dict:
        """The environment of a driver that joins with `--ray-address`: without the variable,
        Ray resolves 127.0.0.1 to the machine's routable address and never connects."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {**env, "PYTHONPATH": str(REPO), **LOOPBACK_NODES, **extra}

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def add(self, name: str) -> None:
        self.nodes[name] = self.cluster.add_node(**self._args(1, name))
        self.cluster.wait_for_nodes()

    def kill(self, name: str) -> None:
        """A node failure: the node's raylet and workers are killed (SIGKILL)."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def __exit__(self, *exc) -> None:
        self.cluster.shutdown()
