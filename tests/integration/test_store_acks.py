"""What the broker tells a subscriber about an outbound QoS flow must
already be in the store when it says it, or a crash makes the next broker
contradict it. Each test stalls the store (SIGSTOP) at the chosen moment,
lets the client take the flow one step further, then kills the broker and
the stalled store (so whatever the store had not read is lost, as when
the broker dies with the request still in its output buffer), and restarts
both on the same data."""

import pytest

from harness import cid_for, raw
from harness.redis import redis_url

pytestmark = pytest.mark.starling_only


@pytest.fixture
def store(redis_factory):
    return redis_factory(appendonly=True)


@pytest.fixture
def broker(request, broker_factory, store):
    """A broker on `store`, with the keys of @pytest.mark.broker."""
    marker = request.node.get_closest_marker("broker")
    keys = dict(marker.kwargs) if marker else {}
    return broker_factory(store=redis_url(store), **keys)


def crash_both(broker, store):
    """Kill the broker, then the stalled store; start both again."""
    broker.kill()
    store.kill()
    store.start()
    broker.restart()


def poll(s, ptype, timeout):
    """The next packet if it is of type ptype and comes within timeout;
    None when nothing comes."""
    try:
        pkt = s.recv(timeout)
    except TimeoutError:
        return None
    assert pkt.type == ptype, f"expected {raw.NAMES[ptype]}, got {pkt!r}"
    return pkt


@pytest.mark.parametrize("proto", ["311", "5"])
def test_pubrel_only_after_pubrec_state_is_stored(
        broker, store, raw_session, client_factory, topic, proto):
    b = broker
    cid = cid_for("rel")
    s = raw_session(proto, on=b)
    assert s.connect(cid, fresh=True).rc == 0
    assert s.subscribe([(topic, 2)]) == [2]
    client_factory(protocol=proto, on=b).publish(topic, b"x", qos=2)
    p = s.expect(raw.PUBLISH)
    s.store_barrier()  # the packet id is stored
    store.pause()
    s.ack(raw.PUBREC, p.pid)
    rel = poll(s, raw.PUBREL, 1.0)  # while the store cannot take anything
    crash_both(b, store)

    s2 = raw_session(proto, on=b)
    ack = s2.connect(cid)
    assert (ack.rc, ack.session_present) == (0, True)
    first = s2.recv()
    if rel is not None:
        assert (first.type, first.pid) == (raw.PUBREL, p.pid), \
            f"PUBREL {p.pid} was sent before the crash; now {first!r}"
    else:
        assert (first.type, first.pid, first.dup) == \
            (raw.PUBLISH, p.pid, True)


@pytest.mark.parametrize("proto", ["311", "5"])
@pytest.mark.broker(max_inflight_messages=1)
def test_resend_after_crash_is_a_duplicate_with_its_packet_id(
        broker, store, raw_session, client_factory, topic, proto):
    """Window of one message: m2 waits until m1 is acknowledged. The store
    stalls, the client acknowledges m1, the broker sends m2; crash. The
    next broker must resend m2 with DUP=1 and the packet id the client
    has already seen (m1 may come again too: its PUBACK was lost)."""
    b = broker
    cid = cid_for("pid")
    s = raw_session(proto, on=b)
    assert s.connect(cid, fresh=True).rc == 0
    assert s.subscribe([(topic, 2)]) == [2]
    pub = client_factory(protocol=proto, on=b)
    pub.publish(topic, b"m1", qos=1)
    pub.publish(topic, b"m2", qos=2)
    m1 = s.expect(raw.PUBLISH)
    assert m1.payload == b"m1"
    s.store_barrier()
    store.pause()
    s.ack(raw.PUBACK, m1.pid)
    m2 = poll(s, raw.PUBLISH, 1.0)
    crash_both(b, store)

    s2 = raw_session(proto, on=b)
    ack = s2.connect(cid)
    assert (ack.rc, ack.session_present) == (0, True)
    p = s2.expect(raw.PUBLISH)
    if p.payload == b"m1":
        assert (p.pid, p.dup) == (m1.pid, True)
        s2.ack(raw.PUBACK, p.pid)
        p = s2.expect(raw.PUBLISH)
    assert p.payload == b"m2"
    if m2 is not None:
        assert (p.pid, p.dup) == (m2.pid, True), \
            f"m2 was sent as {m2!r} before the crash; now {p!r}"


@pytest.mark.parametrize("proto", ["311", "5"])
def test_pubcomp_only_after_inbound_id_is_released(
        broker, store, raw_session, client_factory, topic, proto):
    sub_cid, pub_cid = cid_for("q2sub"), cid_for("q2pub")
    sub = client_factory(sub_cid, clean_session=False)
    assert sub.subscribe(topic, 2) == [2]
    sub.disconnect()
    p = raw_session(proto)
    assert p.connect(pub_cid, fresh=True).rc == 0
    p.publish(topic, b"first", qos=2, pid=7)
    assert p.expect(raw.PUBREC).pid == 7
    p.store_barrier()  # packet id 7 is stored as awaiting PUBREL
    store.pause()
    p.ack(raw.PUBREL, 7)
    comp = poll(p, raw.PUBCOMP, 1.0)
    crash_both(broker, store)

    p = raw_session(proto)
    ack = p.connect(pub_cid)
    assert (ack.rc, ack.session_present) == (0, True)
    if comp is None:  # the flow is not over: finish it
        p.ack(raw.PUBREL, 7)
        assert p.expect(raw.PUBCOMP).pid == 7
    p.publish(topic, b"second", qos=2, pid=7)  # a new message, id 7 again
    assert p.expect(raw.PUBREC).pid == 7
    p.ack(raw.PUBREL, 7)
    assert p.expect(raw.PUBCOMP).pid == 7
    again = client_factory(sub_cid, clean_session=False)
    assert again.session_present is True
    got = again.expect_messages(2)
    assert [m.payload for m in got] == [b"first", b"second"]
