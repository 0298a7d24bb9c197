"""MQTT 5.0 SUBSCRIBE / UNSUBSCRIBE: subscription options (no local,
retain as published, retain handling 0/1/2), subscription identifiers,
overlapping subscriptions (one delivery at the highest QoS carrying every
identifier), SUBACK and UNSUBACK reason codes per filter, invalid
SUBSCRIBE contents."""
import pytest

from harness import raw
from harness.client import paho_props
from harness.raw import sub_options, v5, v5connect


SUBID_MAX = 268435455  # largest variable byte integer


def publisher(raw_factory):
    pub, _ = v5connect(raw_factory, "pub")
    return pub


def test_v5_no_local(raw_factory, topic):
    c, _ = v5connect(raw_factory, "nolocal")
    c.subscribe([(topic, sub_options(1, no_local=True)),
                 (topic + "/end", sub_options(1))])
    other, _ = v5connect(raw_factory, "other")
    other.subscribe([(topic, sub_options(1))])
    c.publish(topic, b"mine", qos=1)
    # Others still get it; the publisher does not.
    assert other.expect_publish().payload == b"mine"
    publisher(raw_factory).publish(topic, b"theirs", qos=1)
    assert c.expect_publish().payload == b"theirs"
    c.publish(topic + "/end", b"end", qos=1)
    m = c.expect_publish()
    assert m.payload == b"end"  # the local message never came


def test_v5_no_local_does_not_hide_other_clients(raw_factory, topic):
    c, _ = v5connect(raw_factory, "nolocal2")
    c.subscribe([(topic, sub_options(0, no_local=True))])
    publisher(raw_factory).publish(topic, b"x", qos=1)
    assert c.expect_publish().payload == b"x"


def test_v5_retain_as_published(raw_factory, topic):
    rap, _ = v5connect(raw_factory, "rap")
    rap.subscribe([(topic, sub_options(1, retain_as_published=True))])
    plain, _ = v5connect(raw_factory, "plain")
    plain.subscribe([(topic, sub_options(1))])
    pub = publisher(raw_factory)
    pub.publish(topic, b"r", qos=1, retain=True)
    pub.publish(topic, b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in
            (rap.expect_publish(), rap.expect_publish())] == [
        (b"r", True), (b"n", False)]
    # Without the option a live message arrives with retain 0.
    assert [(m.payload, m.retain) for m in
            (plain.expect_publish(), plain.expect_publish())] == [
        (b"r", False), (b"n", False)]


def test_v5_retained_on_subscribe_always_flagged(raw_factory, topic):
    publisher(raw_factory).publish(topic, b"old", qos=1, retain=True)
    c, _ = v5connect(raw_factory, "late")
    c.subscribe([(topic, sub_options(1))])  # retain as published 0
    m = c.expect_publish()
    assert (m.payload, m.retain) == (b"old", True)


def test_v5_retain_handling_0_sends_on_every_subscribe(raw_factory, topic):
    publisher(raw_factory).publish(topic, b"old", qos=1, retain=True)
    c, _ = v5connect(raw_factory, "rh0")
    for _ in range(2):
        c.subscribe([(topic, sub_options(1, retain_handling=0))])
        m = c.expect_publish()
        assert (m.payload, m.retain) == (b"old", True)


def test_v5_retain_handling_1_only_new_subscription(raw_factory, topic):
    pub = publisher(raw_factory)
    pub.publish(topic, b"old", qos=1, retain=True)
    c, _ = v5connect(raw_factory, "rh1")
    c.subscribe([(topic, sub_options(1, retain_handling=1)),
                 (topic + "/end", sub_options(1))])
    m = c.expect_publish()
    assert (m.payload, m.retain) == (b"old", True)
    # The same filter again: the subscription exists, nothing is sent.
    c.subscribe([(topic, sub_options(1, retain_handling=1))])
    pub.publish(topic + "/end", b"end", qos=1)
    assert c.expect_publish().payload == b"end"


def test_v5_retain_handling_1_after_session_resume(raw_factory, topic):
    """The subscription survives in the resumed session, so it is not
    new."""
    pub = publisher(raw_factory)
    pub.publish(topic, b"old", qos=1, retain=True)
    a, _ = v5connect(raw_factory, "rh1s",
                     properties=[(v5.SESSION_EXPIRY, 30)])
    a.subscribe([(topic, sub_options(1, retain_handling=1)),
                 (topic + "/end", sub_options(1))])
    assert a.expect_publish().payload == b"old"
    a.send(v5.disconnect())
    assert a.wait_closed()
    b, ack = v5connect(raw_factory, "rh1s", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 30)])
    assert ack.session_present
    b.subscribe([(topic, sub_options(1, retain_handling=1))])
    pub.publish(topic + "/end", b"end", qos=1)
    assert b.expect_publish().payload == b"end"


def test_v5_retain_handling_2_never(raw_factory, topic):
    pub = publisher(raw_factory)
    pub.publish(topic, b"old", qos=1, retain=True)
    c, _ = v5connect(raw_factory, "rh2")
    c.subscribe([(topic, sub_options(1, retain_handling=2)),
                 (topic + "/end", sub_options(1))])
    pub.publish(topic + "/end", b"end", qos=1)
    assert c.expect_publish().payload == b"end"
    # Live messages still flow.
    pub.publish(topic, b"new", qos=1)
    assert c.expect_publish().payload == b"new"


def test_v5_subscription_identifier(raw_factory, topic):
    c, _ = v5connect(raw_factory, "subid")
    c.subscribe([(topic + "/+", sub_options(1))],
                properties=[(v5.SUBSCRIPTION_ID, SUBID_MAX)])
    c.subscribe([(topic + "/plain", sub_options(1))])
    pub = publisher(raw_factory)
    pub.publish(topic + "/a", b"a", qos=1)
    m = c.expect_publish()
    assert m.props.all(v5.SUBSCRIPTION_ID) == [SUBID_MAX]
    pub.publish(topic + "/x/y", b"nomatch", qos=1)
    pub.publish(topic + "/plain", b"p", qos=1)
    # topic/plain matches both topic/+ (id) and topic/plain (no id).
    m = c.expect_publish()
    assert m.payload == b"p"
    assert m.props.all(v5.SUBSCRIPTION_ID) == [SUBID_MAX]


def test_v5_subscription_identifier_replaced(raw_factory, topic):
    c, _ = v5connect(raw_factory, "subid-re")
    c.subscribe([(topic, sub_options(1))],
                properties=[(v5.SUBSCRIPTION_ID, 1)])
    c.subscribe([(topic, sub_options(1))],
                properties=[(v5.SUBSCRIPTION_ID, 2)])
    publisher(raw_factory).publish(topic, b"x", qos=1)
    assert c.expect_publish().props.all(v5.SUBSCRIPTION_ID) == [2]
    c.subscribe([(topic, sub_options(1))])  # no identifier any more
    publisher(raw_factory).publish(topic, b"y", qos=1)
    assert v5.SUBSCRIPTION_ID not in c.expect_publish().props


def test_v5_subscription_identifier_on_retained(raw_factory, topic):
    publisher(raw_factory).publish(topic, b"old", qos=1, retain=True)
    c, _ = v5connect(raw_factory, "subid-ret")
    c.subscribe([(topic, sub_options(1))],
                properties=[(v5.SUBSCRIPTION_ID, 42)])
    m = c.expect_publish()
    assert (m.payload, m.retain) == (b"old", True)
    assert m.props.all(v5.SUBSCRIPTION_ID) == [42]


def test_v5_subscription_identifier_zero(raw_factory, topic):
    c, _ = v5connect(raw_factory, "subid0")
    c.send(v5.subscribe(1, [(topic, sub_options(1))],
                        properties=[(v5.SUBSCRIPTION_ID, 0)]))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)


def test_v5_overlapping_subscriptions_one_delivery(raw_factory, topic):
    """Three matching subscriptions (QoS 0 id 1, QoS 2 id 2, QoS 1 without
    id): one PUBLISH at QoS 2 carrying identifiers 1 and 2."""
    c, _ = v5connect(raw_factory, "overlap")
    c.subscribe([(topic + "/+", sub_options(0))],
                properties=[(v5.SUBSCRIPTION_ID, 1)])
    c.subscribe([(topic + "/#", sub_options(2))],
                properties=[(v5.SUBSCRIPTION_ID, 2)])
    c.subscribe([(topic + "/a", sub_options(1)),
                 (topic + "/end", sub_options(0))])
    pub = publisher(raw_factory)
    pub.publish(topic + "/a", b"one copy", qos=2)
    pub.publish(topic + "/end", b"end", qos=0)
    m = c.expect_publish()
    assert (m.payload, m.qos) == (b"one copy", 2)
    assert sorted(m.props.all(v5.SUBSCRIPTION_ID)) == [1, 2]
    m = c.expect_publish()
    assert m.payload == b"end", f"second copy delivered: {m!r}"


def test_v5_overlapping_subscriptions_paho(client_factory, topic):
    c = client_factory(protocol="5")
    c.subscribe(topic + "/#", 1, properties=paho_props(
        "SUBSCRIBE", SubscriptionIdentifier=11))
    c.subscribe(topic + "/+", 0, properties=paho_props(
        "SUBSCRIBE", SubscriptionIdentifier=22))
    c.subscribe(topic + "/end", 0)
    pub = client_factory(protocol="5")
    pub.publish(topic + "/x", b"x", qos=1)
    pub.publish(topic + "/end", b"end", qos=1)
    m = c.expect_message()
    assert (m.payload, m.qos) == (b"x", 1)
    assert sorted(m.properties.SubscriptionIdentifier) == [11, 22]
    m = c.expect_message()
    assert m.topic == topic + "/end"


def test_v5_overlapping_no_local_and_plain(raw_factory, topic):
    """No local on one of two matching subscriptions: the publisher still
    gets its message through the other one, once."""
    c, _ = v5connect(raw_factory, "overlap-nl")
    c.subscribe([(topic + "/#", sub_options(1, no_local=True)),
                 (topic + "/a", sub_options(0))])
    c.publish(topic + "/a", b"mine", qos=1)
    c.publish(topic + "/a", b"again", qos=0)
    assert c.expect_publish().payload == b"mine"
    assert c.expect_publish().payload == b"again"


def test_v5_suback_reason_codes(raw_factory, topic):
    c, _ = v5connect(raw_factory, "suback")
    ack = c.subscribe([(topic + "/q0", sub_options(0)),
                       (topic + "/a/#/b", sub_options(1)),
                       (topic + "/q1/+", sub_options(1)),
                       (topic + "/a+", sub_options(0)),
                       (topic + "/q2/#", sub_options(2)),
                       ("#", sub_options(2))])
    assert ack.codes == [0, v5.RC_TOPIC_FILTER_INVALID, 1,
                         v5.RC_TOPIC_FILTER_INVALID, 2, 2]


def test_v5_unsuback_reason_codes(raw_factory, topic):
    c, _ = v5connect(raw_factory, "unsuback")
    c.subscribe([(topic, sub_options(1)), (topic + "/#", sub_options(0))])
    ack = c.unsubscribe([topic, topic + "/other", topic + "/#", topic])
    assert ack.codes == [0, v5.RC_NO_SUBSCRIPTION_EXISTED, 0,
                         v5.RC_NO_SUBSCRIPTION_EXISTED]
    c.subscribe([(topic + "/end", sub_options(1))])
    pub = publisher(raw_factory)
    pub.publish(topic, b"gone", qos=1)
    pub.publish(topic + "/end", b"end", qos=1)
    assert c.expect_publish().payload == b"end"


@pytest.mark.parametrize("opts,rc", [
    (0x03, v5.RC_PROTOCOL_ERROR),   # QoS 3
    (0x30, v5.RC_PROTOCOL_ERROR),   # retain handling 3
    (0x41, v5.RC_MALFORMED),        # reserved bit 6
    (0x81, v5.RC_MALFORMED),        # reserved bit 7
], ids=["qos3", "retain_handling_3", "reserved6", "reserved7"])
def test_v5_subscribe_bad_options(raw_factory, topic, opts, rc):
    c, _ = v5connect(raw_factory, "badopts")
    c.send(v5.subscribe(1, [(topic, opts)]))
    c.expect_disconnect(rc)


def test_v5_subscribe_without_filters(raw_factory):
    c, _ = v5connect(raw_factory, "nofilters")
    c.send(v5.subscribe(1, []))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)


def test_v5_subscribe_duplicate_subscription_identifier(raw_factory, topic):
    c, _ = v5connect(raw_factory, "subid-dup")
    c.send(v5.subscribe(1, [(topic, sub_options(1))], properties=[
        (v5.SUBSCRIPTION_ID, 1), (v5.SUBSCRIPTION_ID, 2)]))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)


def test_v5_unsubscribe_user_properties_accepted(raw_factory, topic):
    c, _ = v5connect(raw_factory, "unsub-props")
    c.subscribe([(topic, sub_options(1))])
    c.send(v5.unsubscribe(7, [topic], properties=[
        (v5.USER_PROPERTY, ("why", "done"))]))
    ack = c.expect(raw.UNSUBACK)
    assert (ack.pid, ack.codes) == (7, [0])
