"""Interoperability with the real mosquitto_pub / mosquitto_sub clients."""
import queue
import shutil
import subprocess
import threading

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed")

FMT = "MSG %q %r %t %p"


class Sub:
    """A mosquitto_sub process; lines of its stdout go to a queue."""

    def __init__(self, broker, *args, count=1, timeout=10):
        # stdbuf: line-buffered stdout, so the SUBACK line arrives at once.
        cmd = ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host,
               "-p", str(broker.port),
               "-d", "-F", FMT, "-C", str(count), "-W", str(timeout)]
        self.proc = subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.all = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_subscribed(self, timeout=5):
        """Wait for the SUBACK line that -d prints."""
        while True:
            line = self.lines.get(timeout=timeout)
            assert line is not None, f"mosquitto_sub exited: {self.all}"
            self.all.append(line)
            if "received SUBACK" in line:
                return

    def messages(self, timeout=15):
        """(qos, retain, topic, payload) of each message, after exit."""
        rc = self.proc.wait(timeout)
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            self.all.append(line)
        assert rc == 0, f"mosquitto_sub exit {rc}: {self.all}"
        out = []
        for line in self.all:
            if line.startswith("MSG "):
                _, q, r, t, p = line.split(" ", 4)
                out.append((int(q), int(r), t, p))
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def subs():
    made = []
    yield made
    for s in made:
        s.kill()


def pub(broker, *args, stdin=None):
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port)]
    r = subprocess.run(cmd + list(args), input=stdin, capture_output=True,
                       text=True, timeout=15)
    assert r.returncode == 0, f"mosquitto_pub failed: {r.stdout}{r.stderr}"
    return r


@pytest.mark.parametrize("version", ["mqttv31", "mqttv311"])
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_pub_sub(broker, subs, topic, version, qos):
    s = Sub(broker, "-t", topic, "-q", qos, "-V", version, count=3)
    subs.append(s)
    s.wait_subscribed()
    for i in range(3):
        pub(broker, "-t", topic, "-q", qos, "-V", version, "-m", f"hello{i}")
    got = s.messages()
    assert got == [(int(qos), 0, topic, f"hello{i}") for i in range(3)]


def test_pub_lines_from_stdin(broker, subs, topic):
    s = Sub(broker, "-t", f"{topic}/#", "-q", "2", count=5)
    subs.append(s)
    s.wait_subscribed()
    lines = "".join(f"line {i}\n" for i in range(5))
    pub(broker, "-t", f"{topic}/lines", "-q", "1", "-l", stdin=lines)
    got = s.messages()
    assert [(q, p) for q, _, _, p in got] == [(1, f"line {i}")
                                              for i in range(5)]


def test_retained_via_cli(broker, subs, topic):
    pub(broker, "-t", topic, "-r", "-q", "1", "-m", "sticky")
    s = Sub(broker, "-t", topic, "-q", "1", count=1)
    subs.append(s)
    assert s.messages() == [(1, 1, topic, "sticky")]
    # Clearing with an empty retained message: a new subscriber times out.
    pub(broker, "-t", topic, "-r", "-n")
    s = Sub(broker, "-t", topic, count=1, timeout=1)
    subs.append(s)
    rc = s.proc.wait(10)
    assert rc != 0  # -W expired without a message


def test_wildcard_subscription_via_cli(broker, subs, topic):
    s = Sub(broker, "-t", f"{topic}/+/temp", "-v", count=2)
    subs.append(s)
    s.wait_subscribed()
    pub(broker, "-t", f"{topic}/kitchen/temp", "-m", "21")
    pub(broker, "-t", f"{topic}/kitchen/humidity", "-m", "40")
    pub(broker, "-t", f"{topic}/hall/temp", "-m", "19")
    got = s.messages()
    assert [(t, p) for _, _, t, p in got] == [
        (f"{topic}/kitchen/temp", "21"), (f"{topic}/hall/temp", "19")]


def test_persistent_cli_session(broker, subs, topic):
    cid = "cli-persist"
    s = Sub(broker, "-t", topic, "-q", "1", "-c", "-i", cid, "-E")
    subs.append(s)
    s.proc.wait(10)  # -E: exits once subscribed
    for i in range(3):
        pub(broker, "-t", topic, "-q", "1", "-m", f"offline{i}")
    s = Sub(broker, "-t", topic, "-q", "1", "-c", "-i", cid, count=3)
    subs.append(s)
    got = s.messages()
    assert [p for _, _, _, p in got] == [f"offline{i}" for i in range(3)]


def test_will_via_cli(broker, subs, topic):
    s = Sub(broker, "-t", f"{topic}/will", "-q", "1", count=1)
    subs.append(s)
    s.wait_subscribed()
    # A subscriber with a will that is killed (no DISCONNECT).
    victim = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host,
         "-p", str(broker.port),
         "-t", f"{topic}/none", "-d", "--will-topic", f"{topic}/will",
         "--will-payload", "died", "--will-qos", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in victim.stdout:
            if "received SUBACK" in line:
                break
        victim.kill()
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        victim.stdout.close()
    assert s.messages() == [(1, 0, f"{topic}/will", "died")]
