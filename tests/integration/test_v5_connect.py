"""MQTT 5.0 CONNECT / CONNACK: what the CONNACK advertises (and that the
broker enforces it: retain available, maximum QoS, server keep alive),
assigned client identifiers, user properties and request problem
information, invalid CONNECT properties, enhanced authentication."""
import time

import pytest

from harness import raw
from harness.raw import sub_options, v5, V5Client, v5connect


def test_v5_connack_default_capabilities(broker, raw_factory):
    _, ack = v5connect(raw_factory, "caps")
    p = ack.props
    # Absent Maximum QoS means 2; sending 2 would be a protocol error.
    assert v5.MAXIMUM_QOS not in p
    assert p.get(v5.RETAIN_AVAILABLE, 1) == 1
    assert p.get(v5.WILDCARD_SUB_AVAILABLE, 1) == 1
    assert p.get(v5.SUB_ID_AVAILABLE, 1) == 1
    assert p.get(v5.SHARED_SUB_AVAILABLE, 1) == 1
    assert p.get(v5.TOPIC_ALIAS_MAXIMUM) == 10
    for pid in set(p.ids()) - {v5.USER_PROPERTY}:
        assert len(p.all(pid)) == 1, f"property {pid:#x} repeated"
    if broker.is_starling:
        assert p.get(v5.RECEIVE_MAXIMUM) == 100
        assert p.get(v5.MAXIMUM_PACKET_SIZE) == 1048576
    # No assigned id or session expiry when the client gave its own.
    assert v5.ASSIGNED_CLIENT_ID not in p


@pytest.mark.broker(max_topic_alias=0, receive_maximum=7,
                    max_packet_size=4096)
def test_v5_connack_configured_limits(raw_factory):
    _, ack = v5connect(raw_factory, "limits")
    assert ack.props.get(v5.TOPIC_ALIAS_MAXIMUM, 0) == 0
    assert ack.props.get(v5.RECEIVE_MAXIMUM) == 7
    assert ack.props.get(v5.MAXIMUM_PACKET_SIZE) == 4096


def test_v5_assigned_client_identifier(raw_factory, topic):
    a, ack = v5connect(raw_factory, "")
    cid = ack.props.get(v5.ASSIGNED_CLIENT_ID)
    assert cid, f"no assigned client identifier in {ack!r}"
    b, ack2 = v5connect(raw_factory, "")
    assert ack2.props.get(v5.ASSIGNED_CLIENT_ID) not in (None, cid)
    # The assigned id names the session: a second connection takes it over.
    c, ack3 = v5connect(raw_factory, cid)
    assert v5.ASSIGNED_CLIENT_ID not in ack3.props
    a.expect_disconnect(v5.RC_SESSION_TAKEN_OVER)
    b.send(v5.pingreq())
    b.expect(raw.PINGRESP)


def test_v5_assigned_client_identifier_resumes_session(raw_factory, topic):
    """A zero-length id with clean start 0 is fine in MQTT 5: the session
    lives under the assigned id and can be resumed with it."""
    a, ack = v5connect(raw_factory, "", clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 30)])
    cid = ack.props.get(v5.ASSIGNED_CLIENT_ID)
    assert cid and not ack.session_present
    a.subscribe([(topic, sub_options(1))])
    a.send(v5.disconnect())
    assert a.wait_closed()
    pub, _ = v5connect(raw_factory, "aci-pub")
    assert pub.publish(topic, b"for you", qos=1).rc == 0
    b, ack = v5connect(raw_factory, cid, clean_start=False,
                       properties=[(v5.SESSION_EXPIRY, 30)])
    assert ack.session_present is True
    assert b.expect_publish().payload == b"for you"


def test_v5_paho_assigned_client_identifier(client_factory, topic):
    c = client_factory("", protocol="5")
    assert c.connack_props.AssignedClientIdentifier
    c.subscribe(topic, 1)
    client_factory(protocol="5").publish(topic, b"hi", qos=1)
    assert c.expect_message().payload == b"hi"


@pytest.mark.broker(allow_zero_length_clientid=False)
def test_v5_zero_length_client_id_refused(raw_factory):
    c = V5Client(raw_factory())
    ack = c.connect("")
    assert ack.rc == 0x85  # Client Identifier not valid
    assert c.wait_closed()


def test_v5_user_properties_on_connect_accepted(raw_factory, topic):
    c, ack = v5connect(raw_factory, "uprops", properties=[
        (v5.USER_PROPERTY, ("region", "eu")),
        (v5.USER_PROPERTY, ("region", "us")),
        (v5.USER_PROPERTY, ("", "")),
        (v5.REQUEST_RESPONSE_INFO, 0)])
    assert c.subscribe([(topic, sub_options(1))]).codes == [1]


def test_v5_request_problem_information_zero(raw_factory, topic):
    """With Request Problem Information 0 the broker must not send a Reason
    String or User Property on anything but PUBLISH, CONNACK and
    DISCONNECT."""
    c, _ = v5connect(raw_factory, "rpi0",
                     properties=[(v5.REQUEST_PROBLEM_INFO, 0)])
    sub = c.subscribe([("a/#/b", sub_options(0)), (topic, sub_options(1))])
    assert sub.codes == [v5.RC_TOPIC_FILTER_INVALID, 1]
    assert v5.REASON_STRING not in sub.props
    assert v5.USER_PROPERTY not in sub.props
    unsub = c.unsubscribe(["never/subscribed"])
    assert unsub.codes == [v5.RC_NO_SUBSCRIPTION_EXISTED]
    assert v5.REASON_STRING not in unsub.props
    ack = c.publish(topic + "/nobody", b"x", qos=1)
    assert ack.rc == v5.RC_NO_MATCHING_SUBSCRIBERS
    assert v5.REASON_STRING not in ack.props
    ack = c.publish(topic + "/nobody", b"x", qos=2)
    assert v5.REASON_STRING not in ack.props


def test_v5_request_problem_information_invalid(raw_factory):
    c = V5Client(raw_factory())
    c.connect_refused("rpi2", v5.RC_PROTOCOL_ERROR,
                      properties=[(v5.REQUEST_PROBLEM_INFO, 2)])


@pytest.mark.starling_only  # mosquitto's max_keepalive is at least 10
@pytest.mark.broker(max_keepalive=2)
def test_v5_server_keep_alive_enforced(raw_factory):
    c = V5Client(raw_factory())
    ack = c.connect("ska", keepalive=60)
    assert ack.rc == 0
    assert ack.props.get(v5.SERVER_KEEP_ALIVE) == 2
    start = time.monotonic()
    seen = []
    with pytest.raises(raw.Closed):
        while True:  # silence until the broker closes (1.5 x 2 s)
            seen.append(c.recv(max(4.5 - (time.monotonic() - start), 0.01)))
    elapsed = time.monotonic() - start
    assert 2.0 <= elapsed <= 4.5, f"closed after {elapsed:.2f} s"
    assert all(p.type == raw.DISCONNECT and
               p.rc == v5.RC_KEEP_ALIVE_TIMEOUT for p in seen), seen


@pytest.mark.starling_only  # mosquitto's max_keepalive is at least 10
@pytest.mark.broker(max_keepalive=2)
def test_v5_server_keep_alive_for_keepalive_zero(raw_factory):
    """Keep alive 0 (none) is more than any maximum."""
    _, ack = v5connect(raw_factory, "ska0", keepalive=0)
    assert ack.props.get(v5.SERVER_KEEP_ALIVE) == 2


@pytest.mark.broker(retain_available=False)
def test_v5_retain_not_available(raw_factory, topic):
    c, ack = v5connect(raw_factory, "noretain")
    assert ack.props.get(v5.RETAIN_AVAILABLE) == 0
    assert c.publish(topic, b"plain", qos=1).rc in (
        0, v5.RC_NO_MATCHING_SUBSCRIBERS)
    c.send(v5.publish(topic, b"kept", qos=1, retain=True, pid=9))
    c.expect_disconnect(v5.RC_RETAIN_NOT_SUPPORTED)


@pytest.mark.broker(retain_available=False)
def test_v5_retained_will_refused_without_retain(raw_factory, topic):
    c = V5Client(raw_factory())
    ack = c.connect("noretain-will", will=(topic, b"w", 0, True, ()))
    assert ack.rc == v5.RC_RETAIN_NOT_SUPPORTED
    assert c.wait_closed()


@pytest.mark.broker(max_qos=1)
def test_v5_maximum_qos_enforced(raw_factory, topic):
    c, ack = v5connect(raw_factory, "maxqos")
    assert ack.props.get(v5.MAXIMUM_QOS) == 1
    # A subscription asking for QoS 2 is granted 1.
    assert c.subscribe([(topic, sub_options(2))]).codes == [1]
    pub, _ = v5connect(raw_factory, "maxqos-pub")
    assert pub.publish(topic, b"one", qos=1).rc == 0
    m = c.expect_publish()
    assert (m.payload, m.qos) == (b"one", 1)
    c.send(v5.publish(topic, b"two", qos=2, pid=7))
    c.expect_disconnect(v5.RC_QOS_NOT_SUPPORTED)


@pytest.mark.broker(max_qos=1)
def test_v5_will_qos_above_maximum_refused(raw_factory, topic):
    c = V5Client(raw_factory())
    ack = c.connect("maxqos-will", will=(topic, b"w", 2, False, ()))
    assert ack.rc == v5.RC_QOS_NOT_SUPPORTED
    assert c.wait_closed()


def test_v5_capabilities_are_truthful(raw_factory, topic):
    """Wildcards, subscription identifiers and shared subscriptions, which
    the CONNACK says are available, are granted."""
    c, _ = v5connect(raw_factory, "truthful")
    ack = c.subscribe([(topic + "/#", sub_options(1)),
                       (f"$share/g/{topic}/x", sub_options(1))],
                      properties=[(v5.SUBSCRIPTION_ID, 5)])
    assert ack.codes == [1, 1]


def test_v5_enhanced_auth_unsupported_method(raw_factory):
    c = V5Client(raw_factory())
    ack = c.connect("scram", properties=[(v5.AUTH_METHOD, "SCRAM-SHA-256"),
                                         (v5.AUTH_DATA, b"n,,n=user")])
    assert ack.rc == v5.RC_BAD_AUTH_METHOD
    assert c.wait_closed()


@pytest.mark.parametrize("props,rc", [
    ([(v5.SESSION_EXPIRY, 1), (v5.SESSION_EXPIRY, 2)], v5.RC_PROTOCOL_ERROR),
    ([(v5.RECEIVE_MAXIMUM, 0)], v5.RC_PROTOCOL_ERROR),
    ([(v5.MAXIMUM_PACKET_SIZE, 0)], v5.RC_PROTOCOL_ERROR),
    ([(v5.PAYLOAD_FORMAT, 1)], v5.RC_MALFORMED),
    ([(v5.TOPIC_ALIAS, 1)], v5.RC_MALFORMED),
    ([bytes([0x7F, 0x00])], v5.RC_MALFORMED),
], ids=["duplicate", "receive_max_0", "max_packet_0", "payload_format",
        "topic_alias", "unknown_id"])
def test_v5_connect_bad_properties(raw_factory, props, rc):
    V5Client(raw_factory()).connect_refused("badprops", rc, properties=props)


def test_v5_connect_bad_will_property(raw_factory, topic):
    """Session Expiry is not a will property: malformed."""
    V5Client(raw_factory()).connect_refused(
        "badwill", v5.RC_MALFORMED,
        will=(topic, b"w", 0, False, [(v5.SESSION_EXPIRY, 5)]))


def test_v5_connect_properties_length_overrun(raw_factory):
    """A property length running past the packet: malformed."""
    body = (raw.mqtt_str("MQTT") + bytes([5, 2]) + raw.u16(60)
            + bytes([40]) + bytes([v5.SESSION_EXPIRY]) + v5.u32(5)
            + raw.mqtt_str("overrun"))
    c = V5Client(raw_factory())
    c.send(raw.packet(raw.CONNECT, 0, body))
    try:
        ack = c.recv()
    except raw.Closed:
        return  # closing without a CONNACK is allowed too
    assert ack.type == raw.CONNACK and ack.rc == v5.RC_MALFORMED
    assert c.wait_closed()


def test_v5_auth_packet_without_method(raw_factory):
    """AUTH after a CONNECT without an authentication method."""
    c, _ = v5connect(raw_factory, "auth-none")
    c.send(raw.packet(v5.AUTH, 0, bytes([0x19]) + v5.props(())))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)


def test_v5_second_connect_is_protocol_error(raw_factory):
    c, _ = v5connect(raw_factory, "twice")
    c.send(v5.connect("twice"))
    c.expect_disconnect(v5.RC_PROTOCOL_ERROR)


@pytest.mark.starling_only
def test_v5_server_shutting_down(broker, raw_factory):
    """On SIGTERM an MQTT 5 client is told why: DISCONNECT 0x8B."""
    c, _ = v5connect(raw_factory, "bye")
    broker.stop()  # SIGTERM, and checks the exit status
    c.expect_disconnect(0x8B)  # Server shutting down
    assert not broker.problems, broker.problems
