"""PUBLISH at QoS 0/1/2: delivery, QoS downgrade, the QoS 1/2 flows, inbound
QoS 2 deduplication and the outbound inflight window."""
import pytest

from harness import raw


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pubsub_each_qos(client_factory, topic, v3, qos):
    sub = client_factory(protocol=v3)
    assert sub.subscribe(topic, qos) == [qos]
    pub = client_factory(protocol=v3)
    payloads = [f"m{i}-{qos}".encode() for i in range(5)]
    for p in payloads:
        pub.publish(topic, p, qos=qos)
    got = sub.expect_messages(5)
    assert [m.payload for m in got] == payloads
    assert all(m.qos == qos and m.topic == topic and not m.retain
               for m in got)
    sub.expect_no_message(0.2)


@pytest.mark.parametrize("sub_qos,pub_qos", [(0, 1), (0, 2), (1, 2),
                                             (2, 0), (2, 1), (1, 0)])
def test_delivery_qos_is_min_of_sub_and_pub(client_factory, topic, sub_qos,
                                            pub_qos):
    sub = client_factory()
    assert sub.subscribe(topic, sub_qos) == [sub_qos]
    pub = client_factory()
    pub.publish(topic, b"q", qos=pub_qos)
    m = sub.expect_message()
    assert m.payload == b"q"
    assert m.qos == min(sub_qos, pub_qos)


@pytest.mark.broker(max_qos=1)
def test_max_qos_grants_at_most_1(client_factory, topic):
    sub = client_factory()
    assert sub.subscribe(topic, 2) == [1]


def test_qos1_flow_raw(raw_factory, client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 1)
    r = raw_factory()
    assert r.connect("q1pub").rc == 0
    r.send(raw.publish(topic, b"one", qos=1, pid=4321))
    ack = r.expect(raw.PUBACK)
    assert ack.pid == 4321
    assert sub.expect_message().payload == b"one"


def test_qos2_flow_raw(raw_factory, client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 2)
    r = raw_factory()
    assert r.connect("q2pub").rc == 0
    r.send(raw.publish(topic, b"two", qos=2, pid=777))
    assert r.expect(raw.PUBREC).pid == 777
    r.send(raw.pubrel(777))
    comp = r.expect(raw.PUBCOMP)
    assert comp.pid == 777
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"two", 2)


def test_qos2_subscriber_flow_raw(raw_factory, client_factory, topic):
    r = raw_factory()
    assert r.connect("q2sub").rc == 0
    assert r.subscribe([(topic, 2)]) == [2]
    client_factory().publish(topic, b"x", qos=2)
    p = r.expect(raw.PUBLISH)
    assert (p.qos, p.dup, p.payload) == (2, False, b"x")
    assert p.pid != 0
    r.send(raw.pubrec(p.pid))
    assert r.expect(raw.PUBREL).pid == p.pid
    r.send(raw.pubcomp(p.pid))
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)  # nothing else was pending before the PINGRESP


def test_inbound_qos2_exactly_once(raw_factory, client_factory, topic):
    """The same QoS 2 packet id sent twice (the second with DUP) before
    PUBREL is one message."""
    sub = client_factory()
    sub.subscribe([(topic, 2), (topic + "/end", 2)])
    r = raw_factory()
    assert r.connect("dup-pub").rc == 0
    r.send(raw.publish(topic, b"once", qos=2, pid=42))
    assert r.expect(raw.PUBREC).pid == 42
    r.send(raw.publish(topic, b"once", qos=2, pid=42, dup=True))
    assert r.expect(raw.PUBREC).pid == 42
    r.send(raw.pubrel(42))
    assert r.expect(raw.PUBCOMP).pid == 42
    # After the flow the id is free again: a new message with it is new.
    r.send(raw.publish(topic, b"again", qos=2, pid=42))
    assert r.expect(raw.PUBREC).pid == 42
    r.send(raw.pubrel(42))
    assert r.expect(raw.PUBCOMP).pid == 42
    # A QoS 2 marker: delivered after both (paho hands QoS 2 messages over
    # at PUBREL, so a QoS 0 marker could overtake them).
    r.send(raw.publish(topic + "/end", b"end", qos=2, pid=43))
    assert r.expect(raw.PUBREC).pid == 43
    r.send(raw.pubrel(43))
    assert r.expect(raw.PUBCOMP).pid == 43
    got = []
    while True:
        m = sub.expect_message()
        if m.topic.endswith("/end"):
            break
        got.append(m.payload)
    assert got == [b"once", b"again"]


def test_pubrel_for_unknown_id_gets_pubcomp(raw_factory):
    r = raw_factory()
    assert r.connect("pubrel-unknown").rc == 0
    r.send(raw.pubrel(999))
    assert r.expect(raw.PUBCOMP).pid == 999


@pytest.mark.broker(max_inflight_messages=2)
def test_inflight_window(raw_factory, client_factory, topic):
    r = raw_factory()
    assert r.connect("window").rc == 0
    assert r.subscribe([(topic, 1)]) == [1]
    pub = client_factory()
    for i in range(3):
        pub.publish(topic, f"w{i}".encode(), qos=1)
    first = r.expect(raw.PUBLISH)
    second = r.expect(raw.PUBLISH)
    assert [first.payload, second.payload] == [b"w0", b"w1"]
    r.expect_nothing(0.5)  # the window is full: w2 waits
    r.send(raw.puback(first.pid))
    third = r.expect(raw.PUBLISH)
    assert third.payload == b"w2"
    assert third.qos == 1 and not third.dup
    assert third.pid != second.pid  # second is still in flight
    r.send(raw.puback(second.pid))
    r.send(raw.puback(third.pid))
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)


def test_qos0_not_limited_by_window(raw_factory, client_factory, topic):
    r = raw_factory()
    assert r.connect("q0win").rc == 0
    assert r.subscribe([(topic, 0)]) == [0]
    pub = client_factory()
    for i in range(50):
        pub.publish(topic, str(i).encode(), qos=0)
    got = [r.expect(raw.PUBLISH).payload for _ in range(50)]
    assert got == [str(i).encode() for i in range(50)]


def test_large_payload(client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 1)
    body = bytes(range(256)) * 1024  # 256 KiB
    client_factory().publish(topic, body, qos=1)
    assert sub.expect_message().payload == body


def test_empty_payload_non_retained(client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 1)
    client_factory().publish(topic, b"", qos=1)
    m = sub.expect_message()
    assert m.payload == b"" and not m.retain
