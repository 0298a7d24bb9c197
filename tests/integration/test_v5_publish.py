"""MQTT 5.0 PUBLISH: application properties forwarded unchanged (payload
format, content type, response topic, correlation data, user properties),
message expiry, PUBACK/PUBREC 0x10, topic aliases in both directions,
invalid PUBLISH properties, and MQTT 3.1.1 <-> 5.0 exchanges."""
import time

import pytest

from harness import raw
from harness.client import paho_props
from harness.raw import sub_options, v5, v5connect


def subscriber(raw_factory, topic, cid="sub", qos=1, **kw):
    sub, ack = v5connect(raw_factory, cid, **kw)
    assert sub.subscribe([(topic, sub_options(qos)),
                          (topic + "/end", sub_options(qos))]).codes == [
        qos, qos]
    return sub


def test_v5_payload_format_and_content_type(raw_factory, topic):
    sub = subscriber(raw_factory, topic)
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, "héllo".encode(), qos=1, properties=[
        (v5.PAYLOAD_FORMAT, 1),
        (v5.CONTENT_TYPE, "text/plain; charset=utf-8")])
    pub.publish(topic, b"\xff\x00", qos=1, properties=[
        (v5.PAYLOAD_FORMAT, 0), (v5.CONTENT_TYPE, "application/octet-stream")])
    m1 = sub.expect_publish()
    m2 = sub.expect_publish()
    assert m1.payload == "héllo".encode()
    assert m1.props.get(v5.PAYLOAD_FORMAT) == 1
    assert m1.props.get(v5.CONTENT_TYPE) == "text/plain; charset=utf-8"
    assert m2.payload == b"\xff\x00"
    assert m2.props.get(v5.PAYLOAD_FORMAT, 0) == 0
    assert m2.props.get(v5.CONTENT_TYPE) == "application/octet-stream"


def test_v5_user_properties_order_and_duplicates(raw_factory, topic):
    sub = subscriber(raw_factory, topic)
    pub, _ = v5connect(raw_factory, "pub")
    ups = [("b", "2"), ("a", "1"), ("b", "2"), ("a", "3"), ("", ""),
           ("ключ", "значение")]
    pub.publish(topic, b"u", qos=1,
                properties=[(v5.USER_PROPERTY, kv) for kv in ups])
    m = sub.expect_publish()
    assert m.props.all(v5.USER_PROPERTY) == ups


def test_v5_request_response(client_factory, topic):
    """Response topic and correlation data travel unchanged, so a
    responder can answer a requester (paho on both ends)."""
    requester = client_factory(protocol="5")
    requester.subscribe(topic + "/responses", 1)
    responder = client_factory(protocol="5")
    responder.subscribe(topic + "/requests", 1)
    for i in range(3):
        corr = f"req-{i}".encode() + b"\x00\xff"
        requester.publish(topic + "/requests", f"q{i}".encode(), qos=1,
                          properties=paho_props(
                              "PUBLISH", ResponseTopic=topic + "/responses",
                              CorrelationData=corr))
        req = responder.expect_message()
        assert req.properties.ResponseTopic == topic + "/responses"
        assert req.properties.CorrelationData == corr
        responder.publish(req.properties.ResponseTopic,
                          b"a" + req.payload, qos=1,
                          properties=paho_props(
                              "PUBLISH",
                              CorrelationData=req.properties.CorrelationData))
        resp = requester.expect_message()
        assert resp.payload == f"aq{i}".encode()
        assert resp.properties.CorrelationData == corr


def test_v5_properties_kept_on_retained_message(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "pub")
    props = [(v5.CONTENT_TYPE, "application/json"),
             (v5.RESPONSE_TOPIC, topic + "/r"),
             (v5.USER_PROPERTY, ("x", "1")), (v5.USER_PROPERTY, ("x", "2"))]
    pub.publish(topic, b"{}", qos=1, retain=True, properties=props)
    sub, _ = v5connect(raw_factory, "late")
    sub.subscribe([(topic, sub_options(1))])
    m = sub.expect_publish()
    assert (m.payload, m.retain) == (b"{}", True)
    assert m.props.get(v5.CONTENT_TYPE) == "application/json"
    assert m.props.get(v5.RESPONSE_TOPIC) == topic + "/r"
    assert m.props.all(v5.USER_PROPERTY) == [("x", "1"), ("x", "2")]


def test_v5_message_expiry_forwarded_live(raw_factory, topic):
    sub = subscriber(raw_factory, topic)
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, b"e", qos=1, properties=[(v5.MESSAGE_EXPIRY, 60)])
    pub.publish(topic, b"n", qos=1)
    m = sub.expect_publish()
    assert 0 < m.props.get(v5.MESSAGE_EXPIRY, 0) <= 60
    m = sub.expect_publish()
    assert v5.MESSAGE_EXPIRY not in m.props


def test_v5_message_expiry_offline_and_retained(raw_factory, topic):
    """A queued message with expiry 1 s is not delivered 1.5 s later; one
    with expiry 60 s is, with its remaining interval. A retained message
    expires likewise."""
    sub = subscriber(raw_factory, topic, "offline",
                     properties=[(v5.SESSION_EXPIRY, 60)])
    sub.send(v5.disconnect())
    assert sub.wait_closed()
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, b"short", qos=1, properties=[(v5.MESSAGE_EXPIRY, 1)])
    pub.publish(topic, b"long", qos=1, properties=[(v5.MESSAGE_EXPIRY, 60)])
    pub.publish(topic + "/ret", b"gone", qos=1, retain=True,
                properties=[(v5.MESSAGE_EXPIRY, 1)])
    pub.publish(topic + "/ret2", b"kept", qos=1, retain=True,
                properties=[(v5.MESSAGE_EXPIRY, 60)])
    time.sleep(1.5)  # let the short ones expire: no event to wait on
    again, ack = v5connect(raw_factory, "offline", clean_start=False,
                           properties=[(v5.SESSION_EXPIRY, 60)])
    assert ack.session_present
    m = again.expect_publish()
    assert m.payload == b"long", f"expired message delivered: {m!r}"
    left = m.props.get(v5.MESSAGE_EXPIRY)
    assert left is not None and 0 < left < 60, left
    late, _ = v5connect(raw_factory, "late")
    late.subscribe([(topic + "/ret", sub_options(1)),
                    (topic + "/ret2", sub_options(1))])
    m = late.expect_publish()
    assert (m.topic, m.payload) == (topic + "/ret2", b"kept")
    assert 0 < m.props.get(v5.MESSAGE_EXPIRY, 0) < 60


def test_v5_puback_no_matching_subscribers(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "pub")
    assert pub.publish(topic, b"x", qos=1).rc == v5.RC_NO_MATCHING_SUBSCRIBERS
    sub = subscriber(raw_factory, topic, qos=0)
    assert pub.publish(topic, b"x", qos=1).rc == v5.RC_SUCCESS
    assert sub.expect_publish().payload == b"x"


def test_v5_pubrec_no_matching_subscribers(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "pub")
    pid = 77
    pub.send(v5.publish(topic, b"x", qos=2, pid=pid))
    rec = pub.expect(raw.PUBREC)
    assert (rec.pid, rec.rc) == (pid, v5.RC_NO_MATCHING_SUBSCRIBERS)
    pub.send(v5.ack(raw.PUBREL, pid))
    comp = pub.expect(raw.PUBCOMP)
    assert (comp.pid, comp.rc) == (pid, 0)


# ---------------------------------------------------------------- aliases

@pytest.mark.broker(max_topic_alias=3)
def test_v5_topic_alias_inbound(raw_factory, topic):
    sub = subscriber(raw_factory, topic)
    pub, ack = v5connect(raw_factory, "alias")
    assert ack.props.get(v5.TOPIC_ALIAS_MAXIMUM) == 3
    pub.publish(topic, b"1", qos=1, properties=[(v5.TOPIC_ALIAS, 3)])
    pub.publish("", b"2", qos=1, properties=[(v5.TOPIC_ALIAS, 3)])
    pub.publish("", b"3", qos=0, properties=[(v5.TOPIC_ALIAS, 3)])
    # Re-map alias 3 to another topic.
    pub.publish(topic + "/end", b"4", qos=1, properties=[(v5.TOPIC_ALIAS, 3)])
    pub.publish("", b"5", qos=1, properties=[(v5.TOPIC_ALIAS, 3)])
    got = [sub.expect_publish() for _ in range(5)]
    assert [(m.topic, m.payload) for m in got] == [
        (topic, b"1"), (topic, b"2"), (topic, b"3"),
        (topic + "/end", b"4"), (topic + "/end", b"5")]
    assert all(v5.TOPIC_ALIAS not in m.props for m in got)


@pytest.mark.broker(max_topic_alias=3)
@pytest.mark.parametrize("alias", [0, 4])
def test_v5_topic_alias_out_of_range(raw_factory, topic, alias):
    pub, _ = v5connect(raw_factory, "alias-bad")
    pub.send(v5.publish(topic, b"x", qos=1, pid=1,
                        properties=[(v5.TOPIC_ALIAS, alias)]))
    pub.expect_disconnect(v5.RC_TOPIC_ALIAS_INVALID)


@pytest.mark.broker(max_topic_alias=0)
def test_v5_topic_alias_when_none_allowed(raw_factory, topic):
    pub, ack = v5connect(raw_factory, "alias-none")
    assert ack.props.get(v5.TOPIC_ALIAS_MAXIMUM, 0) == 0
    pub.send(v5.publish(topic, b"x", qos=0,
                        properties=[(v5.TOPIC_ALIAS, 1)]))
    pub.expect_disconnect(v5.RC_TOPIC_ALIAS_INVALID)


def test_v5_topic_alias_unknown(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "alias-unknown")
    pub.publish(topic, b"x", qos=1, properties=[(v5.TOPIC_ALIAS, 1)])
    pub.send(v5.publish("", b"y", qos=1, pid=5,
                        properties=[(v5.TOPIC_ALIAS, 2)]))
    pub.expect_disconnect(v5.RC_PROTOCOL_ERROR)


def test_v5_empty_topic_without_alias(raw_factory):
    pub, _ = v5connect(raw_factory, "no-topic")
    pub.send(v5.publish("", b"y", qos=1, pid=5))
    pub.expect_disconnect(v5.RC_PROTOCOL_ERROR)


def test_v5_topic_aliases_are_per_connection(raw_factory, topic):
    """An alias set on one connection means nothing on the next one."""
    pub, _ = v5connect(raw_factory, "alias-conn")
    pub.publish(topic, b"x", qos=1, properties=[(v5.TOPIC_ALIAS, 1)])
    pub.send(v5.disconnect())
    assert pub.wait_closed()
    again, _ = v5connect(raw_factory, "alias-conn")
    again.send(v5.publish("", b"y", qos=1, pid=5,
                          properties=[(v5.TOPIC_ALIAS, 1)]))
    again.expect_disconnect(v5.RC_PROTOCOL_ERROR)


@pytest.mark.starling_only  # assigning aliases is optional for a server
def test_v5_topic_alias_outbound(raw_factory, topic):
    """A subscriber that accepts aliases gets the second message on a
    topic with an empty topic name and the alias."""
    sub = subscriber(raw_factory, topic,
                     properties=[(v5.TOPIC_ALIAS_MAXIMUM, 2)])
    pub, _ = v5connect(raw_factory, "pub")
    for t, p in [(topic, b"1"), (topic, b"2"), (topic + "/end", b"3"),
                 (topic + "/end", b"4"), (topic, b"5")]:
        pub.publish(t, p, qos=1)
    m1, m2, m3, m4, m5 = [sub.expect_publish() for _ in range(5)]
    a1 = m1.props.get(v5.TOPIC_ALIAS)
    assert m1.topic == topic and a1 in (1, 2)
    assert (m2.topic, m2.props.get(v5.TOPIC_ALIAS), m2.payload) == (
        "", a1, b"2")
    a3 = m3.props.get(v5.TOPIC_ALIAS)
    assert m3.topic == topic + "/end" and a3 in (1, 2) and a3 != a1
    assert (m4.topic, m4.props.get(v5.TOPIC_ALIAS)) == ("", a3)
    assert (m5.topic, m5.props.get(v5.TOPIC_ALIAS)) == ("", a1)


def test_v5_no_outbound_alias_without_topic_alias_maximum(raw_factory,
                                                          topic):
    sub = subscriber(raw_factory, topic)
    pub, _ = v5connect(raw_factory, "pub")
    for i in range(3):
        pub.publish(topic, b"%d" % i, qos=1)
    for i in range(3):
        m = sub.expect_publish()
        assert m.topic == topic and v5.TOPIC_ALIAS not in m.props


@pytest.mark.starling_only
def test_v5_outbound_alias_within_client_maximum(raw_factory, topic):
    """More topics than the client's Topic Alias Maximum (1): aliases never
    exceed it, and every message can be resolved by the client."""
    sub, _ = v5connect(raw_factory, "sub",
                       properties=[(v5.TOPIC_ALIAS_MAXIMUM, 1)])
    sub.subscribe([(topic + "/#", sub_options(1))])
    pub, _ = v5connect(raw_factory, "pub")
    sent = [f"{topic}/{i % 3}" for i in range(9)]
    for i, t in enumerate(sent):
        pub.publish(t, b"%d" % i, qos=1)
    aliases = {}
    for i, t in enumerate(sent):
        m = sub.expect_publish()
        a = m.props.get(v5.TOPIC_ALIAS)
        assert a in (None, 1)
        if m.topic:
            if a:
                aliases[a] = m.topic
            resolved = m.topic
        else:
            assert a in aliases, f"unknown alias in {m!r}"
            resolved = aliases[a]
        assert (resolved, m.payload) == (t, b"%d" % i)


# ---------------------------------------------------------------- bad props

@pytest.mark.parametrize("props,rc", [
    ([(v5.CONTENT_TYPE, "a"), (v5.CONTENT_TYPE, "b")], v5.RC_PROTOCOL_ERROR),
    ([(v5.SUBSCRIPTION_ID, 3)], v5.RC_PROTOCOL_ERROR),
    ([(v5.SESSION_EXPIRY, 3)], v5.RC_MALFORMED),
], ids=["duplicate", "subscription_id", "session_expiry"])
def test_v5_publish_bad_properties(raw_factory, topic, props, rc):
    pub, _ = v5connect(raw_factory, "badpub")
    pub.send(v5.publish(topic, b"x", qos=1, pid=3, properties=props))
    pub.expect_disconnect(rc)


# ---------------------------------------------------------------- v3 <-> v5

def test_v5_properties_stripped_for_v311_subscriber(raw_factory, topic):
    r = raw_factory()
    assert r.connect("v3sub").rc == 0
    assert r.subscribe([(topic, 1)]) == [1]
    pub, _ = v5connect(raw_factory, "v5pub")
    pub.publish(topic, b"payload bytes", qos=1, properties=[
        (v5.PAYLOAD_FORMAT, 1), (v5.CONTENT_TYPE, "text/plain"),
        (v5.MESSAGE_EXPIRY, 60), (v5.RESPONSE_TOPIC, "r"),
        (v5.CORRELATION_DATA, b"c"), (v5.USER_PROPERTY, ("k", "v"))])
    m = r.expect(raw.PUBLISH)
    # A 3.1.1 PUBLISH: topic, packet id, then exactly the payload.
    assert (m.topic, m.qos, m.payload) == (topic, 1, b"payload bytes")
    r.send(raw.puback(m.pid))


def test_v5_v311_publisher_to_v5_subscriber(raw_factory, client_factory,
                                            topic):
    sub = subscriber(raw_factory, topic)
    client_factory(protocol="311").publish(topic, b"from 3.1.1", qos=1)
    m = sub.expect_publish()
    assert (m.topic, m.payload, m.qos) == (topic, b"from 3.1.1", 1)
    assert m.props.ids() == []


def test_v5_mixed_paho_exchange(client_factory, topic):
    sub3 = client_factory(protocol="311")
    sub3.subscribe(topic, 1)
    sub5 = client_factory(protocol="5")
    sub5.subscribe(topic, 1)
    p5 = client_factory(protocol="5")
    p5.publish(topic, b"five", qos=1, properties=paho_props(
        "PUBLISH", ContentType="text/plain", UserProperty=[("a", "b")]))
    m3 = sub3.expect_message()
    m5 = sub5.expect_message()
    assert m3.payload == m5.payload == b"five"
    assert m5.properties.ContentType == "text/plain"
    assert m5.properties.UserProperty == [("a", "b")]


@pytest.mark.starling_only
def test_v5_outbound_aliases_reset_per_connection(raw_factory, topic):
    """A new connection of the same session starts with no aliases: the
    first message on a topic carries the topic name again."""
    props = [(v5.TOPIC_ALIAS_MAXIMUM, 5), (v5.SESSION_EXPIRY, 60)]
    sub = subscriber(raw_factory, topic, "alias-resume", properties=props)
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, b"1", qos=1)
    pub.publish(topic, b"2", qos=1)
    assert sub.expect_publish().topic == topic
    assert sub.expect_publish().topic == ""
    sub.send(v5.disconnect())
    assert sub.wait_closed()
    again, ack = v5connect(raw_factory, "alias-resume", clean_start=False,
                           properties=props)
    assert ack.session_present
    pub.publish(topic, b"3", qos=1)
    m = again.expect_publish()
    assert (m.topic, m.payload) == (topic, b"3")


def test_v5_message_expiry_while_window_full(raw_factory, topic):
    """A message waiting behind a full in-flight window expires there."""
    sub, _ = v5connect(raw_factory, "win",
                       properties=[(v5.RECEIVE_MAXIMUM, 1)])
    sub.subscribe([(topic, sub_options(1))])
    pub, _ = v5connect(raw_factory, "pub")
    pub.publish(topic, b"blocker", qos=1)
    pub.publish(topic, b"short", qos=1, properties=[(v5.MESSAGE_EXPIRY, 1)])
    pub.publish(topic, b"long", qos=1, properties=[(v5.MESSAGE_EXPIRY, 60)])
    blocker = sub.expect_publish(auto_ack=False)
    assert blocker.payload == b"blocker"
    time.sleep(1.5)  # let "short" expire in the queue: no event to wait on
    sub.send(v5.ack(raw.PUBACK, blocker.pid))
    m = sub.expect_publish()
    assert m.payload == b"long", f"expired message delivered: {m!r}"
    assert 0 < m.props.get(v5.MESSAGE_EXPIRY, 0) < 60


def test_v5_topic_name_with_wildcard(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "wild")
    pub.send(v5.publish(topic + "/+", b"x", qos=1, pid=2))
    pub.expect_disconnect(0x90)  # Topic Name invalid


@pytest.mark.parametrize("response", ["replies/+", "replies/#", "#"])
def test_v5_response_topic_with_wildcard(raw_factory, topic, response):
    """[MQTT-3.3.2-14]: a Response Topic is a topic name; a wildcard in it
    is a Protocol Error (DISCONNECT 0x82), and nothing is delivered."""
    sub, _ = v5connect(raw_factory, "resp-sub")
    assert sub.subscribe([(topic, sub_options(1))]).codes == [1]
    pub, _ = v5connect(raw_factory, "resp-wild")
    pub.send(v5.publish(topic, b"x", qos=1, pid=2,
                        properties=[(v5.RESPONSE_TOPIC, response)]))
    pub.expect_disconnect(v5.RC_PROTOCOL_ERROR)
    sub.send(v5.pingreq())
    assert sub.recv().type == raw.PINGRESP


def test_v5_pubrel_unknown_packet_id(raw_factory):
    c, _ = v5connect(raw_factory, "pubrel-unknown")
    c.send(v5.ack(raw.PUBREL, 4242))
    comp = c.expect(raw.PUBCOMP)
    assert (comp.pid, comp.rc) == (4242, 0x92)  # Packet Identifier not found


def test_v5_pubrec_unknown_packet_id(raw_factory):
    c, _ = v5connect(raw_factory, "pubrec-unknown")
    c.send(v5.ack(raw.PUBREC, 4243))
    rel = c.expect(raw.PUBREL)
    assert (rel.pid, rel.rc) == (4243, 0x92)


def test_v5_qos2_duplicate_not_delivered_twice(raw_factory, topic):
    sub = subscriber(raw_factory, topic)
    pub, _ = v5connect(raw_factory, "dup-pub")
    pub.send(v5.publish(topic, b"once", qos=2, pid=9))
    assert pub.expect(raw.PUBREC).pid == 9
    pub.send(v5.publish(topic, b"once", qos=2, pid=9, dup=True))
    assert pub.expect(raw.PUBREC).pid == 9
    pub.send(v5.ack(raw.PUBREL, 9))
    assert pub.expect(raw.PUBCOMP).rc == 0
    pub.publish(topic + "/end", b"end", qos=1)
    assert sub.expect_publish().payload == b"once"
    assert sub.expect_publish().payload == b"end"


def test_v5_retained_properties_stripped_for_v311(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "v5pub")
    pub.publish(topic, b"kept bytes", qos=1, retain=True, properties=[
        (v5.CONTENT_TYPE, "text/plain"), (v5.MESSAGE_EXPIRY, 60),
        (v5.USER_PROPERTY, ("k", "v"))])
    r = raw_factory()
    assert r.connect("v3late").rc == 0
    assert r.subscribe([(topic, 1)]) == [1]
    m = r.expect(raw.PUBLISH)
    assert (m.topic, m.qos, m.retain, m.payload) == (
        topic, 1, True, b"kept bytes")
