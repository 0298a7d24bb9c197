"""Retained messages: set, replace, clear, delivery on subscribe, the retain
flag on live delivery."""
def marker(client_factory, sub, topic):
    """Publish a non-retained marker on topic+'/end' (sub must be subscribed
    to it) and return every message sub got before the marker."""
    client_factory().publish(topic + "/end", b"end", qos=1)
    got = []
    while True:
        m = sub.expect_message()
        if m.topic == topic + "/end":
            return got
        got.append(m)


def test_retained_delivered_on_subscribe(client_factory, topic, v3):
    pub = client_factory(protocol=v3)
    pub.publish(topic, b"kept", qos=1, retain=True)
    sub = client_factory(protocol=v3)
    assert sub.subscribe(topic, 1) == [1]
    m = sub.expect_message()
    assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"kept", True, 1)


def test_retained_replaced(client_factory, topic):
    pub = client_factory()
    pub.publish(topic, b"old", qos=1, retain=True)
    pub.publish(topic, b"new", qos=1, retain=True)
    sub = client_factory()
    sub.subscribe([(topic, 1), (topic + "/end", 1)])
    got = marker(client_factory, sub, topic)
    assert [(m.payload, m.retain) for m in got] == [(b"new", True)]


def test_retained_cleared_by_empty_payload(client_factory, topic):
    pub = client_factory()
    pub.publish(topic, b"doomed", qos=1, retain=True)
    pub.publish(topic, b"", qos=1, retain=True)
    sub = client_factory()
    sub.subscribe([(topic, 1), (topic + "/end", 1)])
    assert marker(client_factory, sub, topic) == []


def test_clear_reaches_live_subscribers(client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 1)
    client_factory().publish(topic, b"", qos=1, retain=True)
    m = sub.expect_message()
    assert m.payload == b""


def test_live_delivery_has_retain_flag_clear(client_factory, topic, v3):
    sub = client_factory(protocol=v3)
    sub.subscribe(topic, 1)
    client_factory(protocol=v3).publish(topic, b"live", qos=1, retain=True)
    m = sub.expect_message()
    assert m.payload == b"live"
    assert m.retain is False
    # ... but it was stored: a new subscriber gets it with the flag set.
    late = client_factory(protocol=v3)
    late.subscribe(topic, 1)
    m = late.expect_message()
    assert (m.payload, m.retain) == (b"live", True)


def test_retained_qos_is_min_of_stored_and_granted(client_factory, topic):
    client_factory().publish(topic, b"r2", qos=2, retain=True)
    sub0 = client_factory()
    sub0.subscribe(topic, 0)
    assert sub0.expect_message().qos == 0
    sub2 = client_factory()
    sub2.subscribe(topic, 2)
    assert sub2.expect_message().qos == 2
    client_factory().publish(topic, b"r0", qos=0, retain=True)
    sub2b = client_factory()
    sub2b.subscribe(topic, 2)
    m = sub2b.expect_message()
    assert (m.payload, m.qos) == (b"r0", 0)


def test_retained_matched_by_wildcards(client_factory, topic):
    pub = client_factory()
    names = [f"{topic}/a", f"{topic}/b", f"{topic}/b/c", f"{topic}x/a"]
    for n in names:
        pub.publish(n, n.encode(), qos=1, retain=True)
    plus = client_factory()
    plus.subscribe(f"{topic}/+", 1)
    got = {m.topic for m in plus.expect_messages(2)}
    assert got == {f"{topic}/a", f"{topic}/b"}
    plus.expect_no_message(0.3)
    hash_ = client_factory()
    hash_.subscribe(f"{topic}/#", 1)
    msgs = hash_.expect_messages(3)
    assert {m.topic for m in msgs} == {f"{topic}/a", f"{topic}/b",
                                       f"{topic}/b/c"}
    assert all(m.retain for m in msgs)
    hash_.expect_no_message(0.3)


def test_resubscribe_redelivers_retained(client_factory, topic):
    client_factory().publish(topic, b"again", qos=1, retain=True)
    sub = client_factory()
    sub.subscribe(topic, 1)
    assert sub.expect_message().payload == b"again"
    sub.subscribe(topic, 1)
    m = sub.expect_message()
    assert (m.payload, m.retain) == (b"again", True)


def test_retained_qos0_publish(client_factory, topic):
    pub = client_factory()
    pub.publish(topic, b"zero", qos=0, retain=True)
    # Packets of one connection are handled in order: once this QoS 1
    # publish is acknowledged, the QoS 0 one has been processed.
    pub.publish(topic + "/sync", b"", qos=1)
    sub = client_factory()
    sub.subscribe(topic, 0)
    m = sub.expect_message()
    assert (m.payload, m.retain, m.qos) == (b"zero", True, 0)
