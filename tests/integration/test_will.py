"""Will messages: published when a connection ends without DISCONNECT, not
after a clean DISCONNECT; QoS and retain of the will."""
from harness import raw


def test_will_on_abnormal_disconnect(raw_factory, client_factory, topic, v3):
    sub = client_factory(protocol=v3)
    sub.subscribe(topic, 1)
    level = raw.V31 if v3 == "31" else raw.V311
    r = raw_factory()
    ack = r.connect("will-abn", level=level,
                    will=(topic, b"gone", 1, False))
    assert ack.rc == 0
    r.close()  # no DISCONNECT
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"gone", 1, False)


def test_no_will_after_disconnect(raw_factory, client_factory, topic):
    sub = client_factory()
    sub.subscribe([(topic, 1), (topic + "/end", 1)])
    r = raw_factory()
    assert r.connect("will-clean", will=(topic, b"never", 1, False)).rc == 0
    r.send(raw.disconnect())
    assert r.wait_closed(5)
    # The will, had it been published, would precede this marker.
    client_factory().publish(topic + "/end", b"end", qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload) == (topic + "/end", b"end")


def test_will_paho_abort(client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 2)
    c = client_factory(will=(topic, b"paho-will", 2, False))
    c.abort()
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"paho-will", 2)


def test_will_retained(raw_factory, client_factory, topic):
    r = raw_factory()
    assert r.connect("will-ret", will=(topic, b"last", 1, True)).rc == 0
    live = client_factory()
    live.subscribe(topic, 1)
    r.close()
    m = live.expect_message()
    assert m.payload == b"last"
    # A later subscriber gets it as a retained message.
    late = client_factory()
    late.subscribe(topic, 1)
    m = late.expect_message()
    assert (m.payload, m.retain) == (b"last", True)


def test_will_qos0_downgraded_to_granted(raw_factory, client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 0)
    r = raw_factory()
    assert r.connect("will-q", will=(topic, b"w", 2, False)).rc == 0
    r.close()
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"w", 0)


def test_will_on_protocol_error(raw_factory, client_factory, topic):
    sub = client_factory()
    sub.subscribe(topic, 1)
    r = raw_factory()
    assert r.connect("will-err", will=(topic, b"broken", 1, False)).rc == 0
    r.send(raw.publish("a/+", b"wildcards are not allowed here"))
    assert r.wait_closed(5)
    m = sub.expect_message()
    assert m.payload == b"broken"


def test_will_on_keepalive_timeout(broker, raw_factory, client_factory,
                                   topic):
    sub = client_factory()
    sub.subscribe(topic, 1)
    r = raw_factory()
    assert r.connect("will-ka", keepalive=1,
                     will=(topic, b"silent", 1, False)).rc == 0
    # mosquitto 2.0 checks keepalives only every few seconds.
    assert r.wait_closed(3 if broker.is_starling else 8)
    assert sub.expect_message().payload == b"silent"
