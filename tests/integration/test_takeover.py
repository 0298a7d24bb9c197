"""Client takeover: a second CONNECT with the same client id closes the
first connection."""
from harness import raw


def test_takeover_closes_first_paho(client_factory, topic, v3):
    first = client_factory("same-id", protocol=v3)
    second = client_factory("same-id", protocol=v3)
    assert first.wait_disconnected(5), "first client not disconnected"
    assert not second.disconnected.is_set()
    second.subscribe(topic, 1)
    second.publish(topic, b"mine", qos=1)
    assert second.expect_message().payload == b"mine"


def test_takeover_closes_first_raw(raw_factory):
    a = raw_factory()
    assert a.connect("dup-raw").rc == 0
    b = raw_factory()
    assert b.connect("dup-raw").rc == 0
    assert a.wait_closed(5)
    b.send(raw.pingreq())
    b.expect(raw.PINGRESP)


def test_takeover_keeps_persistent_session(client_factory, topic):
    first = client_factory("take-sess", clean_session=False)
    first.subscribe(topic, 1)
    second = client_factory("take-sess", clean_session=False)
    assert second.session_present
    assert first.wait_disconnected(5)
    client_factory().publish(topic, b"to-second", qos=1)
    assert second.expect_message().payload == b"to-second"
    first.expect_no_message(0.2)


def test_takeover_moves_unacked_messages(raw_factory, client_factory, topic):
    a = raw_factory()
    assert a.connect("take-inflight", clean=False).rc == 0
    assert a.subscribe([(topic, 1)]) == [1]
    client_factory().publish(topic, b"pending", qos=1)
    p = a.expect(raw.PUBLISH)  # never acknowledged by a
    b = raw_factory()
    ack = b.connect("take-inflight", clean=False)
    assert (ack.rc, ack.session_present) == (0, True)
    assert a.wait_closed(5)
    again = b.expect(raw.PUBLISH)
    assert (again.payload, again.pid, again.dup) == (b"pending", p.pid, True)


def test_takeover_by_other_protocol_version(raw_factory):
    a = raw_factory()
    assert a.connect("take-ver", level=raw.V31).rc == 0
    b = raw_factory()
    assert b.connect("take-ver", level=raw.V311).rc == 0
    assert a.wait_closed(5)
