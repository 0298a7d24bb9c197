"""
Broker processes under test: Broker (one Starling, or Mosquitto to check
the tests themselves, on a free loopback port) and Node (one Starling of a
cluster: a node id and a store, the same port across restarts). Each
appends its output to a log file of its own; check() reports what went
wrong in its life (an exit nobody asked for, a status other than 0 after
SIGTERM, a sanitizer report in the log).
"""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from harness import HOST, REPO
from harness.ports import free_port
from harness.wait import wait_port

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

SYS_INTERVAL = 1  # seconds between a cluster node's $SYS updates


def starling_bin():
    return Path(os.environ.get("STARLING_BIN", REPO / "build" / "starling"))


def mosquitto_bin():
    return Path(os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto"))


def child_env():
    """The environment for a broker: no STARLING_* variable leaks in from
    the test runner (Starling treats unknown ones as errors)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("STARLING_")}


_help_cache = {}


def starling_help(path=None):
    """`starling --help` text (cached), used to detect optional keys."""
    key = str(path or starling_bin())
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
    """One broker process listening on a loopback port: a free one at the
    first start, the same one on every restart."""

    START_ATTEMPTS = 10

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
        self._sigterm = None  # this life: True SIGTERM sent, False found dead
        self.problems = []
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")

    @property
    def is_starling(self):
        return self.kind == "starling"

    @property
    def is_mosquitto(self):
        return self.kind == "mosquitto"

    @property
    def name(self):
        """How reports name this process."""
        return self.kind

    def __repr__(self):
        return f"<{self.name} :{self.port}>"

    # ------------------------------------------------------------ process

    def default_keys(self):
        """Keys every process gets unless the test sets them."""
        keys = {"bind": HOST, "log_level": "info"}
        if "http_port" in starling_help():
            keys["http_port"] = 0
        return keys

    def own_keys(self):
        """Keys the harness decides whatever the test says."""
        return {"port": self.port}

    def argv(self):
        if self.is_mosquitto:
            conf = self.workdir / f"mosquitto-{self.port}.conf"
            conf.write_text(self.mosquitto_conf())
            return [str(mosquitto_bin()), "-c", str(conf)]
        keys = {**self.default_keys(), **self.keys, **self.own_keys()}
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

    def start(self, timeout=10.0):
        """Start and wait until the port accepts connections. The first
        start picks a free port (another one if it is lost to someone else
        meanwhile); later ones keep it, retried while it is still taken."""
        assert self.proc is None, f"{self!r} already running"
        fixed = self.port is not None
        self._sigterm = None
        for attempt in range(self.START_ATTEMPTS):
            if not fixed:
                self.port = free_port()
                self.ports = {}
            argv = self.argv()
            mark = self.log_mark()
            with open(self.log_path, "ab") as log:
                log.write(f"### {' '.join(argv)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**child_env(), **self.extra_env}, cwd=self.workdir)
            if wait_port(self.port, timeout, self.proc):
                return self
            if self.proc.poll() is None or not re.search(
                    r"(?i)address already in use", self.log_since(mark)):
                break
            self.proc = None
            if fixed:  # the old port is not free yet: back off
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{self.name} did not start listening on "
                           f"{HOST}:{self.port}:\n{self.log_tail()}")

    def restart(self, timeout=10.0):
        """Start a new process with the same keys on the same port (after
        stop() or kill())."""
        assert self.proc is None, "restart() of a running broker"
        return self.start(timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """Send SIGTERM without waiting (stop() waits). A process found
        dead already is a problem."""
        if self.proc is None or self._sigterm is not None:
            return
        if self.proc.poll() is not None:
            self._sigterm = False
            self.problems.append(f"exited on its own during the test "
                                 f"(status {self.proc.returncode})")
            return
        self._sigterm = True
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; anything abnormal goes to self.problems."""
        if self.proc is None:
            return
        self.terminate()
        proc, self.proc = self.proc, None
        if not self._sigterm:
            return  # it had exited by itself: noted by terminate()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.problems.append(f"ignored SIGTERM for {timeout} s")
            return
        if rc != 0 and self.is_starling:
            self.problems.append(f"exited with status {rc} after SIGTERM "
                                 f"(expected 0)")

    def kill(self):
        """SIGKILL (for tests that simulate a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self.problems.append(f"exited on its own (status "
                                 f"{self.proc.returncode})")
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.note("killed with SIGKILL")

    def check(self):
        """Problems found after stop(): abnormal exit, sanitizer reports."""
        found = list(self.problems)
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                found.append(f"sanitizer report in the log ({m!r})")
        return found

    # ------------------------------------------------------------ log

    def note(self, text):
        """Write a line of the test's own into the log."""
        with open(self.log_path, "ab") as log:
            log.write(f"### test: {text}\n".encode())

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


class Node(Broker):
    """One Starling process of a cluster: a node id, a store, a port kept
    across restarts, a log file appended to by every incarnation."""

    def __init__(self, node_id, store, log_path, workdir, keys):
        super().__init__("starling", keys, log_path, workdir)
        self.node_id = node_id
        self.store = store

    @property
    def name(self):
        return f"node {self.node_id}"

    def __repr__(self):
        return f"<Node {self.node_id} :{self.port}>"

    def default_keys(self):
        return {**super().default_keys(), "sys_interval": SYS_INTERVAL}

    def own_keys(self):
        return {"port": self.port, "store": self.store,
                "node_id": self.node_id}


def stop_all(processes):
    """Stop every process (SIGTERM to all first, then wait for each) and
    return the problems each one's check() found, naming process and log."""
    for p in processes:
        p.terminate()
    problems = []
    for p in processes:
        p.stop()
        problems += [f"{p.name}: {problem} (log {p.log_path})"
                     for problem in p.check()]
    return problems


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
