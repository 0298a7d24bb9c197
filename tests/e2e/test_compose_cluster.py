"""
End-to-end: the docker-compose deployment (store, 3 then 4 broker nodes,
HAProxy) seen by MQTT clients through the load balancer only.

The tests run in file order on one deployment: fan-out across nodes, a node
SIGKILLed under a QoS 1 stream whose persistent subscriber lives on it, then
a scale-out to 4 nodes.
"""
import threading
import time

import pytest

from harness.compose import docker
from harness.wait import wait_until

# The first test also waits for the image builds (the cluster fixture).
pytestmark = pytest.mark.timeout(1500)


def drain(client, into, seconds):
    """Move the messages client receives during `seconds` into the list."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        m = client.next_message(max(0.01, end - time.monotonic()))
        if m is not None:
            into.append(m)


def on_which(cluster, client_id):
    return wait_until(lambda: cluster.container_of(client_id), 15,
                      f"the node of client {client_id}", step=0.2)


def test_pubsub_across_nodes_through_lb(clients):
    cl = clients
    subs = []
    for i in range(3):
        s = cl.client(f"e2e-fan-{i}")
        s.subscribe("e2e/fan/#", 1)
        subs.append(s)
    nodes = {on_which(cl, s.client_id) for s in subs}
    # leastconn spreads three long-lived connections over the three nodes.
    assert len(nodes) == 3, f"subscribers on {len(nodes)} nodes only"

    pub = cl.client("e2e-fan-pub")
    want = [f"m{i}".encode() for i in range(20)]
    for i, payload in enumerate(want):
        pub.publish(f"e2e/fan/{i % 4}", payload, qos=i % 2)
    for s in subs:
        got = []
        wait_until(lambda: drain(s, got, 0.2) or len(got) >= len(want), 20,
                   f"{s.client_id} to receive {len(want)} messages",
                   step=0.2)
        assert sorted(m.payload for m in got) == sorted(want)

    # A retained message set through one node is there for a new
    # subscriber on whichever node it lands.
    pub.publish("e2e/retained", b"kept", qos=1, retain=True)
    late = cl.client("e2e-fan-late")
    late.subscribe("e2e/retained", 1)
    m = late.expect_message(timeout=10)
    assert (m.topic, m.payload, m.retain) == ("e2e/retained", b"kept", True)
    pub.publish("e2e/retained", b"", qos=1, retain=True)


def test_node_killed_while_publishing_qos1(clients):
    cl = clients
    sub = cl.client("e2e-persist", v5=True, clean=False, session_expiry=600,
                    reconnect=True)
    sub.subscribe("e2e/ha/#", 1)
    assert sub.connects == [False]
    victim = on_which(cl, sub.client_id)

    pub = cl.client("e2e-ha-pub")
    pub_node = on_which(cl, pub.client_id)
    assert pub_node != victim, "publisher landed on the subscriber's node"

    total, rate, kill_at = 400, 50.0, 2.5
    sent = []                      # (seq, MQTTMessageInfo, monotonic time)
    killed = {}

    def publisher():
        t0 = time.monotonic()
        for seq in range(total):
            info = pub.paho.publish(f"e2e/ha/{seq % 8}",
                                    str(seq).encode(), qos=1)
            sent.append((seq, info, time.monotonic()))
            if "t" not in killed and time.monotonic() - t0 >= kill_at:
                killed["t"] = time.monotonic()
                docker("kill", "--signal", "KILL", victim)
            time.sleep(max(0.0, t0 + (seq + 1) / rate - time.monotonic()))

    received = []
    th = threading.Thread(target=publisher, daemon=True)
    th.start()
    # Meanwhile keep taking the subscriber's messages.
    while th.is_alive():
        drain(sub, received, 0.2)
    th.join()
    assert "t" in killed

    wait_until(lambda: all(info.is_published() for _, info, _ in sent), 30,
               "PUBACKs of the publisher (its node is alive)", step=0.2)
    acked = {seq for seq, info, _ in sent if info.is_published()}
    after_kill = {seq for seq, _, t in sent if t > killed["t"]}
    assert len(acked) == total
    assert len(after_kill & acked) > 100

    # The subscriber lost its node, came back through the load balancer on
    # another one and found its session there.
    sub.wait_for(lambda s: s.disconnects >= 1, 15, "the loss of its node")
    sub.wait_for(lambda s: len(s.connects) >= 2, 30, "a reconnect")
    assert sub.connects[1] is True, "session not present after failover"
    new_home = on_which(cl, sub.client_id)
    assert new_home != victim

    def got_all():
        drain(sub, received, 0.3)
        return acked <= {int(m.payload) for m in received}
    wait_until(got_all, 60, "every PUBACKed message at the subscriber",
               step=0)
    ids = [int(m.payload) for m in received]
    print(f"\ne2e failover: {total} published, {len(acked)} PUBACKed "
          f"({len(after_kill)} after the kill), {len(set(ids))} received "
          f"({len(ids) - len(set(ids))} duplicates), reconnected "
          f"{sub.connects}")
    # The load balancer no longer offers the dead node, and every survivor
    # has noticed that it is gone.
    wait_until(lambda: len(cl.brokers()) == 2, 30, "the container to stop",
               step=0.2)
    cl.wait_formed(2, timeout=60)


def test_scale_out_adds_a_serving_node(clients):
    cl = clients
    before = set(cl.brokers(running_only=False))
    cl.compose("up", "-d", "--no-recreate", "--scale", "broker=4",
               timeout=300)
    # Each node counts the others (at least: a stale count left by the
    # previous test is that test's failure, not this one's).
    cl.wait_formed(4, timeout=120, at_least=True)
    new = [c for c in cl.brokers() if c not in before]
    assert new, "no new broker container"

    # Four long-lived connections: leastconn gives the new node one.
    held = [cl.client(f"e2e-scale-{i}") for i in range(4)]
    where = {c.client_id: on_which(cl, c.client_id) for c in held}
    on_new = [c for c in held if where[c.client_id] in new]
    on_old = [c for c in held if where[c.client_id] not in new]
    assert on_new and on_old, f"placement: {where}"
    fresh, old = on_new[0], on_old[0]

    fresh.subscribe("e2e/scale/in", 1)
    old.subscribe("e2e/scale/out", 1)
    old.publish("e2e/scale/in", b"to-new", qos=1)
    assert fresh.expect_message(timeout=10).payload == b"to-new"
    fresh.publish("e2e/scale/out", b"from-new", qos=1)
    assert old.expect_message(timeout=10).payload == b"from-new"
