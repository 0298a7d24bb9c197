"""Keepalive: PINGREQ/PINGRESP and disconnection of silent clients after
1.5 times the keepalive."""
import time

from harness import raw


def ka_limit(broker):
    # mosquitto 2.0 checks keepalives only every few seconds.
    return 3.0 if broker.is_starling else 8.0


def test_pingreq_pingresp(raw_factory, v3):
    r = raw_factory()
    assert r.connect("pinger", level=raw.V31 if v3 == "31" else raw.V311
                     ).rc == 0
    for _ in range(3):
        r.send(raw.pingreq())
        resp = r.expect(raw.PINGRESP)
        assert resp.body == b"" and resp.flags == 0


def test_silent_client_disconnected(broker, raw_factory):
    r = raw_factory()
    assert r.connect("silent", keepalive=1).rc == 0
    start = time.monotonic()
    closed = r.wait_closed(ka_limit(broker))
    elapsed = time.monotonic() - start
    assert closed, "silent client not disconnected"
    assert elapsed >= 1.0, f"disconnected too early ({elapsed:.2f} s)"


def test_pinging_client_kept(broker, raw_factory):
    """Traffic within the keepalive keeps the connection: 2.5 s of PINGREQ
    every 0.5 s with keepalive 1."""
    r = raw_factory()
    assert r.connect("busy", keepalive=1).rc == 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        r.send(raw.pingreq())
        r.expect(raw.PINGRESP)
        r.expect_nothing(0.5)  # paces the loop; also: no unexpected close


def test_other_packets_count_as_activity(raw_factory, client_factory, topic):
    r = raw_factory()
    assert r.connect("busy-pub", keepalive=1).rc == 0
    deadline = time.monotonic() + 2.5
    i = 0
    while time.monotonic() < deadline:
        i += 1
        r.send(raw.publish(topic, b"x", qos=1, pid=i))
        assert r.expect(raw.PUBACK).pid == i
        r.expect_nothing(0.5)


def test_keepalive_zero_never_times_out(raw_factory):
    r = raw_factory()
    assert r.connect("no-ka", keepalive=0).rc == 0
    assert not r.wait_closed(2.0)
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)


def test_paho_keepalive_pings(client_factory, topic):
    """A library client with keepalive 1 stays connected by pinging."""
    c = client_factory(keepalive=1)
    assert not c.wait_disconnected(2.5)
    c.subscribe(topic, 1)
    c.publish(topic, b"alive", qos=1)
    assert c.expect_message().payload == b"alive"
