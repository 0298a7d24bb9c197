"""SUBSCRIBE / UNSUBSCRIBE: wildcard matching, $-topics, overlapping
subscriptions, refused filters, fan-out."""
import pytest

from harness import raw


def collect_until_end(sub, pub, end_topic):
    """Publish a marker on end_topic and return the messages sub received
    before it (sub must be subscribed to end_topic at QoS 2: paho hands
    QoS 2 messages over at PUBREL, so a lower-QoS marker could overtake
    them)."""
    pub.publish(end_topic, b"end", qos=2)
    got = []
    while True:
        m = sub.expect_message()
        if m.topic == end_topic:
            return got
        got.append(m)


MATCHES = [
    # filter, topic, matches
    ("a/b", "a/b", True),
    ("a/b", "a/b/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a/", True),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/d", False),
    ("a/#", "a", True),
    ("a/#", "a/b/c", True),
    ("a/#", "ab/c", False),
    ("+/+", "a/b", True),
    ("+/+", "a", False),
    ("+", "/", False),
    ("+/+", "/b", True),
    ("#", "a/b/c", True),
    ("/#", "/a", True),
    ("/#", "a", False),
    ("a/b/#", "a/b", True),
    ("A/B", "a/b", False),
]


@pytest.mark.parametrize("flt,name,matches", MATCHES)
def test_filter_matching(client_factory, topic, flt, name, matches):
    sub = client_factory()
    full_filter = flt if flt.startswith("#") else f"{topic}/{flt}"
    if flt in ("#", "+/+", "+"):
        # Not anchored under the unique prefix: anchor the topic instead.
        full_filter = {"#": f"{topic}/#", "+/+": f"{topic}/+/+",
                       "+": f"{topic}/+"}[flt]
    sub.subscribe([(full_filter, 1), (topic + "/end!", 2)])
    pub = client_factory()
    pub.publish(f"{topic}/{name}", b"m", qos=1)
    got = collect_until_end(sub, pub, topic + "/end!")
    assert [m.topic for m in got] == ([f"{topic}/{name}"] if matches else [])


def test_multiple_filters_one_subscribe(client_factory, topic):
    sub = client_factory()
    codes = sub.subscribe([(f"{topic}/a", 0), (f"{topic}/b", 1),
                           (f"{topic}/c", 2)])
    assert codes == [0, 1, 2]
    pub = client_factory()
    for leaf in "abc":
        pub.publish(f"{topic}/{leaf}", leaf.encode(), qos=2)
    got = sorted((m.payload, m.qos) for m in sub.expect_messages(3))
    assert got == [(b"a", 0), (b"b", 1), (b"c", 2)]


DOLLAR = "$internal"


def test_dollar_topics_not_matched_by_wildcards(client_factory, topic):
    name = f"{DOLLAR}/{topic.replace('/', '-')}/x"
    hash_all = client_factory()
    hash_all.subscribe([("#", 1)])
    plus = client_factory()
    plus.subscribe([(f"+/{topic.replace('/', '-')}/x", 1)])
    explicit = client_factory()
    explicit.subscribe([(f"{DOLLAR}/#", 1)])
    explicit_plus = client_factory()
    explicit_plus.subscribe([(f"{DOLLAR}/+/x", 1)])
    pub = client_factory()
    pub.publish(name, b"dollar", qos=1)
    for c in (explicit, explicit_plus):
        m = c.expect_message()
        assert (m.topic, m.payload) == (name, b"dollar")
    # '#' and '+/...' never match a topic starting with '$'; the marker is
    # an ordinary topic that '#' does match.
    pub.publish(f"{topic}/end", b"end", qos=1)
    m = hash_all.expect_message()
    assert m.topic == f"{topic}/end", f"'#' matched {m.topic!r}"
    plus.expect_no_message(0.3)


def test_overlapping_subscriptions_max_qos(client_factory, topic):
    """a/# QoS 1 + a/+ QoS 2: the message arrives at QoS 2 (3.1.1 allows a
    second copy per extra subscription; see the starling_only test)."""
    sub = client_factory()
    assert sub.subscribe([(f"{topic}/#", 1), (f"{topic}/+", 2),
                          (f"{topic}-end", 2)]) == [1, 2, 2]
    pub = client_factory()
    pub.publish(f"{topic}/x", b"o", qos=2)
    got = collect_until_end(sub, pub, f"{topic}-end")
    assert got, "no delivery"
    assert max(m.qos for m in got) == 2
    assert all(m.payload == b"o" for m in got)


@pytest.mark.starling_only
def test_overlapping_subscriptions_single_delivery(client_factory, topic):
    sub = client_factory()
    sub.subscribe([(f"{topic}/#", 1), (f"{topic}/+", 2), (f"{topic}-end", 2)])
    pub = client_factory()
    pub.publish(f"{topic}/x", b"o", qos=2)
    got = collect_until_end(sub, pub, f"{topic}-end")
    assert [(m.payload, m.qos) for m in got] == [(b"o", 2)]


def test_resubscribe_replaces_qos(client_factory, topic):
    sub = client_factory()
    assert sub.subscribe(topic, 0) == [0]
    assert sub.subscribe(topic, 2) == [2]
    sub.subscribe(topic + "/end", 2)
    pub = client_factory()
    pub.publish(topic, b"r", qos=2)
    got = collect_until_end(sub, pub, topic + "/end")
    assert [(m.payload, m.qos) for m in got] == [(b"r", 2)]


def test_unsubscribe_stops_delivery(client_factory, topic, v3):
    sub = client_factory(protocol=v3)
    sub.subscribe([(topic, 1), (topic + "/end", 2)])
    pub = client_factory(protocol=v3)
    pub.publish(topic, b"before", qos=1)
    assert sub.expect_message().payload == b"before"
    sub.unsubscribe(topic)
    pub.publish(topic, b"after", qos=1)
    assert collect_until_end(sub, pub, topic + "/end") == []


def test_unsubscribe_unknown_filter_acked(raw_factory):
    r = raw_factory()
    assert r.connect("unsub-unknown").rc == 0
    r.send(raw.unsubscribe(9, ["never/subscribed"]))
    assert r.expect(raw.UNSUBACK).pid == 9


def test_suback_packet_id(raw_factory):
    r = raw_factory()
    assert r.connect("suback-id").rc == 0
    r.send(raw.subscribe(65535, [("x/y", 1), ("x/z", 2)]))
    ack = r.expect(raw.SUBACK)
    assert ack.pid == 65535
    assert ack.codes == [1, 2]


@pytest.mark.starling_only
@pytest.mark.broker(subscribe_deny="secret/#,deny/+/x")
def test_subscribe_deny(raw_factory, client_factory):
    r = raw_factory()
    assert r.connect("denied").rc == 0
    # Refused: a listed filter, and a plain topic a listed filter covers.
    codes = r.subscribe([("secret/#", 1), ("ok/topic", 1), ("deny/+/x", 2),
                         ("secret/plain", 0), ("deny/a/x", 1),
                         ("public/plain", 0)])
    assert codes == [0x80, 1, 0x80, 0x80, 0x80, 0]
    # The refused filter delivers nothing; the granted one works.
    pub = client_factory()
    pub.publish("secret/a", b"s", qos=1)
    pub.publish("ok/topic", b"ok", qos=1)
    p = r.expect(raw.PUBLISH)
    assert (p.topic, p.payload) == ("ok/topic", b"ok")


@pytest.mark.parametrize("flt", ["a/#/b", "a/b#", "a+/b", "#/a", "a/+b"])
def test_invalid_filter(broker, raw_factory, flt):
    """3.1.1 lets a server answer an invalid filter with SUBACK 0x80 or by
    closing the connection; Starling answers 0x80 and stays connected."""
    r = raw_factory()
    assert r.connect("bad-filter").rc == 0
    r.send(raw.subscribe(5, [(flt, 1), ("fine/topic", 1)]))
    try:
        ack = r.recv()
    except raw.Closed:
        assert not broker.is_starling, "Starling closed instead of 0x80"
        return
    assert ack.type == raw.SUBACK
    assert ack.codes == [0x80, 1]
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)


def test_empty_filter_closes_v311(broker, raw_factory):
    """[MQTT-4.7.3-1]: a topic filter is at least one character; 3.1.1
    §4.8 has the server close the connection on such a violation (as
    Mosquitto does), not answer SUBACK 0x80."""
    r = raw_factory()
    assert r.connect("empty-filter").rc == 0
    r.send(raw.subscribe(5, [("", 1), ("fine/topic", 1)]))
    with pytest.raises(raw.Closed):
        r.recv()


@pytest.mark.starling_only
@pytest.mark.broker(max_subscriptions=2)
def test_max_subscriptions(raw_factory):
    r = raw_factory()
    assert r.connect("many-subs").rc == 0
    assert r.subscribe([("s/1", 0), ("s/2", 0)]) == [0, 0]
    assert r.subscribe([("s/3", 0)], pid=2) == [0x80]
    # Re-subscribing to an existing filter is not a new subscription.
    assert r.subscribe([("s/1", 1)], pid=3) == [1]


def test_fan_out_many_subscribers(client_factory, topic):
    n_subs, n_msgs = 50, 20
    subs = []
    for i in range(n_subs):
        s = client_factory(protocol="31" if i % 5 == 0 else "311")
        s.subscribe(f"{topic}/+", 1)
        subs.append(s)
    pub = client_factory()
    for i in range(n_msgs):
        pub.publish(f"{topic}/fan", str(i).encode(), qos=1)
    want = [str(i).encode() for i in range(n_msgs)]
    for s in subs:
        got = s.expect_messages(n_msgs, timeout=10)
        assert [m.payload for m in got] == want, s.client_id
