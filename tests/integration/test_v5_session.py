"""MQTT 5.0 session lifetime: the Session Expiry Interval of CONNECT (0,
N seconds, 0xFFFFFFFF, capped by the broker) and its change by DISCONNECT
(N -> M allowed, 0 -> N a protocol error); what a resumed session keeps
(subscription options and identifiers, queued messages with their
properties, unacknowledged messages)."""
import time

import pytest

from harness import raw
from harness.client import paho5
from harness.raw import sub_options, v5, v5connect


def offline_session(raw_factory, cid, topic, expiry, **kw):
    """Connect cid with the given session expiry, subscribe to topic at
    QoS 1, then DISCONNECT (with extra DISCONNECT properties from kw)."""
    props = [] if expiry is None else [(v5.SESSION_EXPIRY, expiry)]
    c, ack = v5connect(raw_factory, cid, clean_start=True, properties=props)
    assert c.subscribe([(topic, sub_options(1))]).codes == [1]
    c.send(v5.disconnect(properties=kw.get("disconnect_props", ())))
    assert c.wait_closed()
    return ack


def test_v5_session_expiry_absent_means_zero(raw_factory, topic):
    """No Session Expiry Interval: the session ends with the connection."""
    offline_session(raw_factory, "se-absent", topic, None)
    pub, _ = v5connect(raw_factory, "se-absent-pub")
    assert pub.publish(topic, b"x", qos=1).rc == v5.RC_NO_MATCHING_SUBSCRIBERS
    c, ack = v5connect(raw_factory, "se-absent", clean_start=False)
    assert ack.session_present is False


def test_v5_session_expiry_zero_session_gone(raw_factory, topic):
    offline_session(raw_factory, "se-zero", topic, 0)
    c, ack = v5connect(raw_factory, "se-zero", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present is False
    # The old subscription is gone too: only the marker arrives.
    assert c.subscribe([(topic + "/end", sub_options(1))]).codes == [1]
    pub, _ = v5connect(raw_factory, "se-zero-pub")
    pub.publish(topic, b"stale", qos=1)
    pub.publish(topic + "/end", b"end", qos=1)
    assert c.expect_publish().payload == b"end"


def test_v5_session_present_within_expiry(raw_factory, topic):
    offline_session(raw_factory, "se-two", topic, 2)
    pub, _ = v5connect(raw_factory, "se-two-pub")
    assert pub.publish(topic, b"queued", qos=1).rc == 0
    c, ack = v5connect(raw_factory, "se-two", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 2)])
    assert ack.session_present is True
    m = c.expect_publish()
    assert (m.topic, m.payload, m.qos) == (topic, b"queued", 1)
    # And the subscription is still active.
    pub.publish(topic, b"live", qos=1)
    assert c.expect_publish().payload == b"live"


def test_v5_session_expires_after_interval(raw_factory, topic):
    offline_session(raw_factory, "se-one", topic, 1)
    pub, _ = v5connect(raw_factory, "se-one-pub")
    waited = pub.wait_no_subscriber(topic, 4.0)
    assert waited >= 0.8, f"session expired after {waited:.2f} s, not 1 s"
    c, ack = v5connect(raw_factory, "se-one", clean_start=False)
    assert ack.session_present is False
    c.subscribe([(topic + "/end", sub_options(1))])
    pub.publish(topic + "/end", b"end", qos=1)
    # None of the probes queued for the expired session is delivered.
    assert c.expect_publish().payload == b"end"


def test_v5_session_expiry_never(raw_factory, topic):
    ack = offline_session(raw_factory, "se-max", topic, 0xFFFFFFFF)
    assert ack.props.get(v5.SESSION_EXPIRY, 0xFFFFFFFF) == 0xFFFFFFFF
    pub, _ = v5connect(raw_factory, "se-max-pub")
    assert pub.publish(topic, b"kept", qos=1).rc == 0
    c, ack = v5connect(raw_factory, "se-max", clean_start=False)
    assert ack.session_present is True
    assert c.expect_publish().payload == b"kept"


@pytest.mark.broker(max_session_expiry=1)
def test_v5_session_expiry_capped_by_broker(raw_factory, topic):
    """The broker uses a shorter interval than asked and says so in the
    CONNACK (MQTT 5 §3.2.2.3.2)."""
    ack = offline_session(raw_factory, "se-cap", topic, 3600)
    assert ack.props.get(v5.SESSION_EXPIRY) == 1
    pub, _ = v5connect(raw_factory, "se-cap-pub")
    waited = pub.wait_no_subscriber(topic, 4.0)
    assert waited >= 0.8


def test_v5_disconnect_sets_expiry_to_zero(raw_factory, topic):
    offline_session(raw_factory, "sd-zero", topic, 60,
                    disconnect_props=[(v5.SESSION_EXPIRY, 0)])
    c, ack = v5connect(raw_factory, "sd-zero", clean_start=False)
    assert ack.session_present is False


def test_v5_disconnect_shortens_expiry(raw_factory, topic):
    offline_session(raw_factory, "sd-short", topic, 60,
                    disconnect_props=[(v5.SESSION_EXPIRY, 1)])
    pub, _ = v5connect(raw_factory, "sd-short-pub")
    waited = pub.wait_no_subscriber(topic, 4.0)
    assert waited >= 0.8, f"session expired after {waited:.2f} s, not 1 s"


def test_v5_disconnect_lengthens_expiry(raw_factory, topic):
    """N -> M with M > N: the session outlives N."""
    offline_session(raw_factory, "sd-long", topic, 1,
                    disconnect_props=[(v5.SESSION_EXPIRY, 60)])
    pub, _ = v5connect(raw_factory, "sd-long-pub")
    time.sleep(1.5)  # past the interval of CONNECT: nothing to wait on
    assert pub.publish(topic, b"still", qos=1).rc == 0
    c, ack = v5connect(raw_factory, "sd-long", clean_start=False)
    assert ack.session_present is True
    assert c.expect_publish().payload == b"still"


def test_v5_disconnect_expiry_from_zero_is_protocol_error(raw_factory,
                                                          topic):
    """CONNECT with expiry 0, DISCONNECT with expiry 30: not a valid
    DISCONNECT, so the broker answers DISCONNECT 0x82, the will is
    published, and the session still ends."""
    sub, _ = v5connect(raw_factory, "sz-sub")
    sub.subscribe([(topic + "/will", sub_options(1))])
    c, _ = v5connect(raw_factory, "sz", clean_start=True,
                     will=(topic + "/will", b"w", 1, False, ()))
    c.subscribe([(topic, sub_options(1))])
    c.send(v5.disconnect(properties=[(v5.SESSION_EXPIRY, 30)]))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)
    assert sub.expect_publish().payload == b"w"
    again, ack = v5connect(raw_factory, "sz", clean_start=False)
    assert ack.session_present is False


def test_v5_paho_session_resume(client_factory, topic):
    """The same through paho: clean start 0 + expiry resumes the session
    with its subscriptions and queued messages."""
    a = paho5(client_factory, "paho-se", clean_start=True,
                 SessionExpiryInterval=30)
    a.subscribe(topic, 1)
    a.disconnect()
    client_factory(protocol="5").publish(topic, b"while away", qos=1)
    b = paho5(client_factory, "paho-se", clean_start=False,
                 SessionExpiryInterval=30)
    assert b.session_present
    assert b.expect_message().payload == b"while away"


def test_v5_clean_start_discards_session(raw_factory, topic):
    offline_session(raw_factory, "cs1", topic, 60)
    pub, _ = v5connect(raw_factory, "cs1-pub")
    pub.publish(topic, b"stale", qos=1)
    c, ack = v5connect(raw_factory, "cs1", clean_start=True,
                       properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present is False
    c.subscribe([(topic + "/end", sub_options(1))])
    pub.publish(topic, b"unsubscribed now", qos=1)
    pub.publish(topic + "/end", b"end", qos=1)
    assert c.expect_publish().payload == b"end"


def test_v5_subscription_options_survive_resume(raw_factory, topic):
    """Identifiers, no local and retain as published are part of the
    session."""
    c, _ = v5connect(raw_factory, "opts", properties=[
        (v5.SESSION_EXPIRY, 60)])
    c.subscribe([(topic, sub_options(1, no_local=True,
                                     retain_as_published=True))],
                properties=[(v5.SUBSCRIPTION_ID, 300)])
    c.subscribe([(topic + "/end", sub_options(1))])
    c.send(v5.disconnect())
    assert c.wait_closed()
    again, ack = v5connect(raw_factory, "opts", clean_start=False,
                           properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present
    again.publish(topic, b"mine", qos=1)  # no local: not for us
    pub, _ = v5connect(raw_factory, "opts-pub")
    pub.publish(topic, b"kept", qos=1, retain=True)
    m = again.expect_publish()
    assert (m.payload, m.retain) == (b"kept", True)
    assert m.props.all(v5.SUBSCRIPTION_ID) == [300]


def test_v5_queued_messages_keep_properties(raw_factory, topic):
    offline_session(raw_factory, "qprops", topic, 60)
    pub, _ = v5connect(raw_factory, "qprops-pub")
    props = [(v5.PAYLOAD_FORMAT, 1), (v5.CONTENT_TYPE, "text/csv"),
             (v5.RESPONSE_TOPIC, topic + "/r"),
             (v5.CORRELATION_DATA, b"\x01\x02"),
             (v5.USER_PROPERTY, ("a", "1")), (v5.USER_PROPERTY, ("a", "2"))]
    pub.publish(topic, b"1,2", qos=1, properties=props)
    c, ack = v5connect(raw_factory, "qprops", clean_start=False)
    assert ack.session_present
    m = c.expect_publish()
    assert m.payload == b"1,2"
    assert [kv for kv in m.props.items if kv[0] != v5.SUBSCRIPTION_ID] == \
        props


def test_v5_unacked_resent_on_resume_within_receive_maximum(raw_factory,
                                                            topic):
    """Unacknowledged QoS 1 messages are resent with DUP on resume, and
    the new connection's Receive Maximum limits them."""
    c, _ = v5connect(raw_factory, "resend",
                     properties=[(v5.SESSION_EXPIRY, 60)])
    c.subscribe([(topic, sub_options(1))])
    pub, _ = v5connect(raw_factory, "resend-pub")
    for i in range(4):
        pub.publish(topic, b"%d" % i, qos=1)
    first = [c.expect_publish(auto_ack=False) for _ in range(4)]
    assert [m.payload for m in first] == [b"0", b"1", b"2", b"3"]
    c.raw.close()  # nothing acknowledged
    again, ack = v5connect(raw_factory, "resend", clean_start=False,
                           properties=[(v5.SESSION_EXPIRY, 60),
                                       (v5.RECEIVE_MAXIMUM, 2)])
    assert ack.session_present
    two = [again.expect_publish(auto_ack=False) for _ in range(2)]
    assert [(m.payload, m.dup) for m in two] == [(b"0", True), (b"1", True)]
    again.expect_nothing(0.4)  # window of 2 full
    for m in two:
        again.send(v5.ack(raw.PUBACK, m.pid))
    rest = [again.expect_publish() for _ in range(2)]
    assert [m.payload for m in rest] == [b"2", b"3"]


def test_v5_puback_error_code_ends_delivery(raw_factory, topic):
    """A PUBACK with reason code 0x80 still acknowledges: the message is
    not sent again on resume."""
    c, _ = v5connect(raw_factory, "nack",
                     properties=[(v5.SESSION_EXPIRY, 60)])
    c.subscribe([(topic, sub_options(1)), (topic + "/end", sub_options(1))])
    pub, _ = v5connect(raw_factory, "nack-pub")
    pub.publish(topic, b"refused", qos=1)
    m = c.expect_publish(auto_ack=False)
    c.send(v5.ack(raw.PUBACK, m.pid, v5.RC_UNSPECIFIED))
    c.send(v5.disconnect())
    assert c.wait_closed()
    again, ack = v5connect(raw_factory, "nack", clean_start=False,
                           properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present
    pub.publish(topic + "/end", b"end", qos=1)
    assert again.expect_publish().payload == b"end"


@pytest.mark.broker(max_session_expiry=0)
def test_v5_session_expiry_cap_zero(raw_factory, topic):
    ack = offline_session(raw_factory, "cap0", topic, 3600)
    assert ack.props.get(v5.SESSION_EXPIRY) == 0
    c, ack = v5connect(raw_factory, "cap0", clean_start=False)
    assert ack.session_present is False


def test_v5_takeover_resumes_inflight(raw_factory, topic):
    """A second connection with clean start 0 takes the session over from
    a live one: the first gets DISCONNECT 0x8E, the second the session with
    its unacknowledged messages (DUP set)."""
    a, _ = v5connect(raw_factory, "take", properties=[
        (v5.SESSION_EXPIRY, 60)])
    a.subscribe([(topic, sub_options(1))])
    pub, _ = v5connect(raw_factory, "take-pub")
    pub.publish(topic, b"0", qos=1)
    pub.publish(topic, b"1", qos=1)
    got = [a.expect_publish(auto_ack=False) for _ in range(2)]
    assert [m.payload for m in got] == [b"0", b"1"]
    b, ack = v5connect(raw_factory, "take", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present
    a.expect_disconnect(v5.RC_SESSION_TAKEN_OVER)
    again = [b.expect_publish() for _ in range(2)]
    assert [(m.payload, m.dup) for m in again] == [(b"0", True), (b"1", True)]
    pub.publish(topic, b"2", qos=1)
    assert b.expect_publish().payload == b"2"


def test_v5_takeover_within_will_delay_no_will(raw_factory, topic):
    sub, _ = v5connect(raw_factory, "take-will-sub")
    sub.subscribe([(topic, sub_options(1)), (topic + "/end", sub_options(1))])
    a, _ = v5connect(raw_factory, "take-will",
                     properties=[(v5.SESSION_EXPIRY, 60)],
                     will=(topic, b"never", 1, False, [(v5.WILL_DELAY, 1)]))
    start = time.monotonic()
    b, ack = v5connect(raw_factory, "take-will", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 60)])
    a.expect_disconnect(v5.RC_SESSION_TAKEN_OVER)
    time.sleep(max(0.0, start + 1.5 - time.monotonic()))  # past the delay
    pub, _ = v5connect(raw_factory, "take-will-pub")
    pub.publish(topic + "/end", b"end", qos=1)
    assert sub.expect_publish().payload == b"end"


@pytest.mark.starling_only  # outbound aliases are optional for a server
def test_v5_resent_message_has_topic_name(raw_factory, topic):
    """A message first sent with an alias only is resent on the next
    connection with its topic name: aliases do not outlive a connection."""
    props = [(v5.TOPIC_ALIAS_MAXIMUM, 5), (v5.SESSION_EXPIRY, 60)]
    c, _ = v5connect(raw_factory, "alias-resend", properties=props)
    c.subscribe([(topic, sub_options(1))])
    pub, _ = v5connect(raw_factory, "alias-resend-pub")
    pub.publish(topic, b"1", qos=1)
    pub.publish(topic, b"2", qos=1)
    assert c.expect_publish().topic == topic
    m = c.expect_publish(auto_ack=False)
    assert (m.topic, m.payload) == ("", b"2")
    c.raw.close()
    again, ack = v5connect(raw_factory, "alias-resend", clean_start=False,
                           properties=props)
    assert ack.session_present
    m = again.expect_publish()
    assert (m.topic, m.payload, m.dup) == (topic, b"2", True)


def test_v5_resend_respects_new_maximum_packet_size(raw_factory, topic):
    """An unacknowledged message too large for the new connection's
    Maximum Packet Size is dropped, not resent."""
    c, _ = v5connect(raw_factory, "resend-size",
                     properties=[(v5.SESSION_EXPIRY, 60)])
    c.subscribe([(topic, sub_options(1)), (topic + "/end", sub_options(1))])
    pub, _ = v5connect(raw_factory, "resend-size-pub")
    pub.publish(topic, b"B" * 300, qos=1)
    assert len(c.expect_publish(auto_ack=False).payload) == 300
    c.raw.close()
    again, ack = v5connect(raw_factory, "resend-size", clean_start=False,
                           properties=[(v5.SESSION_EXPIRY, 60),
                                       (v5.MAXIMUM_PACKET_SIZE, 100)])
    assert ack.session_present
    pub.publish(topic + "/end", b"end", qos=1)
    m = again.expect_publish()
    assert m.payload == b"end", f"oversized message resent: {m!r}"
