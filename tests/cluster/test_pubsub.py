"""Messages cross nodes: a publisher on one node, subscribers on the others,
at every QoS, through exact and wildcard routes; retained messages set on
one node are seen by a new subscriber on another; a route goes when its
last subscriber does, and the node stops getting that traffic; a gap in a
node's route events makes the others reload its routes."""
import struct

import pytest

from harness import unique
from harness.cluster import wait_route
from harness.redis import redis_any, store_ports


@pytest.mark.parametrize("batch", ["true", "false"])
def test_cross_node_delivery(cluster_factory, store, client_factory, topic,
                             batch):
    """Publisher on A, a subscriber per QoS on B and on C: every message
    arrives once, in order, at the QoS subscribed (with the bus batching
    messages per node, and with one PUBLISH per message)."""
    a, b, c = cluster_factory(store, cluster_batch=batch)
    pub = client_factory(a)
    for qos in (0, 1, 2):
        t = f"{topic}/{qos}"
        subs = [client_factory(n) for n in (b, c)]
        for s in subs:
            assert s.subscribe(t, qos) == [qos]
            wait_route(pub, s, t)
        n = 20
        for i in range(n):
            pub.publish(t, f"m{i}".encode(), qos=qos)
        for s in subs:
            got = s.expect_messages(n)
            assert [m.payload for m in got] == [f"m{i}".encode()
                                                for i in range(n)]
            assert {m.qos for m in got} == {qos}
            assert {m.topic for m in got} == {t}
            s.expect_no_message(0.2)


@pytest.mark.parametrize("wild", ["+", "#"])
def test_wildcard_routes(cluster3, client_factory, topic, wild):
    a, b, c = cluster3
    pub = client_factory(a)
    f = f"{topic}/+/x" if wild == "+" else f"{topic}/#"
    sub_b = client_factory(b)
    sub_c = client_factory(c)
    assert sub_b.subscribe(f, 1) == [1]
    assert sub_c.subscribe(f"{topic}/other", 1) == [1]
    wait_route(pub, sub_b, f"{topic}/probe/x")
    wait_route(pub, sub_c, f"{topic}/other")
    matching = [f"{topic}/one/x", f"{topic}/two/x"]
    if wild == "#":
        matching += [f"{topic}", f"{topic}/a/b/c"]
    missing = [f"{topic}x/one/x", f"{unique()}/one/x"]
    if wild == "+":
        missing += [f"{topic}/one/y", f"{topic}/one/two/x", f"{topic}/x"]
    for t in missing + matching:
        pub.publish(t, t.encode(), qos=1)
    got = sub_b.expect_messages(len(matching))
    assert sorted(m.topic for m in got) == sorted(matching)
    sub_b.expect_no_message(0.3)
    sub_c.expect_no_message(0.1)


def test_retained_across_nodes(cluster3, client_factory, topic):
    cluster3.wait_formed(peers=True)  # see the test below for the why
    a, b, c = cluster3
    pub = client_factory(a)
    pub.publish(topic, b"kept", qos=1, retain=True)  # returns on PUBACK
    sub = client_factory(b)
    assert sub.subscribe(topic, 1) == [1]
    m = sub.expect_message(5)
    assert (m.payload, m.retain) == (b"kept", True)

    # Replaced on another node, then cleared: each seen by a new
    # subscriber right after the publisher's PUBACK.
    pub_c = client_factory(c)
    pub_c.publish(topic, b"newer", qos=1, retain=True)
    sub2 = client_factory(a)
    assert sub2.subscribe(topic, 1) == [1]
    m = sub2.expect_message(5)
    assert (m.payload, m.retain) == (b"newer", True)

    pub.publish(topic, b"", qos=1, retain=True)
    for n in (b, c):
        late = client_factory(n)
        assert late.subscribe(topic, 1) == [1]
        late.expect_no_message(0.5)


@pytest.mark.parametrize("how", ["unsubscribe", "disconnect"])
def test_route_removed_with_last_subscriber(cluster3, client_factory, topic,
                                            how):
    """After the only subscriber on C leaves, a burst published on A sends
    nothing to C: C's cluster/bus/received grows by the background only
    (the other nodes' $SYS broadcasts), not per message."""
    a, b, c = cluster3
    pub = client_factory(a)
    marker = client_factory(b)  # sees every message: the burst was handled
    gone = client_factory(c)
    for s in (marker, gone):
        assert s.subscribe(topic, 1) == [1]
        wait_route(pub, s, topic)
    sys_a, sys_c = cluster3.sys(a), cluster3.sys(c)
    n = 100

    def burst(tag):
        for i in range(n):
            pub.publish(topic, f"{tag}{i}".encode(), qos=1)
        pub.publish(topic, f"{tag}-end".encode(), qos=1)
        got = marker.expect_messages(n + 1)
        assert got[-1].payload == f"{tag}-end".encode()

    # While C has a subscriber, the burst reaches C (sanity of the counter).
    before = sys_c.latest("cluster/bus/received")
    burst("on")
    assert len(gone.expect_messages(n + 1)) == n + 1
    after = sys_c.fresh("cluster/bus/received")
    assert after - before >= n // 2, (before, after)

    routes = sys_a.latest("cluster/routes")
    if how == "unsubscribe":
        gone.unsubscribe(topic)
    else:
        gone.disconnect()
    # A forgets C's route: its route count drops by one.
    sys_a.wait_value("cluster/routes", lambda v: v == routes - 1, 10)

    before = sys_c.latest("cluster/bus/received")
    burst("off")
    after = sys_c.fresh("cluster/bus/received")
    # background: one $SYS frame per second from each of the 2 other nodes
    assert after - before < n // 5, \
        f"C still receives bus frames per message: {before} -> {after}"
    if how == "unsubscribe":
        gone.expect_no_message(0.2)


def test_retained_from_a_node_that_knows_no_peer_yet(cluster_factory, store,
                                                     client_factory, topic):
    """A node learns the other nodes from the store's node table once a
    second; a retained message it takes in before that must still reach
    the others (they serve retained messages from memory)."""
    cl = cluster_factory(store)  # all on the bus; n1 has not read the table
    a, b, c = cl
    pub = client_factory(a)
    pub.publish(topic, b"early", qos=1, retain=True)
    cl.wait_formed(peers=True)
    for n in (b, c):
        sub = client_factory(n)
        assert sub.subscribe(topic, 1) == [1]
        m = sub.expect_message(3)
        assert (m.payload, m.retain) == (b"early", True)


def test_route_event_gap_reloads_routes(cluster3, store, client_factory,
                                        topic):
    """A route event from B whose sequence number skips some (as if the bus
    lost them) makes A reload B's routes from the store: a route in that
    event but not in the store is not kept, and A counts the resync."""
    a, b, c = cluster3
    sub = client_factory(b)
    assert sub.subscribe(f"{topic}/real", 0) == [0]
    wait_route(client_factory(a), sub, f"{topic}/real")
    watch = cluster3.sys(a)
    before = watch.latest("cluster/routes")
    ports, prefix = store_ports(store)
    bogus = f"{topic}/bogus".encode()
    bid = b.node_id.encode()
    body = struct.pack(">IBH", 0x7FFFFFF0, 1, len(bogus)) + bogus
    frame = (struct.pack(">H", len(bid)) + bid +
             struct.pack(">BI", ord("R"), len(body)) + body)
    redis_any(ports, "PUBLISH", f"{prefix}bus:{{bus}}:all", frame)
    watch.wait_value("cluster/routes/resyncs", lambda v: v >= 1)
    routes = {r.decode() for r in
              redis_any(ports, "SMEMBERS", f"{prefix}routes:{b.node_id}")}
    assert f"{topic}/real" in routes and bogus.decode() not in routes
    # after the reload A holds what it held before, not the bogus route
    watch.wait_value("cluster/routes", lambda v: v == before,
                     timeout=5)


def test_retained_visible_everywhere_right_after_the_ack(cluster3,
                                                         client_factory,
                                                         topic):
    """Subscribers already connected to B and C subscribe the moment the
    publisher on A has its PUBACK for a retained message: each gets it, on
    every one of many topics (no waiting for the broadcast to arrive)."""
    cluster3.wait_formed(peers=True)
    a, b, c = cluster3
    pub = client_factory(a)
    subs = [client_factory(n) for n in (b, c)]
    missing = []
    for i in range(40):
        t = f"{topic}/{i}"
        pub.publish(t, f"r{i}".encode(), qos=1, retain=True)  # PUBACK'd
        for s in subs:
            assert s.subscribe(t, 1) == [1]
        for s in subs:
            try:
                m = s.expect_message(2)
            except AssertionError:
                missing.append((s.port, t))
                continue
            assert (m.topic, m.payload, m.retain) == (t, f"r{i}".encode(),
                                                     True)
    assert not missing, f"retained message not there yet: {missing[:5]}"
