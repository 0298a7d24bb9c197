"""
Fixtures for the end-to-end suite: the docker-compose deployment of a
Starling cluster (docker-compose.yml at the repository root) under the
project name starling-e2e.

The `cluster` fixture (one per session) builds the debian:bookworm-slim base
image when it is missing (deploy/base-image.sh), runs
`compose up -d --build --scale broker=3`, waits until every node is healthy,
serves behind the load balancer and sees the others, then yields a
`Cluster`; at the end it saves the containers' logs and runs `compose down
-v`. The tests reach the cluster only through the load balancer's ports,
published on 127.0.0.1 (free ports picked by Docker).

Environment: STARLING_E2E_KEEP=1 leaves the deployment running;
STARLING_TEST_LOGDIR is where compose.log goes (default
build/test-logs/e2e).
"""
import os
import queue
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = "starling-e2e"
SYS_INTERVAL = 2
HOST = "127.0.0.1"


def wait_for(pred, timeout, what, interval=0.2):
    """Poll pred() until it returns a true value (returned) or fail; `what`
    may be a function, called for the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            if callable(what):
                what = what()
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


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
    r = subprocess.run(["docker", *args], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class Cluster:
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
    def client(self, client_id, **kw):
        c = Client(client_id, HOST, self.mqtt_port, **kw)
        self.clients.append(c)
        return c

    def sys_cluster_nodes(self, seconds):
        """{node id: cluster/nodes} from the live (not retained) $SYS updates
        heard during `seconds`."""
        c = Client(f"e2e-sys-{time.monotonic_ns()}", HOST, self.mqtt_port)
        try:
            c.connect()
            c.subscribe("$SYS/broker/nodes/+/cluster/nodes", 0)
            seen = {}
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                m = c.get(timeout=max(0.05, end - time.monotonic()),
                          fail=False)
                if m is not None and not m.retain:
                    seen[m.topic.split("/")[3]] = int(m.payload)
            return seen
        finally:
            c.close()

    def wait_formed(self, n, timeout, at_least=False):
        """Every running broker healthy, n of them UP in the load balancer,
        and each of them counting n live nodes in $SYS (with at_least: n or
        more)."""
        wait_for(lambda: len(self.brokers()) == n and all(
            self.health(c) == "running healthy" for c in self.brokers()),
            timeout, f"{n} healthy broker containers")
        wait_for(lambda: self.lb_up() == n, timeout,
                 f"{n} brokers UP in the load balancer")
        hosts = {self.node_id_of(c) for c in self.brokers()}
        last = {}

        def formed():
            seen = self.sys_cluster_nodes(SYS_INTERVAL + 1.5)
            last.clear()
            last.update({k: v for k, v in seen.items()
                         if k.split("-")[0] in hosts})
            return len(last) == n and all(
                v == n or (at_least and v > n) for v in last.values())
        wait_for(formed, timeout,
                 lambda: f"every node to count {n} live nodes in $SYS "
                 f"(last heard, node: cluster/nodes: {last})", interval=0)

    def close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []


class Msg:
    def __init__(self, m):
        self.topic = m.topic
        self.payload = m.payload
        self.qos = m.qos
        self.retain = bool(m.retain)


class Client:
    """paho-mqtt 2.1 client with a message queue and bounded waits. With
    reconnect=True the network thread reconnects by itself (1-2 s delay)."""

    def __init__(self, client_id, host, port, v5=False, clean=True,
                 session_expiry=0, reconnect=False):
        self.id = client_id
        self.host, self.port = host, port
        self.v5, self.clean = v5, clean
        self.session_expiry = session_expiry
        self.reconnect = reconnect
        self.q = queue.Queue()
        self.connects = []          # session_present of each CONNACK
        self.disconnects = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else clean,
            reconnect_on_failure=reconnect)
        self.c.reconnect_delay_set(1, 2)
        self.c.max_inflight_messages_set(100)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda c, u, m: self.q.put(Msg(m))
        self.started = False

    def _on_connect(self, c, u, flags, rc, props):
        with self.cond:
            if not rc.is_failure:
                self.connects.append(bool(flags.session_present))
            self.cond.notify_all()

    def _on_disconnect(self, c, u, flags, rc, props):
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()

    def wait(self, pred, timeout, what):
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self), timeout):
                pytest.fail(f"{self.id}: timed out after {timeout}s waiting "
                            f"for {what}")

    def connect(self, timeout=15):
        kw = {}
        if self.v5:
            from paho.mqtt.properties import Properties
            from paho.mqtt.packettypes import PacketTypes
            p = Properties(PacketTypes.CONNECT)
            p.SessionExpiryInterval = self.session_expiry
            kw = dict(clean_start=self.clean, properties=p)
        n = len(self.connects)
        self.c.connect(self.host, self.port, keepalive=10, **kw)
        self.c.loop_start()
        self.started = True
        self.wait(lambda s: len(s.connects) > n, timeout, "CONNACK")
        return self

    def subscribe(self, topic, qos=1, timeout=10):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        if not done.wait(timeout):
            pytest.fail(f"{self.id}: no SUBACK for {topic}")

    def publish(self, topic, payload, qos=1, retain=False, timeout=10):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"{self.id}: no PUBACK"
        return info

    def get(self, timeout=10, fail=True):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            if fail:
                pytest.fail(f"{self.id}: no message within {timeout}s")
            return None

    def close(self):
        if self.started:
            try:
                self.c.disconnect()
            except Exception:
                pass
            self.c.loop_stop()
            self.started = False


def log_dir():
    d = Path(os.environ.get("STARLING_TEST_LOGDIR",
                            REPO / "build" / "test-logs" / "e2e"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def cluster():
    if subprocess.run(["docker", "info"], capture_output=True,
                      timeout=60).returncode != 0:
        pytest.skip("docker is not usable here")
    cl = Cluster()
    cl.clients = []
    t0 = time.monotonic()
    subprocess.run([str(REPO / "deploy" / "base-image.sh")], check=True,
                   timeout=900)
    cl.compose("down", "-v", "--remove-orphans", timeout=180, check=False)
    try:
        cl.compose("up", "-d", "--build", "--scale", "broker=3",
                   timeout=1200)
        cl.mqtt_port = cl.published("lb", 1883)
        cl.stats_port = cl.published("lb", 8404)
        print(f"\ne2e: images built and up in {time.monotonic() - t0:.0f}s; "
              f"MQTT on {HOST}:{cl.mqtt_port}")
        cl.wait_formed(3, timeout=120)
        print(f"e2e: cluster of 3 formed after {time.monotonic() - t0:.0f}s")
        yield cl
    finally:
        cl.close_clients()
        try:
            (log_dir() / "compose.log").write_text(
                cl.compose("logs", "--no-color", "-t", timeout=120,
                           check=False))
        except Exception as e:  # logs are a courtesy, never the failure
            print(f"e2e: could not save logs: {e}")
        if os.environ.get("STARLING_E2E_KEEP") == "1":
            print(f"e2e: left running (project {PROJECT})")
        else:
            cl.compose("down", "-v", "--remove-orphans", timeout=300,
                       check=False)


@pytest.fixture
def clients(cluster):
    yield cluster
    cluster.close_clients()
