"""MQTT 5.0 flow control and size limits: the client's Receive Maximum
honoured by the broker, the broker's Receive Maximum enforced (0x93), the
client's Maximum Packet Size honoured (oversized messages skipped), the
broker's Maximum Packet Size enforced (0x95)."""
import select
import time

import pytest

from harness import raw
from harness.raw import sub_options, v5, v5connect

# How long "the broker sends nothing more" is watched where no later event
# could prove it (the in-flight window blocks every later message).
QUIET = 0.4


def flow_subscriber(raw_factory, topic, receive_max, qos=1):
    sub, _ = v5connect(raw_factory, "flow-sub",
                       properties=[(v5.RECEIVE_MAXIMUM, receive_max)])
    assert sub.subscribe([(topic, sub_options(qos))]).codes == [qos]
    return sub


def test_v5_client_receive_maximum_honoured(raw_factory, topic):
    sub = flow_subscriber(raw_factory, topic, 2)
    pub, _ = v5connect(raw_factory, "flow-pub")
    for i in range(5):
        assert pub.publish(topic, b"m%d" % i, qos=1).rc == 0
    first = [sub.expect_publish(auto_ack=False) for _ in range(2)]
    assert [m.payload for m in first] == [b"m0", b"m1"]
    sub.expect_nothing(QUIET)  # window full: m2 must wait
    sub.send(v5.ack(raw.PUBACK, first[0].pid))
    m2 = sub.expect_publish(auto_ack=False)
    assert m2.payload == b"m2"
    sub.expect_nothing(QUIET)
    sub.send(v5.ack(raw.PUBACK, first[1].pid))
    sub.send(v5.ack(raw.PUBACK, m2.pid))
    rest = [sub.expect_publish(auto_ack=False) for _ in range(2)]
    assert [m.payload for m in rest] == [b"m3", b"m4"]
    for m in rest:
        sub.send(v5.ack(raw.PUBACK, m.pid))
    pub.publish(topic, b"after", qos=1)
    assert sub.expect_publish().payload == b"after"


def test_v5_client_receive_maximum_counts_qos2_until_pubcomp(raw_factory,
                                                             topic):
    sub = flow_subscriber(raw_factory, topic, 1, qos=2)
    pub, _ = v5connect(raw_factory, "flow-pub")
    pub.publish(topic, b"a", qos=2)
    pub.publish(topic, b"b", qos=2)
    m = sub.expect_publish(auto_ack=False)
    assert (m.payload, m.qos) == (b"a", 2)
    sub.send(v5.ack(raw.PUBREC, m.pid))
    rel = sub.expect(raw.PUBREL)
    assert rel.pid == m.pid
    sub.expect_nothing(QUIET)  # PUBREC is not the end of the exchange
    sub.send(v5.ack(raw.PUBCOMP, m.pid))
    m = sub.expect_publish()
    assert m.payload == b"b"


@pytest.mark.broker(receive_maximum=2)
def test_v5_broker_receive_maximum_qos2(raw_factory, topic):
    """Three QoS 2 PUBLISH without PUBREL: the third exceeds the broker's
    Receive Maximum of 2."""
    c, ack = v5connect(raw_factory, "rm-q2")
    assert ack.props.get(v5.RECEIVE_MAXIMUM) == 2
    for pid in (1, 2):
        c.send(v5.publish(topic, b"x", qos=2, pid=pid))
        assert c.expect(raw.PUBREC).pid == pid
    c.send(v5.publish(topic, b"x", qos=2, pid=3))
    c.expect_disconnect(v5.RC_RECEIVE_MAXIMUM_EXCEEDED)


def write_after_reason(sock, first):
    """Send `first`, wait until the broker's answer is readable (not
    reading it), then go on writing as a client busy sending PUBRELs would;
    returns the error that ended the writing (the broker reset the
    connection; a client library gives up there, before reading the
    reason), or None."""
    sock.sendall(first)
    select.select([sock], [], [], 5.0)
    try:
        for _ in range(16):
            sock.sendall(v5.ack(raw.PUBREL, 1) * 1024)
            time.sleep(0.01)  # paced as a client's writes are
    except OSError as e:
        return e
    return None


@pytest.mark.parametrize("linger", [
    pytest.param(True, marks=pytest.mark.broker(receive_maximum=1),
                 id="linger"),
    pytest.param(False, marks=[pytest.mark.broker(receive_maximum=1,
                                                  close_linger=0),
                               pytest.mark.starling_only],
                 id="no-linger")])
def test_v5_disconnect_reason_reaches_a_client_still_sending(
        raw_factory, topic, linger):
    """Receive Maximum exceeded by a client that keeps sending: the broker
    shuts its write side and discards input for close_linger ms, so the
    client's writes go on without error and it reads DISCONNECT 0x93.
    Closing at once (close_linger 0) resets the client's next write."""
    c, _ = v5connect(raw_factory, "rm-flood")
    c.send(v5.publish(topic, b"x", qos=2, pid=1))
    assert c.expect(raw.PUBREC).pid == 1
    err = write_after_reason(c.raw.sock,
                             v5.publish(topic, b"x", qos=2, pid=2))
    if linger:
        assert err is None, f"the client's writes failed: {err!r}"
        c.expect_disconnect(v5.RC_RECEIVE_MAXIMUM_EXCEEDED)
    else:
        assert isinstance(err, (BrokenPipeError, ConnectionResetError))


@pytest.mark.broker(receive_maximum=2)
def test_v5_broker_receive_maximum_qos1_burst(raw_factory, topic):
    """Three QoS 1 PUBLISH in one write, for an offline persistent session
    (so each needs a store write before its PUBACK)."""
    off, _ = v5connect(raw_factory, "rm-offline",
                       properties=[(v5.SESSION_EXPIRY, 60)])
    off.subscribe([(topic, sub_options(1))])
    off.send(v5.disconnect())
    assert off.wait_closed()
    c, _ = v5connect(raw_factory, "rm-q1")
    c.send(b"".join(v5.publish(topic, b"x", qos=1, pid=p) for p in (1, 2, 3)))
    c.expect_disconnect(v5.RC_RECEIVE_MAXIMUM_EXCEEDED)


@pytest.mark.broker(receive_maximum=2)
def test_v5_broker_receive_maximum_window_reopens(raw_factory, topic):
    """Completing an exchange frees its slot: many QoS 2 messages, never
    more than 2 open at once, are all accepted."""
    sub, _ = v5connect(raw_factory, "rm-sub")
    sub.subscribe([(topic, sub_options(0))])
    c, _ = v5connect(raw_factory, "rm-ok")
    for pid in (1, 2):
        c.send(v5.publish(topic, b"%d" % pid, qos=2, pid=pid))
        assert c.expect(raw.PUBREC).pid == pid
    for pid in range(3, 9):
        c.send(v5.ack(raw.PUBREL, pid - 2))
        assert c.expect(raw.PUBCOMP).pid == pid - 2
        c.send(v5.publish(topic, b"%d" % pid, qos=2, pid=pid))
        assert c.expect(raw.PUBREC).pid == pid
    got = [sub.expect_publish().payload for _ in range(8)]
    assert got == [b"%d" % i for i in range(1, 9)]


def test_v5_client_maximum_packet_size(raw_factory, topic):
    """Maximum Packet Size 100: bigger messages are skipped, smaller ones
    delivered, the session goes on."""
    sub, _ = v5connect(raw_factory, "mps-sub",
                       properties=[(v5.MAXIMUM_PACKET_SIZE, 100)])
    sub.subscribe([(topic, sub_options(1))])
    pub, _ = v5connect(raw_factory, "mps-pub")
    pub.publish(topic, b"B" * 200, qos=1)
    pub.publish(topic, b"small-1", qos=1)
    pub.publish(topic, b"b" * 200, qos=0)
    pub.publish(topic, b"small-2", qos=0)
    # Small payload, but properties push the packet over 100 bytes.
    pub.publish(topic, b"p", qos=1,
                properties=[(v5.USER_PROPERTY, ("k", "v" * 90))])
    pub.publish(topic, b"small-3", qos=1)
    for want in (b"small-1", b"small-2", b"small-3"):
        m = sub.expect_publish()
        assert m.payload == want, f"expected {want!r}, got {m!r}"
        assert len(m.body) + 2 <= 100


def test_v5_client_maximum_packet_size_retained(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "mps-pub")
    pub.publish(topic + "/big", b"B" * 300, qos=1, retain=True)
    pub.publish(topic + "/small", b"s", qos=1, retain=True)
    sub, _ = v5connect(raw_factory, "mps-sub",
                       properties=[(v5.MAXIMUM_PACKET_SIZE, 100)])
    sub.subscribe([(topic + "/big", sub_options(1)),
                   (topic + "/small", sub_options(1))])
    m = sub.expect_publish()
    assert (m.topic, m.payload) == (topic + "/small", b"s")


def oversized_publish(topic, total):
    """A QoS 0 PUBLISH of exactly `total` bytes on the wire."""
    head = len(v5.publish(topic, b""))
    pkt = v5.publish(topic, b"x" * (total - head))
    while len(pkt) != total:  # the remaining length grew a byte
        pkt = v5.publish(topic, b"x" * (total - head - (len(pkt) - total)))
    return pkt


@pytest.mark.broker(max_packet_size=256)
def test_v5_broker_maximum_packet_size(raw_factory, topic):
    sub, _ = v5connect(raw_factory, "bmps-sub")
    sub.subscribe([(topic, sub_options(0))])
    c, ack = v5connect(raw_factory, "bmps")
    assert ack.props.get(v5.MAXIMUM_PACKET_SIZE) == 256
    fits = oversized_publish(topic, 256)
    assert len(fits) == 256
    c.send(fits)
    assert len(sub.expect_publish().payload) > 200
    c.send(oversized_publish(topic, 257))
    c.expect_disconnect(v5.RC_PACKET_TOO_LARGE)


@pytest.mark.broker(max_packet_size=256)
def test_v5_broker_maximum_packet_size_will(raw_factory, topic):
    """An oversized packet is not a normal disconnect: the will goes out."""
    sub, _ = v5connect(raw_factory, "bmps-sub")
    sub.subscribe([(topic + "/will", sub_options(1))])
    c, _ = v5connect(raw_factory, "bmps-will",
                     will=(topic + "/will", b"too big", 1, False, ()))
    c.send(oversized_publish(topic, 1000))
    c.expect_disconnect(v5.RC_PACKET_TOO_LARGE)
    assert sub.expect_publish().payload == b"too big"
