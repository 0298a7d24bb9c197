"""
Fixtures for the black-box suite: a broker process per test on a free
loopback port, its log captured to a file, paho-mqtt clients whose helpers
wait on events with timeouts, and raw-socket clients for hand-made bytes.

The broker under test is Starling (STARLING_BIN, default build/starling).
STARLING_TEST_BROKER=mosquitto (or --broker mosquitto) runs the same tests
against Mosquitto with an equivalent generated config, to check the tests
themselves; tests marked starling_only, or that need a key Mosquitto has no
equivalent for, are skipped then.

For the store backends: real redis-server processes on free loopback ports
(a standalone server and a 3-master Redis Cluster shared by the session,
and servers of a test's own that it may kill, stall or restart), the
store_url fixture (once per backend: memory, redis, redis-cluster, each
test under a key prefix of its own), Broker.restart() (a new process on
the same port and store) and RawSession (a raw v3.1.1 / v5 client for
hand-driven QoS flows).
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
import pytest

import mqtt_raw

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:",
                     "LeakSanitizer")

# Starling keys and how Mosquitto spells them (None: same spelling).
# Keys missing here have no Mosquitto equivalent: tests using them skip.
MOSQUITTO_KEYS = {
    "max_packet_size": None,
    "max_inflight_messages": None,
    "max_queued_messages": None,
    "max_connections": None,
    "allow_zero_length_clientid": None,
    "retain_available": None,
    "max_keepalive": None,
    "max_qos": None,
    "max_topic_alias": None,
}
IGNORED_UNDER_MOSQUITTO = {"log_level"}


def pytest_addoption(parser):
    parser.addoption(
        "--broker", choices=("starling", "mosquitto"),
        default=os.environ.get("STARLING_TEST_BROKER", "starling"),
        help="broker to test (env STARLING_TEST_BROKER)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "starling_only: behaviour or keys Mosquitto does not have")
    config.addinivalue_line(
        "markers", "broker(**keys): config keys for the broker fixture")


def broker_kind(config):
    return config.getoption("--broker")


def pytest_report_header(config):
    kind = broker_kind(config)
    if kind == "mosquitto":
        return f"broker: mosquitto ({mosquitto_bin()})"
    return f"broker: starling ({starling_bin()})"


def pytest_collection_modifyitems(config, items):
    if broker_kind(config) != "mosquitto":
        return
    skip = pytest.mark.skip(reason="starling_only test (running mosquitto)")
    for item in items:
        if "starling_only" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for b in getattr(item, "_brokers", []):
        rep.sections.append((f"broker log {b.log_path}", b.log_tail()))


def starling_bin():
    return Path(os.environ.get("STARLING_BIN", REPO / "build" / "starling"))


def mosquitto_bin():
    return Path(os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto"))


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def child_env():
    """The environment for a broker: no STARLING_* variable leaks in from
    the test runner (Starling treats unknown ones as errors)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("STARLING_")}


_help_cache = {}


def starling_help(path):
    """`starling --help` text (cached), used to detect optional keys."""
    key = str(path)
    if key not in _help_cache:
        try:
            r = subprocess.run([key, "--help"], capture_output=True,
                               text=True, timeout=10, env=child_env())
            _help_cache[key] = r.stdout + r.stderr
        except OSError:
            _help_cache[key] = ""
    return _help_cache[key]


class FreePort:
    """A key value (e.g. tls_port=FreePort()): a free loopback port picked
    when the broker starts, again on each retry of a fresh start, kept on
    restart(); the port chosen is Broker.ports[key]."""


def conf_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Broker:
    """One broker process listening on a free loopback port."""

    def __init__(self, kind, keys, log_path, workdir, args=(), env=None):
        self.kind = kind
        self.keys = dict(keys)
        self.extra_args = list(args)  # e.g. ["-c", "file"] (Starling)
        self.extra_env = dict(env or {})  # e.g. STARLING_* variables
        self.log_path = Path(log_path)
        self.workdir = Path(workdir)
        self.host = HOST
        self.port = None
        self.ports = {}  # FreePort keys -> the port picked
        self.proc = None
        self.problems = []
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")

    @property
    def is_starling(self):
        return self.kind == "starling"

    @property
    def is_mosquitto(self):
        return self.kind == "mosquitto"

    # ------------------------------------------------------------ process

    def argv(self):
        if self.is_mosquitto:
            conf = self.workdir / f"mosquitto-{self.port}.conf"
            conf.write_text(self.mosquitto_conf())
            return [str(mosquitto_bin()), "-c", str(conf)]
        keys = {"bind": HOST, "log_level": "info"}
        if "http_port" in starling_help(starling_bin()):
            keys["http_port"] = 0
        keys.update(self.keys)
        keys["port"] = self.port
        argv = [str(starling_bin())] + self.extra_args
        for k, v in keys.items():
            if isinstance(v, FreePort):
                v = self.ports.setdefault(k, free_port())
            argv += [f"--{k}", conf_value(v)]
        return argv

    def mosquitto_conf(self):
        lines = [f"listener {self.port} {HOST}", "allow_anonymous true",
                 "persistence false", "log_dest stderr", "log_type all",
                 "connection_messages true"]
        for k, v in self.keys.items():
            if k in IGNORED_UNDER_MOSQUITTO:
                continue
            lines.append(f"{MOSQUITTO_KEYS[k] or k} {conf_value(v)}")
        return "\n".join(lines) + "\n"

    def start(self, timeout=10.0, port=None):
        """Start on a free port, or on `port` (a restart on the port the
        clients know; retried briefly while it is still taken)."""
        for attempt in range(5):
            self.port = port or free_port()
            if not port:
                self.ports = {}
            argv = self.argv()
            with open(self.log_path, "ab") as log:
                log.write(f"### {' '.join(argv)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**child_env(), **self.extra_env}, cwd=self.workdir)
            if self.wait_ready(timeout):
                return self
            if self.proc.poll() is not None and re.search(
                    r"(?i)address already in use", self.log_text()):
                if port:
                    time.sleep(0.2 * (attempt + 1))
                continue  # lost the port to someone else: try another
            break
        raise RuntimeError(f"{self.kind} did not start listening on "
                           f"{HOST}:{self.port}:\n{self.log_tail()}")

    def wait_ready(self, timeout):
        """Wait until the port accepts TCP connections (False if the
        process exits or the deadline passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return True
            except OSError:
                pass
            try:  # waits on the process, returning early if it dies
                self.proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                pass
        return False

    def restart(self, timeout=10.0):
        """Start a new process with the same keys on the same port (after
        stop() or kill())."""
        assert self.proc is None, "restart() of a running broker"
        return self.start(timeout, port=self.port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM and wait; record anything abnormal in self.problems."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            self.problems.append(
                f"broker exited on its own during the test "
                f"(status {proc.returncode})")
            return
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.problems.append(f"broker ignored SIGTERM for {timeout} s")
            return
        if rc != 0 and self.is_starling:
            self.problems.append(f"broker exited with status {rc} "
                                 f"after SIGTERM (expected 0)")

    def kill(self):
        """SIGKILL (for tests that simulate a crash)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def check(self):
        """Problems found after stop(): abnormal exit, sanitizer reports."""
        found = list(self.problems)
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                found.append(f"sanitizer report in broker log ({m!r})")
        return found

    # ------------------------------------------------------------ log

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """A position in the log; log_since(mark) returns what follows."""
        return len(self.log_text())

    def log_since(self, mark):
        return self.log_text()[mark:]

    def log_tail(self, lines=200):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, pattern, timeout=5.0, since=0):
        """Wait until the log (after `since`) matches regex `pattern`;
        returns the match or None. The log is a file: it is polled."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_since(since))
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.05)


def safe_name(nodeid):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-150:]


@pytest.fixture
def broker_factory(request, tmp_path):
    """start(args=(), env=None, **keys) -> a running Broker; every broker is
    stopped and checked for abnormal exits and sanitizer reports at
    teardown. args/env are extra command-line arguments and environment
    variables (Starling only)."""
    kind = broker_kind(request.config)
    logdir = os.environ.get("STARLING_TEST_LOGDIR")
    brokers = []
    request.node._brokers = brokers

    def start(args=(), env=None, **keys):
        if kind == "mosquitto":
            for k in keys:
                if k not in MOSQUITTO_KEYS and k not in IGNORED_UNDER_MOSQUITTO:
                    pytest.skip(f"key {k} has no mosquitto equivalent")
        n = len(brokers)
        name = safe_name(request.node.nodeid) + (f"-{n}" if n else "")
        log_path = (Path(logdir) / f"{name}.log" if logdir
                    else tmp_path / f"broker{n}.log")
        b = Broker(kind, keys, log_path, tmp_path, args, env)
        brokers.append(b)
        return b.start()

    yield start
    problems = []
    for b in brokers:
        b.stop()
        problems += [f"{p} (log: {b.log_path})" for p in b.check()]
    if problems:
        # The broker log itself is attached by pytest_runtest_makereport.
        pytest.fail("broker problems:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture
def broker(request, broker_factory):
    """The broker for this test, configured by @pytest.mark.broker(**keys)."""
    marker = request.node.get_closest_marker("broker")
    keys = dict(marker.kwargs) if marker else {}
    return broker_factory(**keys)


@pytest.fixture
def starling_run(request):
    """run(*args, env=None, timeout=10) -> CompletedProcess of the Starling
    binary (for options that exit at once: --help, --check-config...)."""
    if broker_kind(request.config) != "starling":
        pytest.skip("runs the starling binary")

    def run(*args, env=None, timeout=10):
        return subprocess.run([str(starling_bin()), *args],
                              capture_output=True, text=True,
                              timeout=timeout,
                              env={**child_env(), **(env or {})})

    return run


# ---------------------------------------------------------------- paho

PROTOCOLS = {"31": paho.MQTTv31, "311": paho.MQTTv311, "5": paho.MQTTv5}

# paho reports v3 CONNACK codes as v5 reason names; map them back.
V3_CONNACK = {"Success": 0, "Unsupported protocol version": 1,
              "Client identifier not valid": 2, "Server unavailable": 3,
              "Bad user name or password": 4, "Not authorized": 5}


class Msg:
    """A received message (copied out of paho's callback)."""

    def __init__(self, m):
        self.topic = m.topic
        self.payload = m.payload
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.dup = bool(m.dup)
        self.mid = m.mid
        self.properties = getattr(m, "properties", None)

    def __repr__(self):
        return (f"<Msg {self.topic!r} {self.payload[:40]!r} qos={self.qos} "
                f"retain={self.retain}>")


class Client:
    """A paho client on its own network thread, with blocking helpers that
    wait for broker replies with timeouts. transport="websockets" speaks
    MQTT over WebSocket (paho's ws_set_options() sets the path)."""

    _n = 0

    def __init__(self, broker, client_id=None, protocol="311",
                 clean_session=True, manual_ack=False, transport="tcp"):
        Client._n += 1
        if client_id is None:
            client_id = f"t{Client._n}-{uuid.uuid4().hex[:10]}"
        self.broker = broker
        self.client_id = client_id
        self.protocol = protocol
        kw = {}
        if protocol != "5":
            kw["clean_session"] = clean_session
        self.paho = paho.Client(CallbackAPIVersion.VERSION2,
                                client_id=client_id,
                                protocol=PROTOCOLS[protocol],
                                reconnect_on_failure=False,
                                manual_ack=manual_ack, transport=transport,
                                **kw)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self._acks = {}  # (kind, mid) -> result
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        p = self.paho
        p.on_connect = self._on_connect
        p.on_disconnect = self._on_disconnect
        p.on_message = self._on_message
        p.on_subscribe = self._on_subscribe
        p.on_unsubscribe = self._on_unsubscribe
        p.on_publish = self._on_publish

    # callbacks (network thread)
    def _on_connect(self, c, u, flags, reason, props):
        rc = reason.value if self.protocol == "5" else V3_CONNACK.get(
            reason.getName(), reason.value)
        self.connacks.put((rc, bool(flags.session_present), props))

    def _on_disconnect(self, c, u, flags, reason, props):
        self.disconnect_reason = reason
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, c, u, m):
        self.messages.put(Msg(m))

    def _ack(self, kind, mid, result):
        with self._cond:
            self._acks[(kind, mid)] = result
            self._cond.notify_all()

    def _on_subscribe(self, c, u, mid, codes, props):
        self._ack("sub", mid, [rc.value for rc in codes])

    def _on_unsubscribe(self, c, u, mid, codes, props):
        self._ack("unsub", mid, codes)

    def _on_publish(self, c, u, mid, reason, props):
        self._ack("pub", mid, reason)

    def _run(self):
        while not self._stop.is_set():
            rc = self.paho.loop(timeout=0.05)
            if rc != paho.MQTT_ERR_SUCCESS:
                self._stop.wait(0.05)  # not connected: nothing to poll

    def _wait_ack(self, kind, mid, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while (kind, mid) not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind} ack for mid {mid} "
                                       f"({self.client_id})")
                self._cond.wait(left)
            return self._acks.pop((kind, mid))

    # API (test thread)
    def will_set(self, topic, payload, qos=0, retain=False):
        self.paho.will_set(topic, payload, qos, retain)

    def connect(self, keepalive=60, timeout=5.0, expect_rc=0, **kw):
        """Connect and wait for CONNACK; returns (rc, session_present).
        Asserts the return code when expect_rc is not None."""
        self.paho.connect(self.broker.host, self.broker.port,
                          keepalive=keepalive, **kw)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"paho-{self.client_id}")
        self._thread.start()
        try:
            rc, sp, self.connack_props = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no CONNACK for {self.client_id}") from None
        if expect_rc is not None:
            assert rc == expect_rc, f"CONNACK {rc}, expected {expect_rc}"
        self.session_present = sp
        return rc, sp

    def subscribe(self, topic, qos=0, timeout=5.0, **kw):
        """SUBSCRIBE (topic may be a list of (filter, qos)); returns the
        SUBACK codes."""
        if isinstance(topic, str):
            rc, mid = self.paho.subscribe(topic, qos, **kw)
        else:
            rc, mid = self.paho.subscribe(topic, **kw)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe: {rc}"
        return self._wait_ack("sub", mid, timeout)

    def unsubscribe(self, topic, timeout=5.0):
        rc, mid = self.paho.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS, f"unsubscribe: {rc}"
        return self._wait_ack("unsub", mid, timeout)

    def publish(self, topic, payload=b"", qos=0, retain=False, wait=True,
                timeout=5.0, **kw):
        """PUBLISH; with wait, block until the QoS flow completes (PUBACK /
        PUBCOMP; for QoS 0, until the packet is written)."""
        info = self.paho.publish(topic, payload, qos, retain, **kw)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish: {info.rc}"
        if wait:
            self._wait_ack("pub", info.mid, timeout)
        return info

    def expect_message(self, timeout=5.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.client_id}: no message within {timeout} s") from None

    def expect_messages(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)} of {n} messages: "
                    f"{out!r}") from None
        return out

    def expect_no_message(self, timeout=0.5):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m!r}")

    def wait_disconnected(self, timeout=5.0):
        return self.disconnected.wait(timeout)

    def disconnect(self, timeout=5.0):
        """Clean DISCONNECT, wait for the link to close, stop the thread."""
        if self._thread is not None and not self.disconnected.is_set():
            self.paho.disconnect()
            self.disconnected.wait(timeout)
        self._halt()

    def abort(self):
        """Close the TCP connection without DISCONNECT."""
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
        """Teardown: stop the thread and drop the socket."""
        self._halt()
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def client_factory(broker):
    """make(client_id=None, protocol="311", clean_session=True,
    connect=True, keepalive=60, will=None, on=broker) -> Client.
    With connect=True the CONNACK must be 0."""
    made = []

    def make(client_id=None, protocol="311", clean_session=True,
             connect=True, keepalive=60, will=None, on=None, **kw):
        c = Client(on or broker, client_id, protocol, clean_session, **kw)
        made.append(c)
        if will is not None:
            c.will_set(*will)
        if connect:
            c.connect(keepalive=keepalive)
        return c

    yield make
    for c in made:
        c._stop.set()  # stop every network thread at once, then join
    for c in made:
        c.close()


@pytest.fixture
def raw_factory(broker):
    """make(on=broker) -> mqtt_raw.RawClient, closed at teardown."""
    made = []

    def make(on=None, timeout=5.0):
        b = on or broker
        r = mqtt_raw.RawClient(b.host, b.port, timeout)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture(params=["31", "311"])
def v3(request):
    """Run a test once per MQTT 3 protocol version (3.1, 3.1.1)."""
    return request.param


def unique(prefix="t"):
    """A topic prefix no other test shares."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def topic():
    return unique()


# ---------------------------------------------------------------- redis

REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN", "redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI_BIN", "redis-cli")


def _resp_encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RedisError(Exception):
    """An error reply (-ERR ...) from a Redis server."""


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
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
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


def ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_pair(avoid=()):
    """A loopback port p such that p and p + 10000 (a cluster bus) are
    free, both below the ephemeral range: no outgoing connection or
    free_port() can take them while a server is down for a restart."""
    top = min(ephemeral_low(), 65536) - 10001
    while True:
        p = random.randint(min(10000, top - 1000), top)
        if p in avoid or p + 10000 in avoid:
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
    """One redis-server process on a loopback port, with its own data
    directory (so a restart on the same port and directory reloads its
    append-only file)."""

    def __init__(self, workdir, port=None, cluster=False, appendonly=False,
                 password=None):
        self.port = port or free_port_pair()
        self.dir = Path(workdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.appendonly = appendonly
        self.password = password
        self.proc = None

    @property
    def log_path(self):
        return self.dir / "redis.log"

    def argv(self):
        argv = [REDIS_SERVER, "--bind", HOST, "--port", str(self.port),
                "--save", "", "--dir", str(self.dir),
                "--logfile", str(self.log_path), "--daemonize", "no"]
        if self.appendonly:
            # every write on disk before the reply: kill -9 loses nothing
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

    def start(self, timeout=10.0):
        assert self.proc is None
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
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


class RedisCluster:
    """A Redis Cluster of n masters (no replicas) on loopback ports."""

    def __init__(self, workdir, n=3):
        ports = []
        while len(ports) < n:
            p = free_port_pair(avoid=set(ports) |
                               {q + 10000 for q in ports} |
                               {q - 10000 for q in ports})
            ports.append(p)
        self.nodes = [RedisServer(workdir, p, cluster=True) for p in ports]

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(b"cluster_state:ok" in n.cmd("CLUSTER", "INFO")
                       for n in self.nodes):
                    return self
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis cluster did not reach cluster_state:ok")

    def stop(self):
        for n in self.nodes:
            n.stop()


def _need_redis(config):
    if broker_kind(config) != "starling":
        pytest.skip("the store backends are Starling's")
    for b in (REDIS_SERVER, REDIS_CLI):
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed")


@pytest.fixture(scope="session")
def redis_standalone(request, tmp_path_factory):
    """A redis-server shared by the whole session (tests keep apart by a
    key prefix of their own: see store_url)."""
    _need_redis(request.config)
    r = RedisServer(tmp_path_factory.mktemp("redis-solo")).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def redis_cluster(request, tmp_path_factory):
    """A 3-master Redis Cluster shared by the whole session."""
    _need_redis(request.config)
    c = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield c
    c.stop()


@pytest.fixture
def redis_factory(request, tmp_path):
    """make(appendonly=True) -> a started RedisServer of this test alone
    (for tests that kill, pause or restart the store); killed at
    teardown."""
    _need_redis(request.config)
    made = []

    def make(appendonly=True, start=True):
        r = RedisServer(tmp_path, appendonly=appendonly)
        made.append(r)
        return r.start() if start else r

    yield make
    for r in made:
        r.kill()


def store_prefix():
    """A key prefix no other test shares."""
    return f"t{uuid.uuid4().hex[:10]}:"


def redis_url(server, prefix=None, **opts):
    opts = {"prefix": prefix or store_prefix(), **opts}
    q = "&".join(f"{k}={v}" for k, v in opts.items())
    return f"redis://{HOST}:{server.port}?{q}"


def redis_cluster_url(cluster, prefix=None, **opts):
    opts = {"prefix": prefix or store_prefix(), **opts}
    q = "&".join(f"{k}={v}" for k, v in opts.items())
    seeds = ",".join(f"{HOST}:{p}" for p in cluster.ports[:2])
    return f"redis+cluster://{seeds}?{q}"


def _store_url(request, kind):
    if kind == "memory":
        if broker_kind(request.config) != "starling":
            pytest.skip("the store backends are Starling's")
        return "memory"
    if kind == "redis":
        return redis_url(request.getfixturevalue("redis_standalone"))
    return redis_cluster_url(request.getfixturevalue("redis_cluster"))


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store_url(request):
    """The store of a test, once per backend: "memory", a standalone
    redis-server and a 3-master Redis Cluster (each test with its own key
    prefix)."""
    return _store_url(request, request.param)


def bounce(broker, how):
    """End the broker process ("term": SIGTERM, a graceful stop; "kill":
    SIGKILL, a crash) and start a new one with the same keys (so the same
    store) on the same port."""
    if how == "term":
        broker.stop()
    elif how == "kill":
        broker.kill()
    else:
        raise ValueError(how)
    return broker.restart()


@pytest.fixture(params=["term", "kill"])
def how(request):
    """How a broker ends before a restart: SIGTERM or SIGKILL."""
    return request.param


class RawSession:
    """A raw-socket client speaking MQTT 3.1.1 (proto "311") or 5.0
    ("5"), for tests that hold acknowledgements back or send them by hand
    whatever the version. Packets received have .type .pid .qos .dup
    .topic .payload (and .rc / .session_present where they apply)."""

    def __init__(self, raw_factory, proto, on=None):
        import v5util
        self._v5util = v5util
        self.proto = proto
        self.raw = raw_factory(on=on)
        self.v5 = v5util.V5Client(self.raw) if proto == "5" else None

    def connect(self, client_id, fresh=False, expiry=300, **kw):
        """CONNECT with a persistent session (v3: clean session 0; v5:
        Clean Start `fresh`, Session Expiry Interval `expiry` unless
        None); returns the CONNACK."""
        if self.v5 is None:
            return self.raw.connect(client_id, clean=False, **kw)
        props = [] if expiry is None else [
            (self._v5util.SESSION_EXPIRY, expiry)]
        return self.v5.connect(client_id, clean_start=fresh,
                               properties=props, **kw)

    def subscribe(self, filters):
        """filters: [(filter, qos)]; returns the SUBACK codes."""
        if self.v5 is None:
            return self.raw.subscribe(filters)
        so = self._v5util.sub_options
        return self.v5.subscribe([(f, so(q)) for f, q in filters]).codes

    def publish(self, topic, payload, qos=0, pid=None, dup=False,
                retain=False):
        """Send a PUBLISH (the QoS flow is the test's business)."""
        mod = self._v5util if self.v5 else mqtt_raw
        self.send(mod.publish(topic, payload, qos, retain, dup, pid))

    def ack(self, ptype, pid):
        """Send PUBACK, PUBREC, PUBREL or PUBCOMP."""
        if self.v5 is not None:
            self.send(self._v5util.ack(ptype, pid))
        else:
            self.send(mqtt_raw.packet(ptype, 2 if ptype == mqtt_raw.PUBREL
                                      else 0, mqtt_raw.u16(pid)))

    def send(self, data):
        self.raw.send(data)

    def recv(self, timeout=5.0):
        return (self.v5 or self.raw).recv(timeout)

    def expect(self, ptype, timeout=5.0):
        pkt = self.recv(timeout)
        assert pkt.type == ptype, \
            f"expected {mqtt_raw.NAMES[ptype]}, got {pkt!r}"
        return pkt

    def expect_nothing(self, timeout):
        try:
            pkt = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {pkt!r}")

    def ping(self, timeout=5.0):
        """PINGREQ and wait for PINGRESP: everything the broker had to send
        before it is read (and returned)."""
        self.send(mqtt_raw.pingreq())
        got = []
        while True:
            pkt = self.recv(timeout)
            if pkt.type == mqtt_raw.PINGRESP:
                return got
            got.append(pkt)

    def store_barrier(self):
        """SUBSCRIBE (to a topic of its own) and wait for the SUBACK. A
        persistent session's SUBACK follows the store's reply to the
        subscription write, and the store completes one client's
        operations in order: so every store write the broker issued for
        this session before (fire and forget ones too) is done."""
        f = f"barrier/{uuid.uuid4().hex[:12]}"
        codes = self.subscribe([(f, 0)])
        assert codes == [0], f"barrier SUBSCRIBE refused: {codes}"

    def disconnect(self):
        self.send(mqtt_raw.disconnect())
        return self.raw.wait_closed(5.0)

    def close(self):
        self.raw.close()


@pytest.fixture
def raw_session(raw_factory):
    """make(proto, on=None) -> RawSession (closed at teardown)."""
    def make(proto, on=None):
        return RawSession(raw_factory, proto, on)
    return make


# For a test using store_url (directly or through a broker fixture built on
# it) that only makes sense on the backends outliving the broker process.
durable_only = pytest.mark.parametrize(
    "store_url", ["redis", "redis-cluster"], indirect=True)
