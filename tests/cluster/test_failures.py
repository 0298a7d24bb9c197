"""Nodes and the store failing while the cluster runs: a killed node
restarted under the same id and port serves subscribers again and carries
no stale routes of its previous life; wills survive a fast restart; the
nodes recover by themselves from a store restart."""
import time
import uuid

import pytest

from harness.client import payloads
from harness.cluster import wait_route
from harness.redis import redis_url


def burst_reaches(cluster, pub, marker, target, topic, n=100):
    """Publish n QoS 1 messages on `topic` through `pub`, then wait until
    `marker` (a subscriber elsewhere) has them all; return how many bus
    frames `target` received meanwhile (its $SYS counter)."""
    w = cluster.sys(target)
    before = w.latest("cluster/bus/received")
    for i in range(n):
        pub.publish(topic, f"b{i}".encode(), qos=1)
    got = marker.expect_messages(n)
    assert len(got) == n
    after = w.fresh("cluster/bus/received")
    return after - before


def wait_dead(cluster, dead, timeout=15.0):
    """Wait until every other running node counts one node less (it noticed
    `dead` stopped heartbeating: PX 5000, checked every second)."""
    live = sum(1 for n in cluster if n.alive())
    for n in cluster:
        if n is not dead and n.alive():
            cluster.wait_nodes(n, live, timeout)


def test_dead_node_noticed_by_every_survivor(cluster3):
    """kill -9 C: both A and B notice (cluster/nodes drops to 2), not only
    the survivor that wins the clean-up lock."""
    a, b, c = cluster3
    c.kill()
    wait_dead(cluster3, c)


@pytest.mark.parametrize("detected", [True, False],
                         ids=["after-detection", "fast"])
def test_node_rejoins_after_kill(cluster3, client_factory, topic, detected):
    """kill -9 C, then restart it with the same node id and port (after the
    survivors noticed, or at once): a subscriber on C gets messages
    published on A again."""
    a, b, c = cluster3
    pub = client_factory(a)
    old = client_factory(c)
    assert old.subscribe(topic, 1) == [1]
    wait_route(pub, old, topic)
    c.kill()
    if detected:
        wait_dead(cluster3, c)
    c.restart()
    sub = client_factory(c)
    assert sub.subscribe(topic, 1) == [1]
    wait_route(pub, sub, topic)
    for i in range(10):
        pub.publish(topic, f"r{i}".encode(), qos=1)
    assert payloads(sub.expect_messages(10)) == [f"r{i}".encode()
                                                 for i in range(10)]
    sub.expect_no_message(0.3)
    cluster3.wait_nodes(c, 3)


@pytest.mark.parametrize("detected", [True, False],
                         ids=["after-detection", "fast"])
def test_no_stale_routes_after_restart(cluster3, client_factory, topic,
                                       detected):
    """The routes of a killed node's previous life go: after C is restarted
    (same id) with no subscriber, messages on a topic that only C's old
    client wanted are not sent to C."""
    a, b, c = cluster3
    old = client_factory(c)
    assert old.subscribe(topic, 1) == [1]
    for n in (a, b):  # both hold C's route
        wait_route(client_factory(n), old, topic)
    c.kill()
    if detected:
        wait_dead(cluster3, c)
    pub = client_factory(a)
    marker = client_factory(b)
    assert marker.subscribe(topic, 1) == [1]
    wait_route(pub, marker, topic)
    c.restart()
    cluster3.wait_nodes(c, 3)
    frames = burst_reaches(cluster3, pub, marker, c, topic)
    assert frames < 20, \
        f"{c.node_id} got {frames} bus frames for 100 messages on a topic " \
        f"only its previous life's client wanted"


def test_will_after_kill_and_fast_restart(cluster3, client_factory, topic):
    """C is killed with a client holding a will and comes back at once
    under the same id, before the others notice its heartbeat stopped: the
    will is still published (by a survivor or by C itself)."""
    a, b, c = cluster3
    will_topic = f"{topic}/will"
    watcher = client_factory(a)
    assert watcher.subscribe(will_topic, 1) == [1]
    for n in (a, b):
        wait_route(client_factory(n), watcher, will_topic)
    w = client_factory(c, f"w-{uuid.uuid4().hex[:8]}",
                       will=(will_topic, b"gone", 1, False))
    assert w.subscribe(f"{topic}/w", 0) == [0]
    for n in (a, b):
        wait_route(client_factory(n), w, f"{topic}/w")
    c.kill()
    c.restart()
    m = watcher.expect_message(10)
    assert (m.topic, m.payload) == (will_topic, b"gone")
    watcher.expect_no_message(1.0)


@pytest.mark.parametrize("appendonly", [False, True],
                         ids=["no-persistence", "appendonly"])
@pytest.mark.timeout(60)
def test_store_restart(cluster_factory, redis_factory, client_factory, topic,
                       appendonly):
    """The standalone store stops and comes back on the same port: every
    node reconnects by itself (log), subscriptions made after the restart
    route across nodes, and so do those made before it. No node is taken
    for dead meanwhile, even when the store comes back empty (no will of a
    client still connected is published)."""
    redis = redis_factory(appendonly=appendonly)
    cl = cluster_factory(redis_url(redis))
    a, b, c = cl
    pub = client_factory(a)
    before = client_factory(b)
    t_before, t_after = f"{topic}/before", f"{topic}/after"
    assert before.subscribe(t_before, 1) == [1]
    wait_route(pub, before, t_before)
    t_will = f"{topic}/will"
    watcher = client_factory(a)
    assert watcher.subscribe(t_will, 1) == [1]
    wait_route(client_factory(c), watcher, t_will)
    client_factory(b, will=(t_will, b"b-is-gone", 1, False))

    marks = [n.log_mark() for n in cl]
    redis.stop()
    time.sleep(1.5)  # time must pass: the nodes notice the loss
    redis.proc = None
    redis.start()
    for n, mark in zip(cl, marks):
        assert n.wait_log(r"store: connection to \S+ lost", 10, mark), \
            f"{n}: no log of the lost store connection"
        assert n.wait_log(r"store: connection to \S+ restored", 15, mark), \
            f"{n}: no log of the store reconnect"

    after = client_factory(c)
    assert after.subscribe(t_after, 1) == [1]
    wait_route(pub, after, t_after, timeout=10)
    for i in range(5):
        pub.publish(t_after, f"a{i}".encode(), qos=1)
    assert payloads(after.expect_messages(5)) == [f"a{i}".encode()
                                                  for i in range(5)]
    # Subscriptions made before the restart route again as well.
    wait_route(pub, before, t_before, timeout=10)
    pub.publish(t_before, b"old", qos=1)
    assert before.expect_message().payload == b"old"
    for n, mark in zip(cl, marks):
        assert not n.wait_log(r"stopped heartbeating", 0.1, mark), \
            f"{n}: took a live node for dead"
    watcher.expect_no_message(0.5)
