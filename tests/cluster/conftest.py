"""
Fixtures for the cluster black-box suite: real redis-server processes (one
standalone server and a 3-master Redis Cluster, each started once per run;
every test keeps to a key prefix of its own), a factory of Starling nodes
sharing one store (each with its own port, node id and log file; kill -9,
SIGTERM and restart on the same port), paho-mqtt clients whose helpers wait
on events with timeouts, and readers of the per-node $SYS figures.

A test fails when a node log holds a sanitizer report, or when a node exited
on its own or not with status 0 after SIGTERM; the logs of every node are
attached to a failed test's report.
"""
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest

REPO = Path(__file__).resolve().parents[2]

HOST = "127.0.0.1"
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")
REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN", "redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI_BIN", "redis-cli")
PROBE = b"__probe__"
SYS_INTERVAL = 1
HEARTBEAT = 1.0  # seconds between a node's heartbeats (cluster.c)


def starling_bin():
    return Path(os.environ.get("STARLING_BIN", REPO / "build" / "starling"))


def pytest_report_header(config):
    return f"starling: {starling_bin()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for n in getattr(item, "_nodes", []):
        rep.sections.append((f"node {n.node_id} log {n.log_path}",
                             n.log_tail()))


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def child_env():
    """The environment of a node: no STARLING_* variable of the runner."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("STARLING_")}


def wait_until(pred, timeout, what, step=0.05):
    """Poll pred() until it is true; AssertionError naming `what` after
    the deadline. Returns pred()'s value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        time.sleep(step)


# ---------------------------------------------------------------- redis

class RedisError(Exception):
    """An error reply from a Redis server."""


def _resp_encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError(f"bad RESP line {line!r}")


def redis_cmd(port, *args, timeout=2.0):
    """One command to the server on HOST:port; the decoded reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        f = s.makefile("rb")
        s.sendall(_resp_encode(args))
        return _resp_read(f)


def free_port_pair(avoid=()):
    """A port p with p and p + 10000 (a Redis Cluster bus) both free."""
    while True:
        p = random.randint(20000, 45000)
        if p in avoid or p + 10000 in avoid or p - 10000 in avoid:
            continue
        ok = True
        for q in (p, p + 10000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((HOST, q))
                except OSError:
                    ok = False
        if ok:
            return p


class RedisServer:
    """One redis-server on a loopback port with its own directory."""

    def __init__(self, workdir, port=None, cluster=False, appendonly=False):
        self.port = port or free_port_pair()
        self.dir = Path(workdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.appendonly = appendonly
        self.proc = None

    @property
    def log_path(self):
        return self.dir / "redis.log"

    def argv(self):
        argv = [REDIS_SERVER, "--bind", HOST, "--port", str(self.port),
                "--save", "", "--dir", str(self.dir),
                "--logfile", str(self.log_path), "--daemonize", "no"]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.cluster:
            argv += ["--cluster-enabled", "yes", "--cluster-node-timeout",
                     "2000", "--cluster-config-file",
                     str(self.dir / "nodes.conf")]
        return argv

    def start(self, timeout=10.0):
        assert self.proc is None
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.cmd("PING", timeout=0.5) == "PONG":
                    return self
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not "
                           f"start:\n{self.log_tail()}")

    def cmd(self, *args, timeout=2.0):
        return redis_cmd(self.port, *args, timeout=timeout)

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self, timeout=10.0):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, lines=50):
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class RedisCluster:
    """A Redis Cluster of n masters (no replicas) on loopback ports."""

    def __init__(self, workdir, n=3, appendonly=False):
        ports = []
        while len(ports) < n:
            ports.append(free_port_pair(avoid=set(ports)))
        self.nodes = [RedisServer(workdir, p, cluster=True,
                                  appendonly=appendonly) for p in ports]

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def start(self, timeout=20.0):
        for n in self.nodes:
            n.start()
        r = subprocess.run(
            [REDIS_CLI, "--cluster", "create",
             *[f"{HOST}:{p}" for p in self.ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n"
                               f"{r.stdout}\n{r.stderr}")

        def all_ok():
            try:
                return all(b"cluster_state:ok" in n.cmd("CLUSTER", "INFO")
                           for n in self.nodes)
            except (OSError, ConnectionError, RedisError):
                return False
        wait_until(all_ok, timeout, "redis cluster_state:ok")
        return self

    def restart(self, node, timeout=20.0):
        """Start a killed master again (its AOF and nodes.conf are on
        disk) and wait until the cluster is ok again."""
        node.start(timeout)

        def all_ok():
            try:
                return all(b"cluster_state:ok" in n.cmd("CLUSTER", "INFO")
                           for n in self.nodes)
            except (OSError, ConnectionError, RedisError):
                return False
        wait_until(all_ok, timeout, "redis cluster_state:ok after restart")

    def stop(self):
        for n in self.nodes:
            n.stop()


def kvrocks_bin():
    """$KVROCKS_BIN, else kvrocks on PATH, else ../shared/kvrocks/kvrocks
    from the project root; None when none exists."""
    env = os.environ.get("KVROCKS_BIN")
    if env:
        return env
    found = shutil.which("kvrocks")
    if found:
        return found
    shared = REPO.parent / "shared" / "kvrocks" / "kvrocks"
    return str(shared) if shared.exists() else None


class KvrocksServer:
    """One Apache Kvrocks on a loopback port; its data (RocksDB) stays in
    its directory across a kill and a restart."""

    def __init__(self, workdir, port=None, cluster=False):
        self.port = port or free_port_pair()
        self.dir = Path(workdir) / f"kvrocks-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.proc = None

    @property
    def log_path(self):
        return self.dir / "stdout.log"

    def argv(self):
        argv = [kvrocks_bin(), "--bind", HOST, "--port", str(self.port),
                "--dir", str(self.dir / "data"), "--log-dir",
                str(self.dir), "--workers", "2"]
        if self.cluster:
            argv += ["--cluster-enabled", "yes"]
        return argv

    def start(self, timeout=20.0):
        assert self.proc is None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.cmd("PING", timeout=0.5) == "PONG":
                    return self
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"kvrocks on port {self.port} did not start:\n"
                           f"{self.log_tail()}")

    cmd = RedisServer.cmd
    kill = RedisServer.kill
    stop = RedisServer.stop
    log_tail = RedisServer.log_tail


class KvrocksCluster:
    """n Kvrocks masters laid out with CLUSTERX SETNODEID/SETNODES (Kvrocks
    has no gossip: every node is told the whole layout), slots split in
    equal ranges as redis-cli --cluster create does."""

    def __init__(self, workdir, n=3):
        ports = []
        while len(ports) < n:
            ports.append(free_port_pair(avoid=set(ports)))
        self.nodes = [KvrocksServer(workdir, p, cluster=True) for p in ports]
        self.ids = [f"kvrockstestnode{p:025d}" for p in ports]
        self.version = 0

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def layout(self):
        n = len(self.nodes)
        lines = []
        for i, (node, nid) in enumerate(zip(self.nodes, self.ids)):
            lo, hi = 16384 * i // n, 16384 * (i + 1) // n - 1
            lines.append(f"{nid} {HOST} {node.port} master - {lo}-{hi}")
        return "\n".join(lines)

    def apply(self, node):
        node.cmd("CLUSTERX", "SETNODEID", self.ids[self.nodes.index(node)])
        node.cmd("CLUSTERX", "SETNODES", self.layout(), self.version)

    def start(self, timeout=20.0):
        for n in self.nodes:
            n.start(timeout)
        self.version = 1
        for n in self.nodes:
            self.apply(n)
        return self

    def restart(self, node, timeout=20.0):
        """Start a killed node again (its data is on disk; the layout is
        kept in its nodes.conf, set again in case it was not saved)."""
        node.start(timeout)
        self.apply(node)

    def stop(self):
        for n in self.nodes:
            n.stop()


def need_kvrocks():
    if kvrocks_bin() is None:
        pytest.skip("no Kvrocks binary ($KVROCKS_BIN, PATH, "
                    "../shared/kvrocks/kvrocks)")


def _need_redis():
    for b in (REDIS_SERVER, REDIS_CLI):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed")


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory):
    """A redis-server shared by the whole run (tests keep apart by key
    prefix)."""
    _need_redis()
    r = RedisServer(tmp_path_factory.mktemp("redis-solo")).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-master Redis Cluster shared by the whole run."""
    _need_redis()
    c = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield c
    c.stop()


def store_prefix():
    return f"c{uuid.uuid4().hex[:10]}:"


def store_ports(url):
    """(ports of the store's servers, key prefix) of a store URL."""
    m = re.match(r"redis(?:\+cluster)?://([^?]*)\?prefix=([^&]*)", url)
    assert m, url
    return [int(hp.rsplit(":", 1)[1]) for hp in m.group(1).split(",")], \
        m.group(2)


def redis_any(ports, *args):
    """A one-key command on whichever server of `ports` owns the key
    (follows one -MOVED redirection)."""
    try:
        return redis_cmd(ports[0], *args)
    except RedisError as e:
        m = re.match(r"MOVED \d+ [^:]+:(\d+)", str(e))
        if not m:
            raise
        return redis_cmd(int(m.group(1)), *args)


def standalone_url(server, prefix=None):
    return f"redis://{HOST}:{server.port}?prefix={prefix or store_prefix()}"


def cluster_url(cluster, prefix=None):
    seeds = ",".join(f"{HOST}:{p}" for p in cluster.ports)
    return f"redis+cluster://{seeds}?prefix={prefix or store_prefix()}"


@pytest.fixture(params=["redis", "redis-cluster"])
def store(request):
    """The store URL of a test, once per store kind: a standalone
    redis-server and a 3-master Redis Cluster (fresh key prefix)."""
    if request.param == "redis":
        return standalone_url(request.getfixturevalue("redis_standalone"))
    return cluster_url(request.getfixturevalue("redis_cluster"))


@pytest.fixture
def redis_private(tmp_path):
    """make(appendonly=False) -> a started redis-server of this test alone
    (for tests that stop and restart the store); killed at teardown."""
    _need_redis()
    made = []

    def make(appendonly=False):
        r = RedisServer(tmp_path, appendonly=appendonly)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.kill()


@pytest.fixture
def store_cluster_private(tmp_path):
    """make(kind) -> a started 3-master store cluster of this test alone,
    kind "redis-cluster" (AOF, fsync always) or "kvrocks-cluster" (RocksDB),
    whose masters can be killed and restarted with their data; stopped at
    teardown."""
    made = []

    def make(kind):
        if kind == "redis-cluster":
            _need_redis()
            c = RedisCluster(tmp_path / kind, appendonly=True)
        else:
            need_kvrocks()
            c = KvrocksCluster(tmp_path / kind)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        for n in c.nodes:
            n.kill()


# ---------------------------------------------------------------- nodes

_help_cache = {}


def starling_help():
    key = str(starling_bin())
    if key not in _help_cache:
        r = subprocess.run([key, "--help"], capture_output=True, text=True,
                           timeout=10, env=child_env())
        _help_cache[key] = r.stdout + r.stderr
    return _help_cache[key]


class Node:
    """One Starling process of a cluster: a node id, a port kept across
    restarts, a log file appended to by every incarnation."""

    def __init__(self, node_id, store, log_path, workdir, keys):
        self.node_id = node_id
        self.store = store
        self.keys = dict(keys)
        self.log_path = Path(log_path)
        self.workdir = Path(workdir)
        self.port = None
        self.proc = None
        self._termed = False
        self.problems = []
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")

    def argv(self):
        keys = {"bind": HOST, "log_level": "info",
                "sys_interval": SYS_INTERVAL}
        if "http_port" in starling_help():
            keys["http_port"] = 0
        keys.update(self.keys)
        keys.update(port=self.port, store=self.store, node_id=self.node_id)
        argv = [str(starling_bin())]
        for k, v in keys.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            argv += [f"--{k}", str(v)]
        return argv

    def start(self, timeout=10.0):
        """Start on a free port the first time, on the same port after."""
        assert self.proc is None, f"node {self.node_id} already running"
        fixed = self.port is not None
        self._termed = False
        for attempt in range(10):
            if not fixed:
                self.port = free_port()
            argv = self.argv()
            with open(self.log_path, "ab") as log:
                log.write(f"### {' '.join(argv)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=child_env(),
                    cwd=self.workdir)
            if self.wait_ready(timeout):
                return self
            self.proc.poll()
            if self.proc.returncode is not None and re.search(
                    r"(?i)address already in use", self.log_text()):
                self.proc = None
                time.sleep(0.2 * (attempt + 1))
                continue
            break
        raise RuntimeError(f"node {self.node_id} did not start on "
                           f"{HOST}:{self.port}:\n{self.log_tail()}")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """kill -9: a crash."""
        if self.proc is not None:
            if self.proc.poll() is not None:
                self.problems.append(f"exited on its own (status "
                                     f"{self.proc.returncode})")
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._note("killed with SIGKILL")

    def terminate(self):
        """Send SIGTERM without waiting (stop() waits)."""
        if self.proc is not None and not self._termed:
            if self.proc.poll() is not None:
                self.problems.append(f"exited on its own during the test "
                                     f"(status {self.proc.returncode})")
            self._termed = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; anything abnormal goes to self.problems."""
        if self.proc is None:
            return
        self.terminate()
        proc, self.proc = self.proc, None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.problems.append(f"ignored SIGTERM for {timeout} s")
            return
        if rc != 0:
            self.problems.append(f"exited with status {rc} after SIGTERM")

    def restart(self, timeout=10.0):
        return self.start(timeout)

    def _note(self, text):
        with open(self.log_path, "ab") as log:
            log.write(f"### test: {text}\n".encode())

    def check(self):
        found = list(self.problems)
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                found.append(f"sanitizer report in the log ({m!r})")
        return found

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        return len(self.log_text())

    def log_tail(self, lines=150):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, pattern, timeout=10.0, since=0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text()[since:])
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.05)

    def __repr__(self):
        return f"<Node {self.node_id} :{self.port}>"


def safe_name(nodeid):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-120:]


class StarlingCluster:
    """N nodes on one store, plus the $SYS readers of each."""

    def __init__(self, nodes, watches):
        self.nodes = nodes
        self._watches = watches

    def __getitem__(self, i):
        return self.nodes[i]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def sys(self, node):
        """The $SYS reader of a running node (made again after a
        restart)."""
        w = self._watches.get(node.node_id)
        if w is None or w.port != node.port or w.lost():
            if w is not None:
                w.close()
            w = SysWatch(node)
            self._watches[node.node_id] = w
        return w

    def wait_formed(self, timeout=15.0, peers=False):
        """Every running node listens on the bus (the store counts one
        subscriber of the broadcast channel per running node, summed over
        the servers of a Redis Cluster) and, with `peers`, knows every
        other: all are registered in the store's node table and one
        heartbeat period (1 s, when each node reads that table) has passed
        since."""
        live = sum(1 for n in self.nodes if n.alive())
        ports, prefix = store_ports(self.nodes[0].store)
        chan = f"{prefix}bus:{{bus}}:all"

        def count():
            total = 0
            for p in ports:
                try:
                    r = redis_cmd(p, "PUBSUB", "NUMSUB", chan)
                except (OSError, ConnectionError, RedisError):
                    return False
                total += int(r[1])
            return total == live
        wait_until(count, timeout, f"{live} nodes subscribed to {chan}")
        if not peers:
            return
        key = f"{prefix}nodes"

        def registered():
            try:
                return redis_any(ports, "HLEN", key) >= live
            except (OSError, ConnectionError, RedisError):
                return False
        wait_until(registered, timeout, f"{live} nodes in {key}")
        time.sleep(HEARTBEAT + 0.1)  # time must pass: the next heartbeat

    def wait_nodes(self, node, count, timeout=15.0):
        """Wait until `node` counts `count` live nodes (itself included)."""
        self.sys(node).wait_value("cluster/nodes", lambda v: v == count,
                                  timeout)


@pytest.fixture
def cluster_factory(request, tmp_path):
    """make(store, n=3, formed=True, peers=False, **keys) ->
    StarlingCluster of n running nodes (ids n1, n2, ...) on `store` with
    the extra config `keys`; formed: every node listens on the bus; peers:
    and knows every other node (see wait_formed; costs a heartbeat period).
    Every node is stopped with SIGTERM and checked at teardown."""
    logdir = os.environ.get("STARLING_TEST_LOGDIR")
    base = (Path(logdir) / safe_name(request.node.nodeid) if logdir
            else tmp_path / "logs")
    all_nodes = []
    watches = {}
    request.node._nodes = all_nodes

    def make(store, n=3, formed=True, peers=False, **keys):
        k = len(all_nodes)
        nodes = []
        for i in range(n):
            nid = f"n{k + i + 1}"
            nodes.append(Node(nid, store, base / f"{nid}.log", tmp_path,
                              keys))
        all_nodes.extend(nodes)
        for node in nodes:
            node.start()
        c = StarlingCluster(nodes, watches)
        if formed:
            c.wait_formed(peers=peers)
        return c

    yield make
    for w in watches.values():
        w.close()
    problems = []
    for node in all_nodes:  # SIGTERM to all first, then wait for each
        node.terminate()
    for node in all_nodes:
        node.stop()
        problems += [f"node {node.node_id}: {p} (log {node.log_path})"
                     for p in node.check()]
    if problems:
        pytest.fail("node problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def cluster3(cluster_factory, store):
    """Three nodes on the test's store, all listening on the bus."""
    return cluster_factory(store)


# ---------------------------------------------------------------- paho

PROTOCOLS = {"311": paho.MQTTv311, "5": paho.MQTTv5}


class Msg:
    """A received message, copied out of paho's callback."""

    def __init__(self, m):
        self.topic = m.topic
        self.payload = bytes(m.payload)
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.dup = bool(m.dup)
        self.mid = m.mid

    def __repr__(self):
        return (f"<Msg {self.topic!r} {self.payload[:40]!r} qos={self.qos}"
                f"{' retain' if self.retain else ''}"
                f"{' dup' if self.dup else ''}>")


def connect_props(expiry):
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = expiry
    return p


class Client:
    """A paho client on its own network thread, with blocking helpers that
    wait for the broker's replies with timeouts. Messages whose payload
    starts with PROBE go to .probes, the others to .messages."""

    _n = 0

    def __init__(self, port, client_id=None, protocol="311",
                 clean_session=True, manual_ack=False):
        Client._n += 1
        self.client_id = client_id or f"c{Client._n}-{uuid.uuid4().hex[:8]}"
        self.port = port
        self.protocol = protocol
        kw = {} if protocol == "5" else {"clean_session": clean_session}
        self.paho = paho.Client(CallbackAPIVersion.VERSION2,
                                client_id=self.client_id,
                                protocol=PROTOCOLS[protocol],
                                reconnect_on_failure=False,
                                manual_ack=manual_ack, **kw)
        self.messages = queue.Queue()
        self.probes = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self.session_present = None
        self._acks = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        p = self.paho
        p.on_connect = self._on_connect
        p.on_disconnect = self._on_disconnect
        p.on_message = self._on_message
        p.on_subscribe = lambda c, u, mid, codes, pr: self._ack(
            "sub", mid, [rc.value for rc in codes])
        p.on_unsubscribe = lambda c, u, mid, codes, pr: self._ack(
            "unsub", mid, codes)
        p.on_publish = lambda c, u, mid, reason, pr: self._ack(
            "pub", mid, reason)

    # network thread
    def _on_connect(self, c, u, flags, reason, props):
        self.connacks.put((reason.value, bool(flags.session_present)))

    def _on_disconnect(self, c, u, flags, reason, props):
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_message(self, c, u, m):
        msg = Msg(m)
        (self.probes if msg.payload.startswith(PROBE)
         else self.messages).put(msg)

    def _ack(self, kind, mid, result):
        with self._cond:
            self._acks[(kind, mid)] = result
            self._cond.notify_all()

    def _run(self):
        while not self._stop.is_set():
            rc = self.paho.loop(timeout=0.05)
            if rc != paho.MQTT_ERR_SUCCESS:
                self._stop.wait(0.05)

    def _wait_ack(self, kind, mid, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while (kind, mid) not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.client_id}: no {kind} ack "
                                       f"for mid {mid} within {timeout} s")
                self._cond.wait(left)
            return self._acks.pop((kind, mid))

    # test thread
    def will_set(self, topic, payload, qos=0, retain=False, delay=None):
        """`delay`: v5 Will Delay Interval in seconds."""
        props = None
        if delay is not None:
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = delay
        self.paho.will_set(topic, payload, qos, retain, properties=props)

    def connect(self, port=None, expiry=None, clean_start=True, keepalive=60,
                timeout=10.0, expect_rc=0):
        """Connect (to `port`, default the one given at creation) and wait
        for the CONNACK; returns (rc, session_present). v5: `expiry` is the
        Session Expiry Interval, `clean_start` the Clean Start flag."""
        self.port = port or self.port
        kw = {}
        if self.protocol == "5":
            kw["clean_start"] = clean_start
            if expiry is not None:
                kw["properties"] = connect_props(expiry)
        self.disconnected.clear()
        self.paho.connect(HOST, self.port, keepalive=keepalive, **kw)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"paho-{self.client_id}")
            self._thread.start()
        try:
            rc, sp = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no CONNACK for {self.client_id} on port "
                               f"{self.port}") from None
        if expect_rc is not None:
            assert rc == expect_rc, f"CONNACK {rc}, expected {expect_rc}"
        self.session_present = sp
        return rc, sp

    def subscribe(self, topic, qos=0, timeout=10.0):
        if isinstance(topic, str):
            rc, mid = self.paho.subscribe(topic, qos)
        else:
            rc, mid = self.paho.subscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe: {rc}"
        return self._wait_ack("sub", mid, timeout)

    def unsubscribe(self, topic, timeout=10.0):
        rc, mid = self.paho.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS, f"unsubscribe: {rc}"
        return self._wait_ack("unsub", mid, timeout)

    def publish(self, topic, payload=b"", qos=0, retain=False, wait=True,
                timeout=10.0):
        """PUBLISH; with wait, block until PUBACK / PUBCOMP (QoS 0: until
        written). Returns paho's reason for the ack (or the info)."""
        info = self.paho.publish(topic, payload, qos, retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish: {info.rc}"
        if wait:
            return self._wait_ack("pub", info.mid, timeout)
        return info

    def ack(self, mid, qos):
        self.paho.ack(mid, qos)

    def expect_message(self, timeout=10.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id} on :{self.port}: no "
                                 f"message within {timeout} s") from None

    def expect_messages(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id} on :{self.port}: got {len(out)} of "
                    f"{n} messages within {timeout} s: {out!r}") from None
        return out

    def expect_no_message(self, timeout=0.5):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m!r}")

    def drain(self):
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout=10.0):
        return self.disconnected.wait(timeout)

    def disconnect(self, timeout=10.0):
        """Clean DISCONNECT, wait for the close, stop the thread."""
        if self._thread is not None and not self.disconnected.is_set():
            self.paho.disconnect()
            self.disconnected.wait(timeout)
        self._halt()

    def abort(self):
        """Drop the TCP connection without DISCONNECT."""
        self._halt()
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _halt(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self):
        self._halt()
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def client_factory():
    """make(node_or_port, client_id=None, protocol="311",
    clean_session=True, connect=True, expiry=None, will=None, **kw) ->
    Client, closed at teardown."""
    made = []

    def make(on, client_id=None, protocol="311", clean_session=True,
             connect=True, expiry=None, clean_start=True, will=None, **kw):
        port = on if isinstance(on, int) else on.port
        c = Client(port, client_id, protocol, clean_session, **kw)
        made.append(c)
        if will is not None:
            c.will_set(*will)
        if connect:
            c.connect(expiry=expiry, clean_start=clean_start)
        return c

    yield make
    for c in made:
        c._stop.set()
    for c in made:
        c.close()


def unique(prefix="t"):
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def topic():
    return unique()


def wait_route(pub, sub, topic, timeout=15.0, qos=0):
    """Publish probes on `topic` through `pub` until `sub` receives one:
    the route (or, at QoS >= 1, the persistent subscription index) is known
    where `pub` is connected. Probes received are discarded."""
    deadline = time.monotonic() + timeout
    tag = PROBE + uuid.uuid4().hex.encode()
    while time.monotonic() < deadline:
        pub.publish(topic, tag, qos=qos)
        end = min(time.monotonic() + 0.3, deadline)
        while time.monotonic() < end:
            try:
                m = sub.probes.get(timeout=max(end - time.monotonic(),
                                               0.001))
            except queue.Empty:
                break
            if m.payload == tag:
                time.sleep(0.1)  # let later probes of this round arrive
                while not sub.probes.empty():
                    sub.probes.get_nowait()
                return
    raise AssertionError(f"no route: {sub.client_id} on :{sub.port} got no "
                         f"probe on {topic!r} published on :{pub.port} "
                         f"within {timeout} s")


# ---------------------------------------------------------------- $SYS

class SysWatch:
    """The latest $SYS/broker/nodes/<id>/... figures of one node, read by
    a client subscribed on that node."""

    def __init__(self, node):
        self.node = node
        self.port = node.port
        self.prefix = f"$SYS/broker/nodes/{node.node_id}/"
        self.values = {}  # name -> (value, monotonic time received)
        self._cond = threading.Condition()
        self.client = Client(node.port, f"sys-{node.node_id}-"
                             f"{uuid.uuid4().hex[:6]}")
        self.client.paho.on_message = self._on_message
        self.client.connect()
        self.client.subscribe(self.prefix + "#", 0)

    def _on_message(self, c, u, m):
        if not m.topic.startswith(self.prefix):
            return
        name = m.topic[len(self.prefix):]
        try:
            v = int(m.payload)
        except ValueError:
            v = m.payload.decode(errors="replace")
        with self._cond:
            self.values[name] = (v, time.monotonic())
            self._cond.notify_all()

    def lost(self):
        return self.client.disconnected.is_set()

    def wait_value(self, name, pred, timeout=10.0, after=None):
        """Wait for a value of `name` (received after monotonic time
        `after`, when given) that satisfies pred; returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self.values.get(name)
                if got and (after is None or got[1] > after) and \
                        pred(got[0]):
                    return got[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"node {self.node.node_id}: {name} = "
                        f"{got[0] if got else None}, still not as wanted "
                        f"after {timeout} s")
                self._cond.wait(left)

    def latest(self, name, timeout=5.0):
        """The last value of `name` received (waits for the first)."""
        return self.wait_value(name, lambda v: True, timeout)

    def fresh(self, name, timeout=5.0):
        """The first value of `name` published after this call."""
        return self.wait_value(name, lambda v: True, timeout,
                               after=time.monotonic())

    def close(self):
        self.client.close()
