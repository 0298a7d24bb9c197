"""Sessions across nodes: takeover of a client id from another node,
persistent sessions resumed on another node with what was queued meanwhile,
an online persistent subscriber fed from another node (store queue plus
notification), wills of a killed node's clients published by a survivor,
and shared subscriptions."""
import queue
import time
import uuid

import pytest

from harness import cid_for
from harness.client import PROBE, payloads, persistent
from harness.cluster import wait_route
from harness.redis import redis_any, store_ports
from harness.wait import wait_until


V5_SESSION_TAKEN_OVER = 0x8E


def clean(client_factory, on, cid, proto, **kw):
    if proto == "5":
        return client_factory(on, cid, protocol="5", expiry=0, **kw)
    return client_factory(on, cid, protocol="311", clean_session=True, **kw)


# ---------------------------------------------------------------- takeover

@pytest.mark.parametrize("proto,kind", [("311", "persistent"),
                                        ("5", "persistent"), ("5", "clean")])
def test_takeover_across_nodes(cluster3, client_factory, topic, proto, kind):
    """X on A; the same client id connects to B: A closes X's connection
    (v5: DISCONNECT 0x8E). A persistent session moves with its
    unacknowledged messages, resent by B."""
    a, b, c = cluster3
    cid = cid_for("x")
    if kind == "persistent":
        x = persistent(client_factory, cid, proto, fresh=True, on=a,
                       manual_ack=True)
    else:
        x = clean(client_factory, a, cid, proto, manual_ack=True)
    assert x.subscribe(topic, 1) == [1]
    pub = client_factory(c)
    wait_route(pub, x, topic, qos=1)
    for i in range(3):
        pub.publish(topic, f"u{i}".encode(), qos=1)
    got = x.expect_messages(3)  # received, never acknowledged
    assert payloads(got) == [b"u0", b"u1", b"u2"]

    if kind == "persistent":
        x2 = persistent(client_factory, cid, proto, on=b)
        assert x2.session_present is True
    else:
        x2 = clean(client_factory, b, cid, proto)
        assert x2.session_present is False
    assert x.wait_disconnected(10), "A kept the taken-over connection"
    if proto == "5":
        assert x.disconnect_reason.value == V5_SESSION_TAKEN_OVER, \
            x.disconnect_reason

    if kind == "persistent":
        again = x2.expect_messages(3)
        assert payloads(again) == [b"u0", b"u1", b"u2"]
        assert all(m.dup for m in again), again
        # The subscription moved too: a new message reaches B.
        pub.publish(topic, b"after", qos=1)
        assert x2.expect_message().payload == b"after"
    else:
        x2.expect_no_message(0.5)
        assert x2.subscribe(topic, 1) == [1]
        wait_route(pub, x2, topic)
        pub.publish(topic, b"after", qos=1)
        assert x2.expect_message().payload == b"after"
    x2.expect_no_message(0.3)


# ---------------------------------------------------------------- sessions

@pytest.mark.parametrize("proto", ["311", "5"])
def test_persistent_session_resumed_on_another_node(cluster3, client_factory,
                                                    topic, proto):
    """Subscriber on A (QoS 1 and QoS 2 filters) disconnects; a publisher on
    B sends N messages of each, all acknowledged; the subscriber reconnects
    to C and gets every one, in order, QoS 2 exactly once."""
    a, b, c = cluster3
    cid = cid_for("p")
    t1, t2 = f"{topic}/q1", f"{topic}/q2"
    sub = persistent(client_factory, cid, proto, fresh=True, on=a)
    assert sub.subscribe([(t1, 1), (t2, 2)]) == [1, 2]
    pub = client_factory(b)
    wait_route(pub, sub, t1, qos=1)  # B indexes the subscriptions
    wait_route(pub, sub, t2, qos=1)
    sub.disconnect()

    n = 20
    for i in range(n):
        pub.publish(t1, f"a{i}".encode(), qos=1)  # returns on PUBACK
        pub.publish(t2, f"b{i}".encode(), qos=2)  # returns on PUBCOMP

    again = persistent(client_factory, cid, proto, on=c)
    assert again.session_present is True
    got = again.expect_messages(2 * n, timeout=15)
    again.expect_no_message(0.5)
    ones = [m.payload for m in got if m.topic == t1]
    twos = [m.payload for m in got if m.topic == t2]
    assert ones == [f"a{i}".encode() for i in range(n)]
    assert twos == [f"b{i}".encode() for i in range(n)]
    # The session goes on: new messages reach C.
    pub.publish(t1, b"live", qos=1)
    assert again.expect_message().payload == b"live"


@pytest.mark.parametrize("qos", [1, 2])
def test_online_persistent_subscriber_fed_from_another_node(
        cluster3, client_factory, topic, qos):
    a, b, c = cluster3
    cid = cid_for("o")
    sub = persistent(client_factory, cid, "311", on=a)
    assert sub.subscribe(topic, qos) == [qos]
    pub = client_factory(b)
    wait_route(pub, sub, topic, qos=1)
    n = 50
    for i in range(n):
        pub.publish(topic, f"m{i}".encode(), qos=qos)
    got = sub.expect_messages(n)
    assert payloads(got) == [f"m{i}".encode() for i in range(n)]
    assert {m.qos for m in got} == {qos}
    sub.expect_no_message(0.5)


# ---------------------------------------------------------------- wills

def test_will_of_killed_node_published_by_survivor(cluster3, client_factory,
                                                   topic):
    a, b, c = cluster3
    will_topic = f"{topic}/will"
    watcher = client_factory(a)
    assert watcher.subscribe(will_topic, 1) == [1]
    for n in (a, b):  # whichever survivor publishes, the route is there
        wait_route(client_factory(n), watcher, will_topic)
    w = client_factory(c, cid_for("w"), will=(will_topic, b"gone", 1, False))
    # C broadcast the claim (with the will) before the route of this
    # subscription: once A and B route to it, they hold the will.
    assert w.subscribe(f"{topic}/w", 0) == [0]
    for n in (a, b):
        wait_route(client_factory(n), w, f"{topic}/w")
    started = time.monotonic()
    c.kill()
    m = watcher.expect_message(15)
    assert (m.topic, m.payload) == (will_topic, b"gone")
    took = time.monotonic() - started
    assert took < 12, f"will after {took:.1f} s"
    watcher.expect_no_message(1.0)  # one survivor publishes it, once


def session_offline(ports, prefix, cid):
    return redis_any(ports, "HGET", f"{prefix}{{c:{cid}}}:s", "on") == b"0"


@pytest.mark.parametrize("back", [False, True])
def test_will_delay_of_killed_node_honoured_by_survivor(
        cluster3, store, client_factory, topic, back):
    """A v5 session with Will Delay Interval 3 s is on C; C is killed. The
    survivor that ends the session (marks it offline) publishes the will
    only after the delay; if the client connects again (to B) within the
    delay, never."""
    a, b, c = cluster3
    ports, prefix = store_ports(store)
    will_topic = f"{topic}/will"
    watcher = client_factory(a)
    assert watcher.subscribe(will_topic, 1) == [1]
    for n in (a, b):
        wait_route(client_factory(n), watcher, will_topic)
    cid = cid_for("wd")
    client_factory(c, cid, protocol="5", expiry=300,
                   will=(will_topic, b"late", 1, False, 3))
    wait_until(lambda: redis_any(ports, "HGET", f"{prefix}{{c:{cid}}}:s",
                                 "on") == b"1", 5, "session stored online")
    c.kill()
    wait_until(lambda: session_offline(ports, prefix, cid), 15,
               "a survivor ends the dead node's session")
    ended = time.monotonic()
    if back:
        client_factory(b, cid, protocol="5", expiry=300, clean_start=False)
        watcher.expect_no_message(4.5)  # past the delay: no will
        return
    m = watcher.expect_message(10)
    assert (m.topic, m.payload) == (will_topic, b"late")
    waited = time.monotonic() - ended
    assert waited >= 2.0, f"will {waited:.1f} s after the session ended"
    watcher.expect_no_message(1.0)


# ---------------------------------------------------------------- shared

def wait_group_route(pub, members, topic, timeout=15.0):
    """Probe until one of `members` gets a probe (the route of the group's
    node is known where `pub` is)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tag = PROBE + uuid.uuid4().hex.encode()
        pub.publish(topic, tag, qos=0)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            for m in members:
                try:
                    if m.probes.get(timeout=0.02).payload == tag:
                        time.sleep(0.1)
                        for mm in members:
                            while not mm.probes.empty():
                                mm.probes.get_nowait()
                        return
                except queue.Empty:
                    pass
    raise AssertionError(f"no route for the group on {topic!r}")


def test_shared_group_on_one_node(cluster3, client_factory, topic):
    """Members of a group all on B, publisher on A: each message goes to
    exactly one member."""
    a, b, c = cluster3
    members = [client_factory(b) for _ in range(2)]
    for m in members:
        assert m.subscribe(f"$share/g/{topic}", 1) == [1]
    pub = client_factory(a)
    wait_group_route(pub, members, topic)
    n = 40
    for i in range(n):
        pub.publish(topic, f"s{i}".encode(), qos=1)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        for m in members:
            got += m.drain()
        time.sleep(0.05)
    time.sleep(0.3)
    for m in members:
        got += m.drain()
    assert sorted(payloads(got)) == sorted(f"s{i}".encode()
                                           for i in range(n))


def wait_group_routes(pub, members, topic, timeout=10):
    """Probe the group until every member got a probe: the publisher's node
    then knows each member's node."""
    seen = set()
    end = time.monotonic() + timeout
    i = 0
    while time.monotonic() < end and len(seen) < len(members):
        tag = f"probe-{i}".encode()
        i += 1
        pub.publish(topic, tag, qos=1)
        for k, m in enumerate(members):
            for x in m.drain():
                if x.payload.startswith(b"probe-"):
                    seen.add(k)
        time.sleep(0.05)
    assert len(seen) == len(members), f"no route to members {set(range(len(members))) - seen}"
    # every probe sent so far has reached exactly one member by now or
    # never will: drain what is still on its way once the last one lands
    last = f"probe-{i}".encode()
    pub.publish(topic, last, qos=1)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(x.payload == last for m in members for x in m.drain()):
            break
        time.sleep(0.02)
    for m in members:
        m.drain()


def collect(members, n, timeout=10):
    """Per member, what it receives until n messages arrived in all (probes
    left out), then for another half second: a duplicate would show up."""
    got = [[] for _ in members]
    deadline = time.monotonic() + timeout
    settle = None
    while time.monotonic() < deadline:
        for k, m in enumerate(members):
            got[k] += [x for x in m.drain()
                       if not x.payload.startswith(b"probe")]
        if settle is None and sum(map(len, got)) >= n:
            settle = time.monotonic() + 0.5
        if settle is not None and time.monotonic() >= settle:
            break
        time.sleep(0.02)
    return got


def group_exactly_once(pub, members, group, topic, n=30):
    """members join $share/<group>/<topic>; n QoS 1 messages from pub reach
    one member each (none lost, none twice), every member getting some."""
    for m in members:
        assert m.subscribe(f"$share/{group}/{topic}", 1) == [1]
    wait_group_routes(pub, members, topic)
    for i in range(n):
        pub.publish(topic, f"s{i}".encode(), qos=1)
    got = collect(members, n)
    everything = sorted(p for per in got for p in payloads(per))
    assert everything == sorted(f"s{i}".encode() for i in range(n))
    assert all(got), f"a member got nothing: {[len(g) for g in got]}"


@pytest.mark.parametrize("where", ["other-nodes", "with-publisher-node"])
def test_shared_group_spanning_nodes(cluster3, client_factory, topic, where):
    """Members on several nodes: each message reaches exactly one member of
    the group across the cluster, and every node with members gets some."""
    a, b, c = cluster3
    nodes = (b, c) if where == "other-nodes" else (a, b, c)
    members = [client_factory(n) for n in nodes]
    group_exactly_once(client_factory(a), members, "g", topic)


def test_shared_group_persistent_member_on_other_node(
        cluster3, client_factory, topic):
    """A persistent member online on B and a clean one on C, publisher on
    A at QoS 1: exactly one copy of each message, none lost."""
    a, b, c = cluster3
    pm = persistent(client_factory, cid_for("gp"), "311", on=b)
    cm = client_factory(c)
    group_exactly_once(client_factory(a), [pm, cm], "gp", topic)


def test_online_persistent_subscriber_fed_from_a_restarted_node(
        cluster3, client_factory, topic):
    """A persistent subscriber stays online on A while C restarts (SIGTERM,
    then the same id and port); messages published on the restarted C reach
    it at once, not only at its next reconnect."""
    a, b, c = cluster3
    sub = persistent(client_factory, cid_for("r"), "311", on=a)
    assert sub.subscribe(topic, 1) == [1]
    c.stop()
    c.restart()
    cluster3.wait_nodes(c, 3)
    pub = client_factory(c)
    for i in range(10):
        pub.publish(topic, f"m{i}".encode(), qos=1)  # queued in the store
    got = sub.expect_messages(10, timeout=5)
    assert payloads(got) == [f"m{i}".encode() for i in range(10)]


@pytest.mark.parametrize("qos", [1, 2])
def test_online_persistent_subscriber_fed_from_two_nodes_at_once(
        cluster3, client_factory, topic, qos):
    """Publishers on A and on B feed one persistent subscriber online on A
    at the same time: the store queue entries get their ids in one order,
    the local deliveries and B's notifications reach A in another; every
    message must still be delivered while the subscriber stays online."""
    a, b, c = cluster3
    sub = persistent(client_factory, cid_for("two"), "311", on=a)
    assert sub.subscribe(f"{topic}/#", qos) == [qos]
    pubs = {"a": client_factory(a), "b": client_factory(b)}
    for p in pubs.values():
        wait_route(p, sub, f"{topic}/probe", qos=1)
    n = 100
    infos = []
    for i in range(n):  # interleaved, not waiting for each ack
        for name, p in pubs.items():
            infos.append(p.publish(f"{topic}/{name}", f"{name}{i}".encode(),
                                   qos=qos, wait=False))
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    want = {f"{x}{i}".encode() for x in pubs for i in range(n)}
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(set(got)) < len(want):
        got += payloads(sub.drain())
        time.sleep(0.05)
    missing = sorted(want - set(got))
    assert not missing, (f"{len(missing)} of {len(want)} acknowledged "
                         f"messages not delivered to the online subscriber, "
                         f"e.g. {missing[:10]}")
    if qos == 2:
        assert len(got) == len(want), "QoS 2 duplicates"


@pytest.mark.parametrize("then", ["restart", "cleanup"])
def test_sessions_moved_off_a_killed_node_stay_intact(
        cluster_factory, store, client_factory, topic, then):
    """Two persistent clients are on C; C is killed right after a heartbeat
    and they resume their sessions at once, one on A, one on B. Then C
    comes back ("restart"), or a survivor cleans C up ("cleanup"; whichever
    survivor wins the clean-up, one session sits on the other). Either way
    the sessions must stay theirs: not marked offline (and so not expired
    after persistent_client_expiration while connected), still fed from
    other nodes, present on a later reconnect."""
    cl = cluster_factory(store, persistent_client_expiration=2)
    a, b, c = cl
    cids = [cid_for("mva"), cid_for("mvb")]
    for cid in cids:
        s = persistent(client_factory, cid, "311", on=c)
        assert s.subscribe(topic, 1) == [1]
    ports, prefix = store_ports(store)
    alive = f"{prefix}node:{c.node_id}:alive"
    wait_until(lambda: redis_any(ports, "PTTL", alive) >= 4900, 3,
               "C's heartbeat")
    c.kill()  # its last heartbeat was a few ms ago
    moved = []
    for cid, node in zip(cids, (a, b)):
        s = persistent(client_factory, cid, "311", on=node)
        assert s.session_present is True
        moved.append(s)
    if then == "restart":
        c.restart()
        cl.wait_nodes(c, 3)
    else:
        cl.wait_nodes(a, 2)
        cl.wait_nodes(b, 2)
    time.sleep(4)  # time must pass: beyond the expiry of an offline session
    pub = client_factory(c if then == "restart" else a)
    for i in range(5):
        pub.publish(topic, f"k{i}".encode(), qos=1)
    for s in moved:
        assert payloads(s.expect_messages(5, timeout=5)) == [
            f"k{i}".encode() for i in range(5)]
    for s, cid in zip(moved, cids):
        s.disconnect()
        again = persistent(client_factory, cid, "311", on=a)
        assert again.session_present is True, f"{cid}: session gone"
        again.disconnect()
