"""Persistent sessions (clean session 0): offline queueing, session present,
subscriptions kept, queue limits, redelivery of unacknowledged messages."""
import pytest

from harness import raw


def test_offline_queue_delivered_on_reconnect(client_factory, topic, v3):
    cid = f"off-{v3}"
    sub = client_factory(cid, protocol=v3, clean_session=False)
    assert sub.session_present is False
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = client_factory(protocol=v3)
    n = 10
    for i in range(n):
        pub.publish(topic, f"q{i}".encode(), qos=1)
    again = client_factory(cid, protocol=v3, clean_session=False,
                           connect=False)
    rc, present = again.connect()
    assert rc == 0
    if v3 == "311":
        assert present  # 3.1 CONNACKs have no session present flag
    got = again.expect_messages(n)
    assert [m.payload for m in got] == [f"q{i}".encode() for i in range(n)]
    assert all(m.qos == 1 for m in got)
    again.expect_no_message(0.3)


def test_offline_qos2_queued(client_factory, topic):
    sub = client_factory("off-q2", clean_session=False)
    sub.subscribe(topic, 2)
    sub.disconnect()
    pub = client_factory()
    for i in range(3):
        pub.publish(topic, f"{i}".encode(), qos=2)
    again = client_factory("off-q2", clean_session=False)
    assert again.session_present
    got = again.expect_messages(3)
    assert [(m.payload, m.qos) for m in got] == [(b"0", 2), (b"1", 2),
                                                 (b"2", 2)]


def test_subscriptions_survive_reconnect(client_factory, topic):
    a = client_factory("keep-subs", clean_session=False)
    a.subscribe(topic, 1)
    a.disconnect()
    b = client_factory("keep-subs", clean_session=False)
    assert b.session_present
    client_factory().publish(topic, b"live", qos=1)
    assert b.expect_message().payload == b"live"


def test_clean_session_discards_state(client_factory, topic):
    a = client_factory("clean-me", clean_session=False)
    a.subscribe(topic, 1)
    a.disconnect()
    client_factory().publish(topic, b"stale", qos=1)
    b = client_factory("clean-me", clean_session=True)
    assert b.session_present is False
    b.expect_no_message(0.3)
    client_factory().publish(topic, b"after", qos=1)
    b.expect_no_message(0.3)  # the old subscription is gone too
    b.disconnect()
    # And clean session 1 leaves nothing behind.
    c = client_factory("clean-me", clean_session=False)
    assert c.session_present is False


def test_clean_session_subscriptions_not_kept(client_factory, topic):
    a = client_factory("clean-subs", clean_session=True)
    a.subscribe(topic, 1)
    a.disconnect()
    client_factory().publish(topic, b"x", qos=1)
    b = client_factory("clean-subs", clean_session=False)
    assert b.session_present is False
    b.expect_no_message(0.3)


def offline_publish(client_factory, topic, cid, n):
    sub = client_factory(cid, clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = client_factory()
    for i in range(n):
        pub.publish(topic, str(i).encode(), qos=1)
    again = client_factory(cid, clean_session=False)
    assert again.session_present
    # A live marker after the queue: everything before it was queued.
    pub.publish(topic, b"end", qos=1)
    got = []
    while True:
        m = again.expect_message()
        if m.payload == b"end":
            return got
        got.append(m.payload)


@pytest.mark.starling_only
@pytest.mark.broker(max_queued_messages=5, queue_drop="drop_new")
def test_queue_limit_drop_new(client_factory, topic):
    got = offline_publish(client_factory, topic, "qlimit-new", 10)
    assert got == [str(i).encode() for i in range(5)]


@pytest.mark.starling_only
@pytest.mark.broker(max_queued_messages=5, queue_drop="drop_oldest")
def test_queue_limit_drop_oldest(client_factory, topic):
    got = offline_publish(client_factory, topic, "qlimit-old", 10)
    assert got == [str(i).encode() for i in range(5, 10)]


# ------------------------------------------------------------ redelivery

def persistent_raw(raw_factory, cid, topic, qos):
    r = raw_factory()
    r.connect(cid, clean=False)
    assert r.subscribe([(topic, qos)]) == [qos]
    return r


def reconnect(raw_factory, cid):
    r = raw_factory()
    ack = r.connect(cid, clean=False)
    assert ack.rc == 0
    assert ack.session_present
    return r


@pytest.mark.parametrize("qos", [1, 2])
def test_unacked_publish_redelivered_with_dup(raw_factory, client_factory,
                                              topic, qos):
    cid = f"redeliver-{qos}"
    r = persistent_raw(raw_factory, cid, topic, qos)
    client_factory().publish(topic, b"unacked", qos=qos)
    p = r.expect(raw.PUBLISH)
    assert (p.payload, p.qos, p.dup) == (b"unacked", qos, False)
    r.close()  # no ack, no DISCONNECT
    r = reconnect(raw_factory, cid)
    p2 = r.expect(raw.PUBLISH)
    assert (p2.payload, p2.qos) == (b"unacked", qos)
    assert p2.dup is True
    assert p2.pid == p.pid
    if qos == 1:
        r.send(raw.puback(p2.pid))
    else:
        r.send(raw.pubrec(p2.pid))
        assert r.expect(raw.PUBREL).pid == p2.pid
        r.send(raw.pubcomp(p2.pid))
    r.send(raw.disconnect())
    assert r.wait_closed(5)
    # Acknowledged now: not sent a third time.
    r = reconnect(raw_factory, cid)
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)
    r.expect_nothing(0.3)


def test_qos2_pubrel_resent_after_pubrec(raw_factory, client_factory, topic):
    cid = "redeliver-rel"
    r = persistent_raw(raw_factory, cid, topic, 2)
    client_factory().publish(topic, b"half", qos=2)
    p = r.expect(raw.PUBLISH)
    r.send(raw.pubrec(p.pid))
    assert r.expect(raw.PUBREL).pid == p.pid
    r.close()  # PUBCOMP never sent
    r = reconnect(raw_factory, cid)
    rel = r.recv()
    assert rel.type == raw.PUBREL, f"expected PUBREL, got {rel!r}"
    assert rel.pid == p.pid
    assert rel.flags == 0x2
    r.send(raw.pubcomp(p.pid))
    r.send(raw.disconnect())
    assert r.wait_closed(5)
    r = reconnect(raw_factory, cid)
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)  # the flow is over: nothing before PINGRESP
    r.expect_nothing(0.3)


def test_redelivery_keeps_order(raw_factory, client_factory, topic):
    cid = "redeliver-order"
    r = persistent_raw(raw_factory, cid, topic, 1)
    pub = client_factory()
    for i in range(5):
        pub.publish(topic, str(i).encode(), qos=1)
    first = [r.expect(raw.PUBLISH) for _ in range(5)]
    r.send(raw.puback(first[0].pid))
    r.send(raw.puback(first[1].pid))
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)  # the acks were processed
    r.close()
    r = reconnect(raw_factory, cid)
    again = [r.expect(raw.PUBLISH) for _ in range(3)]
    assert [p.payload for p in again] == [b"2", b"3", b"4"]
    assert [p.pid for p in again] == [p.pid for p in first[2:]]
    assert all(p.dup for p in again)
