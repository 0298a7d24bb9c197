"""
A set of Starling nodes on one store, as the cluster suite drives it, and
route probes: how a test knows that a subscription made on one node is
known on another.
"""
import queue
import time
import uuid

from harness.client import PROBE
from harness.redis import RedisError, redis_any, redis_cmd, store_ports
from harness.sysinfo import SysWatch
from harness.wait import wait_until

HEARTBEAT = 1.0  # seconds between a node's heartbeats (cluster.c)


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


def wait_route(pub, sub, topic, timeout=15.0, qos=0):
    """Publish probes on `topic` through `pub` until `sub` (a
    ClusterClient) receives one: the route (or, at QoS >= 1, the persistent
    subscription index) is known where `pub` is connected. Probes received
    are discarded."""
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
