"""MQTT 5 session expiry kept in the store's data: a session expires after
its Session Expiry Interval even when no broker ran at that moment, and a
session reclaimed in time is never deleted by the expiry sweep. Runs
against every store backend (memory only where no restart is involved)."""
import time

import pytest

from harness import cid_for
from harness.broker import bounce
from harness.client import persistent
from harness.raw import v5connect
from harness.redis import durable_only

pytestmark = pytest.mark.starling_only


@pytest.fixture
def broker(broker_factory, store_url):
    return broker_factory(store=store_url)


def expired_rx(cid):
    return rf"session of client '{cid}' expired"


def test_restart_keeps_sessions_only_in_a_durable_store(
        broker, client_factory, topic, store_url):
    """The restart is a new process: the memory store forgets the session,
    the Redis ones keep it."""
    cid = cid_for("durable")
    c = client_factory(cid, clean_session=False)
    c.subscribe(topic, 1)
    c.disconnect()
    bounce(broker, "term")
    again = client_factory(cid, clean_session=False)
    assert again.session_present is (store_url != "memory")


def wait_session_gone(raw_factory, topic, timeout):
    """Seconds until the offline session subscribed to `topic` has expired
    (see V5Client.wait_no_subscriber)."""
    pub, _ = v5connect(raw_factory)
    return pub.wait_no_subscriber(topic, timeout)


def test_session_expires_while_broker_up(broker, client_factory,
                                         raw_factory, topic):
    cid = cid_for("exp-up")
    c = persistent(client_factory, cid, "5", fresh=True, expiry=1)
    c.subscribe(topic, 1)
    c.disconnect()
    waited = wait_session_gone(raw_factory, topic, 4)
    assert waited > 0.5, f"expired after {waited:.2f} s, expiry is 1 s"
    again = persistent(client_factory, cid, "5", expiry=60)
    assert again.session_present is False
    again.expect_no_message(0.3)


@pytest.mark.parametrize("store_url", ["memory", "redis", "redis-cluster"],
                         indirect=True)
def test_expiry_log_names_the_client(broker, client_factory, topic):
    cid = cid_for("exp-log")
    mark = broker.log_mark()
    c = persistent(client_factory, cid, "5", fresh=True, expiry=1)
    c.subscribe(topic, 1)
    c.disconnect()
    assert broker.wait_log(r"session of client '.*' expired", timeout=4,
                           since=mark)
    assert broker.wait_log(expired_rx(cid), timeout=0.5, since=mark), \
        "the expiry log line does not name the client: " + \
        broker.log_since(mark)


@durable_only
@pytest.mark.parametrize("state", ["offline", "online-term"])
def test_session_expires_while_no_broker_runs(broker, client_factory, topic,
                                              state):
    """Session Expiry Interval 1 s; the broker stops (the client
    disconnected before, or is connected when SIGTERM comes); 2 s with no
    broker; a new broker finds the session expired, by itself and for the
    reconnecting client."""
    cid = cid_for("exp-down")
    c = persistent(client_factory, cid, "5", fresh=True, expiry=1)
    assert c.subscribe(topic, 1) == [1]
    if state == "offline":
        c.disconnect()
    broker.stop()
    assert c.wait_disconnected(5)
    time.sleep(2.0)  # time passing with no broker is the point
    mark = broker.log_mark()
    broker.restart()
    assert broker.wait_log(expired_rx(cid), timeout=3, since=mark), \
        "the new broker did not expire the session"
    again = persistent(client_factory, cid, "5", expiry=60)
    assert again.session_present is False


@durable_only
def test_session_of_crashed_broker_expires(broker, client_factory, topic):
    """The broker is killed while the v5 client (expiry 1 s) is connected:
    nothing marked the session offline. A new broker must still end it: its
    expiry counts from the end of the connection (MQTT 5 §3.1.2.11.2),
    which the store can only know within its liveness timeout; allow 8 s
    for it."""
    cid = cid_for("exp-crash")
    c = persistent(client_factory, cid, "5", fresh=True, expiry=1)
    assert c.subscribe(topic, 1) == [1]
    broker.kill()
    assert c.wait_disconnected(5)
    mark = broker.log_mark()
    broker.restart()
    assert broker.wait_log(expired_rx(cid), timeout=8, since=mark), \
        "the session of the killed broker's client did not expire"
    again = persistent(client_factory, cid, "5", expiry=60)
    assert again.session_present is False


def test_reclaimed_session_is_not_expired(broker, client_factory, topic):
    """Disconnect with expiry 1 s, reconnect at once, stay connected past
    the original expiry time: the session and its subscription live on."""
    cid = cid_for("reclaim")
    mark = broker.log_mark()
    c = persistent(client_factory, cid, "5", fresh=True, expiry=1)
    assert c.subscribe(topic, 1) == [1]
    c.disconnect()
    again = persistent(client_factory, cid, "5", expiry=1)
    assert again.session_present is True
    time.sleep(2.5)  # past the first expiry time, with sweeps in between
    assert not broker.wait_log(expired_rx(cid), timeout=0, since=mark)
    client_factory(protocol="5").publish(topic, b"still", qos=1)
    assert again.expect_message().payload == b"still"
    again.disconnect()
    third = persistent(client_factory, cid, "5", expiry=1)
    assert third.session_present is True


@durable_only
def test_session_reclaimed_after_restart_is_not_expired(
        broker, client_factory, topic):
    """The session went offline under one broker (expiry 2 s); a new broker
    starts and the client reclaims the session in time: its due expiry
    entry must not delete it."""
    cid = cid_for("reclaim-rs")
    c = persistent(client_factory, cid, "5", fresh=True, expiry=2)
    assert c.subscribe(topic, 1) == [1]
    c.disconnect()
    mark = broker.log_mark()
    bounce(broker, "term")
    again = persistent(client_factory, cid, "5", expiry=2)
    assert again.session_present is True
    time.sleep(3.0)  # past the old expiry time, several sweeps
    assert not broker.wait_log(expired_rx(cid), timeout=0, since=mark)
    client_factory(protocol="5").publish(topic, b"still", qos=1)
    assert again.expect_message().payload == b"still"
    again.disconnect()
    third = persistent(client_factory, cid, "5", expiry=2)
    assert third.session_present is True
