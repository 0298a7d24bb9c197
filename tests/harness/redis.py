"""
The store side of the tests: a minimal RESP client, redis-server and Apache
Kvrocks processes on loopback ports (standalone, or clusters of masters
whose members can be killed and restarted with their data), and the store
URLs Starling takes.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from harness import HOST, REPO
from harness.ports import free_port_pair
from harness.wait import poll, wait_until

REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN", "redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI_BIN", "redis-cli")


# ---------------------------------------------------------------- RESP

class RedisError(Exception):
    """An error reply (-ERR ...) from a Redis server."""


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


def redis_cmd(port, *args, password=None, timeout=2.0):
    """One command to the Redis server on HOST:port; the decoded reply
    (str, int, bytes, list or None; RedisError for an error reply)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        f = s.makefile("rb")
        if password:
            s.sendall(_resp_encode(["AUTH", password]))
            _resp_read(f)
        s.sendall(_resp_encode(args))
        return _resp_read(f)


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


# ---------------------------------------------------------------- servers

def need_redis():
    """Skip the test when redis-server or redis-cli is missing."""
    for b in (REDIS_SERVER, REDIS_CLI):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed")


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


def need_kvrocks():
    """Skip the test when there is no Kvrocks binary."""
    if kvrocks_bin() is None:
        pytest.skip("no Kvrocks binary ($KVROCKS_BIN, PATH, "
                    "../shared/kvrocks/kvrocks)")


class RespServer:
    """A server speaking RESP on a loopback port, with a directory of its
    own (kept across a kill and a restart on the same port, so a restarted
    server finds its data). Subclasses say how to run it."""

    kind = "server"
    log_name = "server.log"

    def __init__(self, workdir, port=None, cluster=False):
        self.port = port or free_port_pair()
        self.dir = Path(workdir) / f"{self.kind}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.password = None
        self.proc = None

    @property
    def log_path(self):
        return self.dir / self.log_name

    def argv(self):
        raise NotImplementedError

    def _spawn(self):
        """Start the process (its output goes to the log or nowhere)."""
        raise NotImplementedError

    def start(self, timeout=10.0):
        """Start the process and wait until it answers PING."""
        assert self.proc is None
        self.proc = self._spawn()

        def pong():
            if self.proc.poll() is not None:
                return True  # dead: stop waiting
            try:
                return self.cmd("PING", timeout=0.5) == "PONG"
            except (OSError, ConnectionError, RedisError):
                return False
        if poll(pong, timeout, step=0.02) and self.proc.poll() is None:
            return self
        self.kill()
        raise RuntimeError(f"{self.kind} on port {self.port} did not "
                           f"start:\n{self.log_tail()}")

    def cmd(self, *args, timeout=2.0):
        return redis_cmd(self.port, *args, password=self.password,
                         timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL (a crash of the store). A paused server dies without
        running again: requests it had not read yet are lost."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self, timeout=10.0):
        """SIGTERM (a paused server is resumed first) and wait; SIGKILL
        after `timeout`."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self):
        """SIGSTOP: the server keeps its connections but answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines=50):
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class RedisServer(RespServer):
    """One redis-server process (standalone, or a member of a Redis
    Cluster). With appendonly, every write is on disk before the reply, so
    a kill -9 loses nothing and a restart reloads it."""

    kind = "redis"
    log_name = "redis.log"

    def __init__(self, workdir, port=None, cluster=False, appendonly=False,
                 password=None):
        super().__init__(workdir, port, cluster)
        self.appendonly = appendonly
        self.password = password

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
        if self.password:
            argv += ["--requirepass", self.password,
                     "--masterauth", self.password]
        return argv

    def _spawn(self):
        return subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, cwd=self.dir)


class KvrocksServer(RespServer):
    """One Apache Kvrocks; its data (RocksDB) stays in its directory across
    a kill and a restart."""

    kind = "kvrocks"
    log_name = "stdout.log"

    def argv(self):
        argv = [kvrocks_bin(), "--bind", HOST, "--port", str(self.port),
                "--dir", str(self.dir / "data"), "--log-dir",
                str(self.dir), "--workers", "2"]
        if self.cluster:
            argv += ["--cluster-enabled", "yes"]
        return argv

    def _spawn(self):
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.dir)

    def start(self, timeout=20.0):
        return super().start(timeout)


def _cluster_ports(n):
    """n ports for cluster members, each with its bus port (+10000) free
    and clear of the others'."""
    ports = []
    while len(ports) < n:
        ports.append(free_port_pair(avoid=set(ports)))
    return ports


class RedisCluster:
    """A Redis Cluster of n masters (no replicas) on loopback ports."""

    def __init__(self, workdir, n=3, appendonly=False):
        self.nodes = [RedisServer(workdir, p, cluster=True,
                                  appendonly=appendonly)
                      for p in _cluster_ports(n)]

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def _all_ok(self):
        try:
            return all(b"cluster_state:ok" in n.cmd("CLUSTER", "INFO")
                       for n in self.nodes)
        except (OSError, ConnectionError, RedisError):
            return False

    def start(self, timeout=20.0):
        """Start the masters, join them (redis-cli --cluster create) and
        wait until every one reports cluster_state:ok."""
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
        if not poll(self._all_ok, timeout):
            self.stop()
            raise RuntimeError("redis cluster did not reach cluster_state:ok")
        return self

    def restart(self, node, timeout=20.0):
        """Start a killed master again (its AOF and nodes.conf are on
        disk) and wait until the cluster is ok again."""
        node.start(timeout)
        wait_until(self._all_ok, timeout,
                   "redis cluster_state:ok after restart")

    def stop(self):
        for n in self.nodes:
            n.stop()


class KvrocksCluster:
    """n Kvrocks masters laid out with CLUSTERX SETNODEID/SETNODES (Kvrocks
    has no gossip: every node is told the whole layout), slots split in
    equal ranges as redis-cli --cluster create does."""

    def __init__(self, workdir, n=3):
        ports = _cluster_ports(n)
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


# ---------------------------------------------------------------- URLs

def store_prefix():
    """A key prefix no other test shares."""
    return f"t{uuid.uuid4().hex[:10]}:"


def _query(prefix, opts):
    opts = {"prefix": prefix or store_prefix(), **opts}
    return "&".join(f"{k}={v}" for k, v in opts.items())


def redis_url(server, prefix=None, **opts):
    """The store URL of a standalone server, under a fresh key prefix
    unless `prefix` is given; `opts` are further query keys."""
    return f"redis://{HOST}:{server.port}?{_query(prefix, opts)}"


def redis_cluster_url(cluster, prefix=None, seeds=None, **opts):
    """The store URL of a cluster (Redis or Kvrocks): its first `seeds`
    members (all by default) as seeds, a fresh key prefix unless `prefix`
    is given; `opts` are further query keys."""
    hosts = ",".join(f"{HOST}:{p}" for p in cluster.ports[:seeds])
    return f"redis+cluster://{hosts}?{_query(prefix, opts)}"


def store_ports(url):
    """(ports of the servers named in a store URL, its key prefix)."""
    m = re.match(r"redis(?:\+cluster)?://([^?]*)\?prefix=([^&]*)", url)
    assert m, url
    return [int(hp.rsplit(":", 1)[1]) for hp in m.group(1).split(",")], \
        m.group(2)


# For a test using the store_url fixture of tests/integration (directly or
# through a broker fixture built on it) that only makes sense on the
# backends outliving the broker process.
durable_only = pytest.mark.parametrize(
    "store_url", ["redis", "redis-cluster"], indirect=True)
