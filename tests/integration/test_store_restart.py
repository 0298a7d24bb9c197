"""Persistent state in a Redis-protocol store outlives the broker process:
a new broker on the same store (standalone redis-server and a 3-master
Redis Cluster) resumes sessions, subscriptions, queued and in-flight QoS 1/2
messages, inbound QoS 2 state and retained messages, whether the previous
process stopped gracefully (SIGTERM) or was killed (SIGKILL)."""

import pytest

from harness import cid_for, raw
from harness.broker import bounce
from harness.client import persistent
from harness.redis import durable_only

pytestmark = [pytest.mark.starling_only, durable_only]


@pytest.fixture
def broker(broker_factory, store_url):
    return broker_factory(store=store_url)


# ---------------------------------------------------------------- sessions

@pytest.mark.parametrize("proto", ["311", "5"])
def test_offline_session_and_queue_survive_restart(
        broker, client_factory, topic, how, proto):
    """Messages queued for an offline session before the restart are all
    delivered after it, QoS 2 exactly once, and the subscriptions still
    match new publications without a new SUBSCRIBE."""
    cid = cid_for("surv")
    t1, t2 = f"{topic}/one", f"{topic}/two"
    sub = persistent(client_factory, cid, proto, fresh=True)
    assert sub.session_present is False
    assert sub.subscribe([(t1, 1), (t2, 2)]) == [1, 2]
    sub.disconnect()
    pub = client_factory(protocol=proto)
    for i in range(5):
        pub.publish(t1, f"a{i}".encode(), qos=1)  # waits for PUBACK
        pub.publish(t2, f"b{i}".encode(), qos=2)  # waits for PUBCOMP
    pub.disconnect()

    bounce(broker, how)

    again = persistent(client_factory, cid, proto)
    assert again.session_present is True
    got = again.expect_messages(10)
    assert [(m.payload, m.qos) for m in got if m.topic == t1] == \
        [(f"a{i}".encode(), 1) for i in range(5)]
    assert [(m.payload, m.qos) for m in got if m.topic == t2] == \
        [(f"b{i}".encode(), 2) for i in range(5)]
    again.expect_no_message(0.5)
    # The subscriptions live on: no SUBSCRIBE since the restart.
    pub = client_factory(protocol=proto)
    pub.publish(t1, b"live1", qos=1)
    pub.publish(t2, b"live2", qos=2)
    live = again.expect_messages(2)
    assert sorted((m.topic, m.payload, m.qos) for m in live) == \
        [(t1, b"live1", 1), (t2, b"live2", 2)]
    again.expect_no_message(0.3)


@pytest.mark.parametrize("proto", ["311", "5"])
def test_session_online_at_crash_is_queued_for_after_restart(
        broker, client_factory, topic, proto):
    """The subscriber is connected when the broker is killed; the new
    broker queues what is published before the subscriber comes back
    (its subscriptions are known from the store alone)."""
    cid = cid_for("crash-online")
    sub = persistent(client_factory, cid, proto, fresh=True)
    assert sub.subscribe([(topic, 2)]) == [2]

    bounce(broker, "kill")
    assert sub.wait_disconnected(5)
    sub.close()

    pub = client_factory(protocol=proto)
    pub.publish(topic, b"q1", qos=1)
    pub.publish(topic, b"q2", qos=2)
    again = persistent(client_factory, cid, proto)
    assert again.session_present is True
    got = again.expect_messages(2)
    assert [(m.payload, m.qos) for m in got] == [(b"q1", 1), (b"q2", 2)]
    again.expect_no_message(0.5)


# ---------------------------------------------------------------- in flight

@pytest.mark.parametrize("proto", ["311", "5"])
def test_unacknowledged_outbound_resumed_after_restart(
        broker, raw_session, client_factory, topic, how, proto):
    """Outbound flows in progress when the broker ends are resumed by the
    next broker: an unacknowledged QoS 1 PUBLISH and a QoS 2 PUBLISH
    without PUBREC are sent again with DUP=1 and the same packet id; a QoS
    2 flow that had reached PUBREC continues with PUBREL. In their original
    order, and not again once acknowledged."""
    cid = cid_for("inflight")
    t1, t2 = f"{topic}/one", f"{topic}/two"
    s = raw_session(proto)
    assert s.connect(cid, fresh=True).rc == 0
    assert s.subscribe([(t1, 1), (t2, 2)]) == [1, 2]
    pub = client_factory(protocol=proto)
    pub.publish(t1, b"a", qos=1)
    pub.publish(t2, b"b", qos=2)
    pub.publish(t2, b"c", qos=2)
    a, b, c = (s.expect(raw.PUBLISH) for _ in range(3))
    assert [(p.payload, p.qos, p.dup) for p in (a, b, c)] == \
        [(b"a", 1, False), (b"b", 2, False), (b"c", 2, False)]
    s.ack(raw.PUBREC, b.pid)
    assert s.expect(raw.PUBREL).pid == b.pid
    # a: no PUBACK; b: no PUBCOMP; c: no PUBREC. The broker records the
    # packet ids and the PUBREC without waiting for the store (see
    # test_store_acks.py); wait until the store has them.
    s.store_barrier()

    bounce(broker, how)

    s2 = raw_session(proto)
    ack = s2.connect(cid)
    assert (ack.rc, ack.session_present) == (0, True)
    resent = [s2.recv() for _ in range(3)]
    summary = [(p.type, p.pid, getattr(p, "dup", None),
                getattr(p, "payload", None)) for p in resent]
    assert summary == [(raw.PUBLISH, a.pid, True, b"a"),
                       (raw.PUBREL, b.pid, None, None),
                       (raw.PUBLISH, c.pid, True, b"c")]
    assert resent[0].qos == 1 and resent[2].qos == 2
    assert resent[1].flags == 0x2
    s2.ack(raw.PUBACK, a.pid)
    s2.ack(raw.PUBCOMP, b.pid)
    s2.ack(raw.PUBREC, c.pid)
    assert s2.expect(raw.PUBREL).pid == c.pid
    s2.ack(raw.PUBCOMP, c.pid)
    s2.store_barrier()

    # Everything is acknowledged, in the store too: nothing comes back.
    bounce(broker, how)
    s3 = raw_session(proto)
    ack = s3.connect(cid)
    assert (ack.rc, ack.session_present) == (0, True)
    assert s3.ping() == []
    s3.expect_nothing(0.3)


@pytest.mark.parametrize("proto", ["311", "5"])
@pytest.mark.parametrize("resend", [False, True], ids=["pubrel", "dup+pubrel"])
def test_inbound_qos2_state_survives_restart(
        broker, raw_session, client_factory, topic, proto, resend):
    """Publisher: QoS 2 PUBLISH pid 7, PUBREC; the broker is killed; a new
    broker; the publisher resumes its session (optionally sending the
    PUBLISH again with DUP=1, as a client that missed the PUBREC would),
    then PUBREL 7 -> PUBCOMP 7. The subscriber gets the message once, and
    packet id 7 is free again afterwards (after one more restart)."""
    sub_cid, pub_cid = cid_for("q2sub"), cid_for("q2pub")
    sub = persistent(client_factory, sub_cid, proto, fresh=True)
    assert sub.subscribe(topic, 2) == [2]
    sub.disconnect()

    p = raw_session(proto)
    assert p.connect(pub_cid, fresh=True).rc == 0
    p.publish(topic, b"once", qos=2, pid=7)
    rec = p.expect(raw.PUBREC)
    assert (rec.pid, getattr(rec, "rc", 0)) == (7, 0)
    # The broker stores packet id 7 without waiting (see
    # test_store_acks.py): wait until the store has it.
    p.store_barrier()

    bounce(broker, "kill")

    p = raw_session(proto)
    ack = p.connect(pub_cid)
    assert (ack.rc, ack.session_present) == (0, True)
    if resend:
        p.publish(topic, b"once", qos=2, pid=7, dup=True)
        rec = p.expect(raw.PUBREC)
        assert (rec.pid, getattr(rec, "rc", 0)) == (7, 0)
    p.ack(raw.PUBREL, 7)
    comp = p.expect(raw.PUBCOMP)
    assert (comp.pid, getattr(comp, "rc", 0)) == (7, 0)
    p.store_barrier()  # the release of id 7 is stored too

    # Packet id 7 is released in the store: after another crash, a new
    # message with id 7 is a new message.
    bounce(broker, "kill")
    p = raw_session(proto)
    assert p.connect(pub_cid).session_present is True
    p.publish(topic, b"again", qos=2, pid=7)
    assert p.expect(raw.PUBREC).pid == 7
    p.ack(raw.PUBREL, 7)
    assert p.expect(raw.PUBCOMP).pid == 7

    again = persistent(client_factory, sub_cid, proto)
    assert again.session_present is True
    got = again.expect_messages(2)
    assert [(m.payload, m.qos) for m in got] == [(b"once", 2), (b"again", 2)]
    again.expect_no_message(0.5)


# ---------------------------------------------------------------- retained

def test_retained_messages_survive_restart(broker, client_factory, topic,
                                           how):
    """A retained message outlives the broker; clearing it (empty payload)
    does too."""
    pub = client_factory()
    pub.publish(f"{topic}/r1", b"kept", qos=1, retain=True)
    pub.publish(f"{topic}/r2", b"other", qos=1, retain=True)
    pub.disconnect()

    bounce(broker, how)

    s = client_factory()
    assert s.subscribe(f"{topic}/#", 1) == [1]
    got = s.expect_messages(2)
    assert sorted((m.topic, m.payload, m.qos, m.retain) for m in got) == \
        [(f"{topic}/r1", b"kept", 1, True), (f"{topic}/r2", b"other", 1, True)]
    s.expect_no_message(0.3)
    s.disconnect()
    pub = client_factory()
    pub.publish(f"{topic}/r1", b"", qos=1, retain=True)
    pub.disconnect()

    bounce(broker, how)

    s = client_factory()
    assert s.subscribe(f"{topic}/#", 1) == [1]
    m = s.expect_message()
    assert (m.topic, m.payload, m.retain) == (f"{topic}/r2", b"other", True)
    s.expect_no_message(0.5)


@pytest.mark.parametrize("proto", ["311", "5"])
def test_retained_sent_for_a_subscription_is_resent_after_restart(
        broker, raw_session, client_factory, topic, how, proto):
    """A persistent session subscribes at QoS 1 and gets a retained message
    it does not acknowledge; the broker ends. The next broker sends it
    again (DUP=1, same packet id, RETAIN=1) to the resumed session: it was
    queued like any QoS 1 delivery of a stored session."""
    pub = client_factory()
    pub.publish(topic, b"kept", qos=1, retain=True)
    pub.disconnect()
    cid = cid_for("rq")
    s = raw_session(proto)
    assert s.connect(cid, fresh=True).rc == 0
    assert s.subscribe([(topic, 1)]) == [1]
    first = s.expect(raw.PUBLISH)
    assert (first.payload, first.qos, first.retain, first.dup) == \
        (b"kept", 1, True, False)
    s.store_barrier()  # no PUBACK; the packet id is stored

    bounce(broker, how)

    s = raw_session(proto)
    assert s.connect(cid).session_present is True
    again = s.expect(raw.PUBLISH)
    assert (again.payload, again.pid, again.dup, again.retain) == \
        (b"kept", first.pid, True, True)
    s.ack(raw.PUBACK, again.pid)
    s.store_barrier()
    s.expect_nothing(0.3)
