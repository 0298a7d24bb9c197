"""Shared subscriptions ($share/GROUP/FILTER) for MQTT 5.0 and 3.1.1
clients: each message to exactly one member of a group (round robin by
default), every group and every plain subscriber gets every message, no
retained messages on subscribe, unacknowledged messages of a departing
member go to another member, invalid share names and no local refused."""
import pytest

from harness import raw
from harness.client import paho_props
from harness.raw import sub_options, v5, v5connect

N = 20


@pytest.fixture(params=["5", "311"])
def proto(request):
    return request.param


def member(client_factory, proto, share, topic, qos=1):
    """A paho client in the group `share` on topic, also subscribed to the
    marker topic topic/end."""
    c = client_factory(protocol=proto)
    assert c.subscribe([(f"$share/{share}/{topic}", qos),
                        (topic + "/end", qos)]) == [qos, qos]
    return c


def publish_all(client_factory, topic, n=N):
    pub = client_factory(protocol="5")
    for i in range(n):
        pub.publish(topic, b"%02d" % i, qos=1)
    pub.publish(topic + "/end", b"end", qos=1)
    return pub


def until_marker(c, topic, limit=2 * N + 5):
    """Payloads c received on topic before the marker on topic/end."""
    got = []
    for _ in range(limit):
        m = c.expect_message()
        if m.topic == topic + "/end":
            return got
        assert m.topic == topic, m
        got.append(m.payload)
    raise AssertionError(f"no marker after {limit} messages")


ALL = [b"%02d" % i for i in range(N)]


def test_v5_shared_round_robin(client_factory, topic, proto):
    a = member(client_factory, proto, "g", topic)
    b = member(client_factory, proto, "g", topic)
    plain = client_factory(protocol=proto)
    plain.subscribe([(topic, 1), (topic + "/end", 1)])
    publish_all(client_factory, topic)
    ga, gb = until_marker(a, topic), until_marker(b, topic)
    assert sorted(ga + gb) == ALL, "each message to exactly one member"
    assert (len(ga), len(gb)) == (N // 2, N // 2), (ga, gb)
    assert until_marker(plain, topic) == ALL


def test_v5_shared_two_groups(client_factory, topic, proto):
    a1 = member(client_factory, proto, "one", topic)
    a2 = member(client_factory, proto, "one", topic)
    b1 = member(client_factory, proto, "two", topic)
    publish_all(client_factory, topic)
    g1 = until_marker(a1, topic) + until_marker(a2, topic)
    assert sorted(g1) == ALL
    assert until_marker(b1, topic) == ALL


def test_v5_shared_same_client_group_and_plain(client_factory, topic):
    """One client in a group and subscribed plainly to the same topic
    (v5, distinct subscription identifiers): the group's copy and the
    plain copy are two subscriptions, each delivered."""
    c = client_factory(protocol="5")
    c.subscribe(f"$share/g/{topic}", 1, properties=paho_props(
        "SUBSCRIBE", SubscriptionIdentifier=1))
    c.subscribe(topic, 1, properties=paho_props(
        "SUBSCRIBE", SubscriptionIdentifier=2))
    c.subscribe(topic + "/end", 1)
    publish_all(client_factory, topic, 1)
    got = []
    for _ in range(3):
        m = c.expect_message()
        if m.topic == topic + "/end":
            break
        got.append(tuple(m.properties.SubscriptionIdentifier))
    assert sorted(got) in ([(1,), (2,)], [(1, 2)]), got


def test_v5_shared_no_retained_on_subscribe(client_factory, topic, proto):
    pub = client_factory(protocol="5")
    pub.publish(topic, b"retained", qos=1, retain=True)
    m = member(client_factory, proto, "g", topic)
    pub.publish(topic + "/end", b"end", qos=1)
    got = m.expect_message()
    assert got.topic == topic + "/end", f"retained message sent: {got!r}"
    # Live messages on the retained topic still arrive.
    pub.publish(topic, b"live", qos=1)
    assert m.expect_message().payload == b"live"


class RawMember:
    """A shared-subscription member on a raw socket that never
    acknowledges (v5 or 3.1.1), with a clean session."""

    def __init__(self, raw_factory, proto, topic):
        self.v5 = proto == "5"
        if self.v5:
            self.c, _ = v5connect(raw_factory, "raw-member")
            ack = self.c.subscribe([(f"$share/g/{topic}", sub_options(1)),
                                    (topic + "/end", sub_options(0))])
            assert ack.codes == [1, 0]
        else:
            self.c = raw_factory()
            assert self.c.connect("raw-member").rc == 0
            assert self.c.subscribe([(f"$share/g/{topic}", 1),
                                     (topic + "/end", 0)]) == [1, 0]

    def until_marker(self, topic):
        got = []
        while True:
            p = self.c.recv()
            assert p.type == raw.PUBLISH, p
            if p.topic == topic + "/end":
                return got
            got.append(p.payload)

    def close(self):
        (self.c.raw if self.v5 else self.c).close()


def test_v5_shared_unacked_redelivered_to_other_member(raw_factory,
                                                       client_factory,
                                                       topic, proto):
    r = RawMember(raw_factory, proto, topic)
    b = member(client_factory, proto, "g", topic)
    publish_all(client_factory, topic)
    held = r.until_marker(topic)
    got_b = until_marker(b, topic)
    assert held, "the raw member got no message"
    assert sorted(held + got_b) == ALL
    r.close()  # its session ends with QoS 1 messages unacknowledged
    redelivered = [m.payload for m in b.expect_messages(len(held))]
    assert sorted(redelivered) == sorted(held)


def test_v5_shared_unsubscribe(client_factory, topic, proto):
    a = member(client_factory, proto, "g", topic)
    b = member(client_factory, proto, "g", topic)
    a.unsubscribe(f"$share/g/{topic}")
    publish_all(client_factory, topic)
    assert until_marker(b, topic) == ALL
    assert until_marker(a, topic) == []


def test_v5_shared_mixed_protocol_members(client_factory, topic):
    a = member(client_factory, "5", "g", topic)
    b = member(client_factory, "311", "g", topic)
    publish_all(client_factory, topic)
    ga, gb = until_marker(a, topic), until_marker(b, topic)
    assert sorted(ga + gb) == ALL
    assert len(ga) == len(gb) == N // 2


def test_v5_shared_granted_qos_applies(client_factory, topic):
    """A member subscribed at QoS 0 gets QoS 0 even for QoS 1 messages."""
    a = member(client_factory, "5", "g", topic, qos=0)
    publish_all(client_factory, topic, 2)
    for _ in range(2):
        m = a.expect_message()
        assert m.qos == 0


def test_v5_shared_subscription_identifier(raw_factory, topic):
    c, _ = v5connect(raw_factory, "sid")
    c.subscribe([(f"$share/g/{topic}", sub_options(1))],
                properties=[(v5.SUBSCRIPTION_ID, 9)])
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, b"x", qos=1)
    m = c.expect_publish()
    assert (m.topic, m.props.all(v5.SUBSCRIPTION_ID)) == (topic, [9])


def test_v5_shared_no_local_is_protocol_error(raw_factory, topic):
    c, _ = v5connect(raw_factory, "shared-nl")
    c.send(v5.subscribe(1, [(f"$share/g/{topic}",
                             sub_options(1, no_local=True))]))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)


BAD_SHARES = ["$share/g", "$share//t", "$share/g+/t", "$share/g#/t",
              "$share/", "$share/g/"]


def test_v5_shared_invalid_names_v5(raw_factory, topic):
    c, _ = v5connect(raw_factory, "bad-share")
    ack = c.subscribe([(f, sub_options(1)) for f in BAD_SHARES]
                      + [(f"$share/ok/{topic}", sub_options(1))])
    assert ack.codes == [v5.RC_TOPIC_FILTER_INVALID] * len(BAD_SHARES) + [1]


def test_v5_shared_invalid_names_v311(raw_factory, topic):
    r = raw_factory()
    assert r.connect("bad-share3").rc == 0
    codes = r.subscribe([(f, 1) for f in BAD_SHARES]
                        + [(f"$share/ok/{topic}", 1)])
    assert codes == [0x80] * len(BAD_SHARES) + [1]


def test_v5_shared_subscription_survives_resume(raw_factory, topic):
    a, _ = v5connect(raw_factory, "shared-persist",
                     properties=[(v5.SESSION_EXPIRY, 60)])
    a.subscribe([(f"$share/g/{topic}", sub_options(1))])
    a.send(v5.disconnect())
    assert a.wait_closed()
    b, ack = v5connect(raw_factory, "shared-persist", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, b"still a member", qos=1)
    assert b.expect_publish().payload == b"still a member"
    ack = b.unsubscribe([f"$share/g/{topic}", f"$share/other/{topic}"])
    assert ack.codes == [0, v5.RC_NO_SUBSCRIPTION_EXISTED]
