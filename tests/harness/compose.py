"""
The docker-compose deployment of a Starling cluster (docker-compose.yml at
the repository root) under the project name starling-e2e, seen from the
host: the broker containers, the HAProxy load balancer in front of them and
MQTT clients that reach the cluster through it only.
"""
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from harness import HOST, REPO
from harness.client import ClusterClient
from harness.sysinfo import live_values
from harness.wait import wait_until

PROJECT = "starling-e2e"
SYS_INTERVAL = 2


def compose_command():
    """`docker compose` (v2 plugin) when it works, else `docker-compose`."""
    try:
        if subprocess.run(["docker", "compose", "version"],
                          capture_output=True, timeout=30).returncode == 0:
            return ["docker", "compose"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor docker-compose is installed")


def docker(*args, timeout=60, check=True):
    """Run `docker args...`; its output (RuntimeError on failure, with
    check)."""
    r = subprocess.run(["docker", *args], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def log_dir():
    """Where the deployment's logs are saved: $STARLING_TEST_LOGDIR, else
    build/test-logs/e2e."""
    d = Path(os.environ.get("STARLING_TEST_LOGDIR",
                            REPO / "build" / "test-logs" / "e2e"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class ComposeCluster:
    """The running deployment, seen from the host."""

    def __init__(self):
        self.compose_cmd = compose_command()
        self.env = dict(os.environ,
                        MQTT_BIND=HOST, MQTT_PORT="",
                        STATS_BIND=HOST, STATS_PORT="",
                        SYS_INTERVAL=str(SYS_INTERVAL),
                        COMPOSE_PROJECT_NAME=PROJECT)
        self.mqtt_port = None
        self.stats_port = None
        self.clients = []

    # --- compose and docker ------------------------------------------------
    def compose(self, *args, timeout=120, check=True):
        cmd = [*self.compose_cmd, "-p", PROJECT,
               "-f", str(REPO / "docker-compose.yml"), *args]
        r = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r.stdout

    def published(self, service, port):
        out = self.compose("port", service, str(port)).strip()
        host, _, p = out.rpartition(":")
        assert host == HOST, f"{service}:{port} published on {out!r}"
        return int(p)

    def brokers(self, running_only=True):
        """IDs (full) of the broker containers, oldest first."""
        args = ["ps", "-q", "--no-trunc",
                "--filter", f"label=com.docker.compose.project={PROJECT}",
                "--filter", "label=com.docker.compose.service=broker"]
        if not running_only:
            args.insert(1, "-a")
        ids = docker(*args).split()
        if not ids:
            return []
        lines = docker("inspect", "-f", "{{.Created}} {{.Id}}", *ids)
        return [line.split()[1] for line in sorted(lines.splitlines())]

    @staticmethod
    def health(cid):
        out = docker("inspect", "-f",
                     "{{.State.Status}} {{if .State.Health}}"
                     "{{.State.Health.Status}}{{end}}", cid, check=False)
        return out.strip()

    @staticmethod
    def node_id_of(cid):
        """A node names itself <hostname>-<pid>-<n>; the hostname is the
        short container id."""
        return docker("inspect", "-f", "{{.Config.Hostname}}", cid).strip()

    @staticmethod
    def logs(cid):
        r = subprocess.run(["docker", "logs", cid], capture_output=True,
                           text=True, timeout=30)
        return r.stdout + r.stderr

    def container_of(self, client_id):
        """The broker container whose most recent log line says client_id
        connected, or None."""
        best = None
        for cid in self.brokers(running_only=False):
            for line in self.logs(cid).splitlines():
                if f"client '{client_id}' " in line and " connected (" in line:
                    stamp = line.split(" ", 1)[0]
                    if best is None or stamp > best[0]:
                        best = (stamp, cid)
        return best[1] if best else None

    # --- load balancer -----------------------------------------------------
    def lb_servers(self):
        """{server name: status} of the brokers backend, from HAProxy's CSV
        statistics."""
        url = f"http://{HOST}:{self.stats_port}/stats;csv"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            f = line.split(",")
            if len(f) > 17 and f[0] == "brokers" and f[1] != "BACKEND":
                out[f[1]] = f[17]
        return out

    def lb_up(self):
        return sum(1 for s in self.lb_servers().values() if s == "UP")

    # --- MQTT ----------------------------------------------------------------
    def client(self, client_id, v5=False, clean=True, session_expiry=0,
               reconnect=False):
        """A client (waits of 10 s) connected through the load balancer
        (keep alive 10 s, 100 messages in flight), closed by
        close_clients(). v5: Clean Start `clean` and Session Expiry Interval
        `session_expiry`; else Clean Session `clean`. With reconnect it
        connects again by itself (see Client) after losing its node."""
        c = ClusterClient(self.mqtt_port, client_id, "5" if v5 else "311",
                   clean_session=clean, reconnect=reconnect)
        c.paho.max_inflight_messages_set(100)
        self.clients.append(c)
        c.connect(keepalive=10, timeout=15, clean_start=clean,
                  expiry=session_expiry if v5 else None)
        return c

    def sys_cluster_nodes(self, seconds):
        """{node id: cluster/nodes} from the live (not retained) $SYS updates
        heard during `seconds`."""
        c = ClusterClient(self.mqtt_port, f"e2e-sys-{time.monotonic_ns()}")
        try:
            c.connect(timeout=15)
            heard = live_values(c, "$SYS/broker/nodes/+/cluster/nodes",
                                seconds)
            return {t.split("/")[3]: v for t, v in heard.items()}
        finally:
            c.close()

    def wait_formed(self, n, timeout, at_least=False):
        """Every running broker healthy, n of them UP in the load balancer,
        and each of them counting n live nodes in $SYS (with at_least: n or
        more)."""
        wait_until(lambda: len(self.brokers()) == n and all(
            self.health(c) == "running healthy" for c in self.brokers()),
            timeout, f"{n} healthy broker containers", step=0.2)
        wait_until(lambda: self.lb_up() == n, timeout,
                   f"{n} brokers UP in the load balancer", step=0.2)
        hosts = {self.node_id_of(c) for c in self.brokers()}
        last = {}

        def formed():
            seen = self.sys_cluster_nodes(SYS_INTERVAL + 1.5)
            last.clear()
            last.update({k: v for k, v in seen.items()
                         if k.split("-")[0] in hosts})
            return len(last) == n and all(
                v == n or (at_least and v > n) for v in last.values())
        wait_until(formed, timeout,
                   lambda: f"every node to count {n} live nodes in $SYS "
                   f"(last heard, node: cluster/nodes: {last})", step=0)

    def close_clients(self):
        """Disconnect every client made by client() (DISCONNECT, then
        close)."""
        for c in self.clients:
            c.disconnect()
            c.close()
        self.clients = []
