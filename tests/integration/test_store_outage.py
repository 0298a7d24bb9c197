"""The broker while its store (a standalone redis-server of the test's
own) is down or stalled: clean-session traffic keeps flowing, nothing that
needs the store is acknowledged as a success, and the broker recovers by
itself when the store comes back."""
import time

import pytest

from harness import cid_for, raw
from harness.client import persistent
from harness.raw import v5
from harness.redis import redis_url

pytestmark = pytest.mark.starling_only

TIMEOUT_MS = 1000  # the store's per-request deadline in these tests


@pytest.fixture
def store(redis_factory):
    """A redis-server of this test alone, with an append-only file written
    before every reply (a restart on the same port and directory keeps
    everything)."""
    return redis_factory(appendonly=True)


@pytest.fixture
def broker(broker_factory, store):
    return broker_factory(store=redis_url(store, timeout=TIMEOUT_MS))


def offline_persistent(client_factory, cid, topic, proto="311"):
    """A persistent session subscribed to topic at QoS 1, then offline."""
    c = persistent(client_factory, cid, proto, fresh=True)
    assert c.subscribe(topic, 1) == [1]
    c.disconnect()


def store_down(broker, store):
    mark = broker.log_mark()
    store.kill()
    assert broker.wait_log(r"store: connection to .* lost", since=mark), \
        "the broker did not notice the store going away"


def store_up(broker, store):
    mark = broker.log_mark()
    store.start()
    # Reconnection backs off up to 2 s between attempts.
    assert broker.wait_log(r"store: connection to .* restored", timeout=5,
                           since=mark), "the broker did not reconnect"


@pytest.mark.parametrize("proto", ["311", "5"])
def test_clean_sessions_keep_talking_while_store_down(
        broker, store, client_factory, topic, proto):
    a = client_factory(protocol=proto)
    b = client_factory(protocol=proto)
    assert b.subscribe([(f"{topic}/0", 0), (f"{topic}/1", 1)]) == [0, 1]
    store_down(broker, store)
    for i in range(5):
        a.publish(f"{topic}/0", f"z{i}".encode(), qos=0)
    got = b.expect_messages(5)
    assert [m.payload for m in got] == [f"z{i}".encode() for i in range(5)]
    # QoS 1 between clean sessions needs no store either.
    a.publish(f"{topic}/1", b"one", qos=1, timeout=TIMEOUT_MS / 1000 + 1)
    assert b.expect_message().payload == b"one"
    # And a new clean session can connect.
    c = client_factory(protocol=proto)
    assert c.subscribe(f"{topic}/0", 0) == [0]
    a.publish(f"{topic}/0", b"new", qos=0)
    assert c.expect_message().payload == b"new"


@pytest.mark.parametrize("qos", [1, 2])
def test_v5_publish_for_offline_session_refused_while_store_down(
        broker, store, client_factory, raw_factory, topic, qos):
    """The message must go to an offline session's queue in the store: the
    publisher gets PUBACK / PUBREC 0x80 (Unspecified error) once the store
    request misses its deadline. When the store is back, the same message
    published again is accepted and the session gets it once."""
    cid = cid_for("off5")
    offline_persistent(client_factory, cid, topic)
    pub, _ = v5.v5connect(raw_factory, cid_for("pub5"))
    store_down(broker, store)
    start = time.monotonic()
    pid = pub.pid()
    pub.send(v5.publish(topic, b"retry me", qos=qos, pid=pid))
    ack = pub.expect_reply(raw.PUBACK if qos == 1 else raw.PUBREC,
                           timeout=TIMEOUT_MS / 1000 + 2)
    assert (ack.pid, ack.rc) == (pid, v5.RC_UNSPECIFIED)
    assert time.monotonic() - start < TIMEOUT_MS / 1000 + 1.5

    store_up(broker, store)
    ack = pub.publish(topic, b"retry me", qos=qos)  # the whole flow
    assert ack.rc == 0, f"{ack!r} after the store came back"
    again = client_factory(cid, clean_session=False)
    assert again.session_present is True
    m = again.expect_message()
    assert (m.payload, m.qos) == (b"retry me", 1)
    again.expect_no_message(0.5)


def test_v3_publish_for_offline_session_not_acked_while_store_down(
        broker, store, client_factory, raw_factory, topic):
    offline_persistent(client_factory, cid_for("off3"), topic)
    pub = raw_factory()
    assert pub.connect(cid_for("pub3")).rc == 0
    store_down(broker, store)
    pub.send(raw.publish(topic, b"lost?", qos=1, pid=1))
    pub.expect_nothing(TIMEOUT_MS / 1000 + 1)
    # The connection is still usable.
    pub.send(raw.pingreq())
    pub.expect(raw.PINGRESP)


@pytest.mark.parametrize("proto", ["311", "5"])
def test_persistent_connect_refused_while_store_down(
        broker, store, raw_session, proto):
    store_down(broker, store)
    s = raw_session(proto)
    start = time.monotonic()
    ack = s.connect(cid_for("down"), fresh=True)
    assert ack.rc == (0x88 if proto == "5" else 3), \
        f"CONNACK {ack.rc:#x}, expected Server unavailable"
    assert time.monotonic() - start < TIMEOUT_MS / 1000 + 1.5
    assert s.raw.wait_closed(2)


@pytest.mark.parametrize("proto", ["311", "5"])
def test_broker_recovers_when_store_returns(
        broker, store, client_factory, raw_factory, raw_session, topic,
        proto):
    """Store killed and restarted (same port and data): without a broker
    restart, sessions are claimed again, the old ones are present, and
    QoS 1 publications are queued and acknowledged. What failed during the
    outage was not queued behind the publisher's back."""
    cid = cid_for("back")
    offline_persistent(client_factory, cid, topic, proto)
    store_down(broker, store)
    pub = raw_session(proto)
    ack = pub.connect(cid_for("pub-down"), fresh=True)
    assert ack.rc != 0  # store down: refused
    # A v3 QoS 1 PUBLISH from a clean session, refused by silence.
    clean = raw_factory()
    assert clean.connect(cid_for("clean"), clean=True).rc == 0
    clean.send(raw.publish(topic, b"during", qos=1, pid=1))
    clean.expect_nothing(TIMEOUT_MS / 1000 + 0.5)

    store_up(broker, store)

    # A new persistent session can be claimed.
    fresh = raw_session(proto)
    ack = fresh.connect(cid_for("new"), fresh=True)
    assert (ack.rc, ack.session_present) == (0, False)
    # The old one is still there (its data survived in the store).
    pub = client_factory(protocol=proto)
    pub.publish(topic, b"after", qos=1)
    again = raw_session(proto)
    ack = again.connect(cid)
    assert (ack.rc, ack.session_present) == (0, True)
    p = again.expect(raw.PUBLISH)
    assert (p.payload, p.qos) == (b"after", 1)
    again.ack(raw.PUBACK, p.pid)
    assert again.ping() == []


# ---------------------------------------------------------------- start-up

def prepare_stored_state(broker, client_factory, topic):
    """An offline persistent session subscribed to topic/q and a retained
    message on topic/r, in the store of a broker that then stops."""
    cid = cid_for("boot")
    offline_persistent(client_factory, cid, f"{topic}/q")
    client_factory().publish(f"{topic}/r", b"kept", qos=1, retain=True)
    broker.stop()
    return cid


def test_publish_while_store_stalls_at_start_is_not_lost(
        broker, store, client_factory, raw_factory, topic):
    cid = prepare_stored_state(broker, client_factory, topic)
    store.pause()  # the next broker's start-up loads wait
    try:
        broker.restart()
        # The node accepts clients only once its loads are done: the
        # CONNECT and the PUBLISH wait in the socket meanwhile.
        pub = raw_factory()
        pub.send(raw.connect(cid_for("early"), clean=True))
        pub.send(raw.publish(f"{topic}/q", b"early", qos=1, pid=1))
        time.sleep(0.3)  # the store stays stalled for a while: the point
    finally:
        store.resume()
    assert pub.expect(raw.CONNACK, timeout=TIMEOUT_MS / 1000 + 2).rc == 0
    assert pub.expect(raw.PUBACK, timeout=TIMEOUT_MS / 1000 + 2).pid == 1
    again = client_factory(cid, clean_session=False)
    assert again.session_present is True
    assert again.expect_message().payload == b"early"


def test_subscribe_while_store_stalls_at_start_gets_retained(
        broker, store, client_factory, raw_factory, topic):
    prepare_stored_state(broker, client_factory, topic)
    store.pause()
    try:
        broker.restart()
        # Accepting starts once the retained messages are loaded.
        s = raw_factory()
        s.send(raw.connect(cid_for("early-sub"), clean=True))
        s.send(raw.subscribe(1, [(f"{topic}/r", 1)]))
        time.sleep(0.3)
    finally:
        store.resume()
    assert s.expect(raw.CONNACK, timeout=TIMEOUT_MS / 1000 + 2).rc == 0
    assert s.expect(raw.SUBACK, timeout=TIMEOUT_MS / 1000 + 2).codes == [1]
    m = s.expect(raw.PUBLISH, timeout=TIMEOUT_MS / 1000 + 2)
    assert (m.payload, m.retain) == (b"kept", True)


@pytest.mark.parametrize("what", ["queue", "retained"])
def test_broker_started_while_store_down_catches_up(
        broker, store, client_factory, topic, what):
    cid = prepare_stored_state(broker, client_factory, topic)
    store.kill()
    broker.restart()  # the store is down: its loads fail after 1 s
    time.sleep(TIMEOUT_MS / 1000 + 0.5)
    store_up(broker, store)
    if what == "queue":
        client_factory().publish(f"{topic}/q", b"later", qos=1)
        again = client_factory(cid, clean_session=False)
        assert again.session_present is True
        assert again.expect_message().payload == b"later"
    else:
        s = client_factory()
        assert s.subscribe(f"{topic}/r", 1) == [1]
        m = s.expect_message()
        assert (m.payload, m.retain) == (b"kept", True)
