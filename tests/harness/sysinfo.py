"""Readers of the $SYS figures brokers publish."""
import threading
import time
import uuid

from harness.client import Client


def _value(payload):
    """A $SYS payload as an int when it is one, else as text."""
    try:
        return int(payload)
    except ValueError:
        return payload.decode(errors="replace")


class SysWatch:
    """The latest $SYS/broker/nodes/<id>/... figures of one cluster node,
    read by a client subscribed on that node."""

    TIMEOUT = 10.0

    def __init__(self, node):
        self.node = node
        self.port = node.port
        self.prefix = f"$SYS/broker/nodes/{node.node_id}/"
        self.values = {}  # name -> (value, monotonic time received)
        self._cond = threading.Condition()
        self.client = Client(node.port, f"sys-{node.node_id}-"
                             f"{uuid.uuid4().hex[:6]}")
        self.client.paho.on_message = self._on_message
        self.client.connect(timeout=self.TIMEOUT)
        self.client.subscribe(self.prefix + "#", 0, timeout=self.TIMEOUT)

    def _on_message(self, c, u, m):
        if not m.topic.startswith(self.prefix):
            return
        name = m.topic[len(self.prefix):]
        with self._cond:
            self.values[name] = (_value(m.payload), time.monotonic())
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


def live_values(client, topic_filter, seconds):
    """{topic: value} of the $SYS updates matching `topic_filter` that the
    connected `client` hears during `seconds` (live ones only: retained
    copies sent on subscribing are left out); the last value of each
    topic."""
    client.subscribe(topic_filter, 0)
    seen = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        m = client.next_message(max(0.05, end - time.monotonic()))
        if m is not None and not m.retain:
            seen[m.topic] = _value(m.payload)
    return seen
