"""MQTT 5.0 will messages: will properties forwarded, the Will Delay
Interval (and its interplay with reconnection and session expiry),
DISCONNECT with reason 0x04 (publish the will) versus a normal
DISCONNECT."""
import time

from harness.client import paho_props
from harness.raw import sub_options, v5, v5connect


def will_watcher(raw_factory, topic):
    """A v5 subscriber to the will topic and to topic/end (the marker)."""
    sub, _ = v5connect(raw_factory, "watcher")
    ack = sub.subscribe([(topic, sub_options(1)),
                         (topic + "/end", sub_options(1))])
    assert ack.codes == [1, 1]
    return sub


def marker(raw_factory, topic):
    pub, _ = v5connect(raw_factory, "marker")
    pub.publish(topic + "/end", b"end", qos=1)


def test_v5_will_properties_forwarded(raw_factory, topic):
    sub = will_watcher(raw_factory, topic)
    wprops = [(v5.PAYLOAD_FORMAT, 1), (v5.CONTENT_TYPE, "text/plain"),
              (v5.RESPONSE_TOPIC, topic + "/reply"),
              (v5.CORRELATION_DATA, b"\x00\x01corr"),
              (v5.USER_PROPERTY, ("k", "v1")),
              (v5.USER_PROPERTY, ("k", "v2")),
              (v5.USER_PROPERTY, ("a", "b"))]
    c, _ = v5connect(raw_factory, "wprops",
                     will=(topic, b"bye", 1, False, wprops))
    c.raw.close()
    m = sub.expect_publish()
    assert (m.topic, m.payload, m.qos) == (topic, b"bye", 1)
    p = m.props
    assert p.get(v5.PAYLOAD_FORMAT) == 1
    assert p.get(v5.CONTENT_TYPE) == "text/plain"
    assert p.get(v5.RESPONSE_TOPIC) == topic + "/reply"
    assert p.get(v5.CORRELATION_DATA) == b"\x00\x01corr"
    assert p.all(v5.USER_PROPERTY) == [("k", "v1"), ("k", "v2"), ("a", "b")]


def test_v5_will_message_expiry_forwarded(raw_factory, topic):
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "wexp",
                     will=(topic, b"bye", 1, False,
                           [(v5.MESSAGE_EXPIRY, 30)]))
    c.raw.close()
    m = sub.expect_publish()
    assert 0 < m.props.get(v5.MESSAGE_EXPIRY, 0) <= 30


def test_v5_will_delay(raw_factory, topic):
    """Will delay 2 s, session expiry 10 s: the will arrives after the
    delay, not before."""
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "wdelay",
                     properties=[(v5.SESSION_EXPIRY, 10)],
                     will=(topic, b"late", 1, False,
                           [(v5.WILL_DELAY, 2)]))
    start = time.monotonic()
    c.raw.close()
    m = sub.expect_publish(timeout=5)
    waited = time.monotonic() - start
    assert m.payload == b"late"
    assert waited >= 1.9, f"will published after {waited:.2f} s, not 2 s"
    assert waited <= 4.0, f"will published after {waited:.2f} s"


def test_v5_will_delay_cancelled_by_reconnect(raw_factory, topic):
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "wcancel",
                     properties=[(v5.SESSION_EXPIRY, 10)],
                     will=(topic, b"never", 1, False,
                           [(v5.WILL_DELAY, 1)]))
    start = time.monotonic()
    c.raw.close()
    again, ack = v5connect(raw_factory, "wcancel", clean_start=False,
                           properties=[(v5.SESSION_EXPIRY, 10)])
    assert ack.session_present
    # Nothing can announce a will that is not sent: wait out the delay.
    time.sleep(max(0.0, start + 1.5 - time.monotonic()))
    marker(raw_factory, topic)
    assert sub.expect_publish().payload == b"end"
    again.send(v5.disconnect())  # normal: no will either
    assert again.wait_closed()


def test_v5_will_delay_cut_short_by_session_end(raw_factory, topic):
    """Will delay 10 s, session expiry 1 s: the will is published when the
    session ends, after about 1 s."""
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "wshort",
                     properties=[(v5.SESSION_EXPIRY, 1)],
                     will=(topic, b"session over", 1, False,
                           [(v5.WILL_DELAY, 10)]))
    start = time.monotonic()
    c.raw.close()
    m = sub.expect_publish(timeout=5)
    waited = time.monotonic() - start
    assert m.payload == b"session over"
    assert 0.9 <= waited <= 3.5, f"will published after {waited:.2f} s"


def test_v5_will_delay_with_session_expiry_zero(raw_factory, topic):
    """Session expiry 0: the session ends with the connection, and the
    will with it, whatever its delay."""
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "wzero",
                     will=(topic, b"now", 1, False, [(v5.WILL_DELAY, 30)]))
    start = time.monotonic()
    c.raw.close()
    m = sub.expect_publish(timeout=5)
    assert m.payload == b"now"
    assert time.monotonic() - start < 1.0


def test_v5_disconnect_with_will_message(raw_factory, topic):
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "w04",
                     will=(topic, b"asked for", 1, False, ()))
    c.send(v5.disconnect(v5.RC_DISCONNECT_WITH_WILL))
    assert c.wait_closed()
    m = sub.expect_publish()
    assert (m.topic, m.payload) == (topic, b"asked for")


def test_v5_normal_disconnect_no_will(raw_factory, topic):
    sub = will_watcher(raw_factory, topic)
    c, _ = v5connect(raw_factory, "w00",
                     will=(topic, b"never", 1, False, ()))
    c.send(v5.disconnect(0x00))
    assert c.wait_closed()
    marker(raw_factory, topic)
    assert sub.expect_publish().payload == b"end"


def test_v5_will_on_takeover_without_delay(raw_factory, topic):
    """A takeover ends the old connection without DISCONNECT from the
    client: its will (no delay, session expiry 0) is published."""
    sub = will_watcher(raw_factory, topic)
    a, _ = v5connect(raw_factory, "wtake",
                     will=(topic, b"replaced", 1, False, ()))
    b, _ = v5connect(raw_factory, "wtake")
    a.expect_disconnect(v5.RC_SESSION_TAKEN_OVER)
    assert sub.expect_publish().payload == b"replaced"


def test_v5_paho_will_with_properties(client_factory, topic):
    sub = client_factory(protocol="5")
    sub.subscribe(topic, 1)
    c = client_factory(protocol="5", connect=False)
    c.paho.will_set(topic, b"paho will", 1, False,
                    properties=paho_props("WILLMESSAGE",
                                             ContentType="text/x-will",
                                             UserProperty=[("who", "me")]))
    c.connect()
    c.abort()
    m = sub.expect_message()
    assert m.payload == b"paho will"
    assert m.properties.ContentType == "text/x-will"
    assert m.properties.UserProperty == [("who", "me")]
