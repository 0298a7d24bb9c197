"""Malformed and hostile input over raw sockets. Each case must close only
the offending connection (the socket sees EOF), Starling must log why, and
a separate healthy publisher/subscriber pair must keep working."""
import re
import threading
import time

import pytest

from harness import raw
from harness.raw import packet, u16, varint

MAX_PACKET = 1024
pytestmark = pytest.mark.broker(max_packet_size=MAX_PACKET,
                                log_level="debug")

# What a log line about the closed connection should say, by kind of fault.
REASONS = {
    "size": r"(?i)(too (large|big|long)|exceed|oversize|max_packet_size|"
            r"packet size|limit)",
    "malformed": r"(?i)(malformed|protocol|invalid|bad|unexpected|reserved|"
                 r"not allowed|violation|unsupported|refus|error|wildcard|"
                 r"utf-?8|flags?|qos|empty|duplicate|second|before connect|"
                 r"not connect|expected)",
    "eof": r"(?i)(clos|eof|truncat|disconnect|reset|incomplete|lost)",
    "timeout": r"(?i)(time ?out|timed out)",
}


class Case:
    def __init__(self, name, data, connect=True, kind="malformed",
                 shutdown=False):
        self.name = name
        self.data = data
        self.connect = connect  # send a valid CONNECT first
        self.kind = kind
        self.shutdown = shutdown  # half-close after sending (truncation)

    def __repr__(self):
        return self.name


def will_qos3_connect():
    return raw.connect("wq3", will=("w/t", b"x", 3, False))


CASES = [
    # truncated packets, then the client half-closes
    Case("truncated_connect", raw.connect("trunc")[:9], connect=False,
         kind="eof", shutdown=True),
    Case("truncated_publish", raw.publish("t/x", b"payload", qos=1)[:-4],
         kind="eof", shutdown=True),
    Case("truncated_header", b"\x30", kind="eof", shutdown=True),
    Case("truncated_remaining_length", b"\x30\xff", kind="eof",
         shutdown=True),
    # sizes
    Case("oversized_publish",
         b"\x30" + varint(MAX_PACKET * 2) + u16(3) + b"big", kind="size"),
    Case("oversized_connect",
         b"\x10" + varint(MAX_PACKET * 8) + raw.mqtt_str("MQTT") + b"\x04",
         connect=False, kind="size"),
    Case("remaining_length_5_bytes", b"\x30\xff\xff\xff\xff\x01"),
    # sequencing
    Case("pingreq_before_connect", raw.pingreq(), connect=False),
    Case("publish_before_connect", raw.publish("t/x", b"x"),
         connect=False),
    Case("subscribe_before_connect", raw.subscribe(1, [("t/#", 0)]),
         connect=False),
    Case("second_connect", raw.connect("again")),
    # reserved bits and values
    Case("subscribe_flags_0", raw.subscribe(1, [("t/#", 0)], flags=0)),
    Case("unsubscribe_flags_0", raw.unsubscribe(1, ["t/#"], flags=0)),
    Case("pubrel_flags_0", packet(raw.PUBREL, 0, u16(1))),
    Case("publish_qos_3", packet(raw.PUBLISH, 0x06,
                                 raw.mqtt_str("t/x") + u16(1) + b"x")),
    Case("subscribe_qos_3", raw.subscribe(1, [("t/#", 3)])),
    Case("publish_packet_id_0", raw.publish("t/x", b"x", qos=1, pid=0)),
    Case("packet_type_0", b"\x00\x00"),
    Case("packet_type_15", packet(15, 0, b"")),
    Case("server_only_packet", packet(raw.CONNACK, 0, b"\x00\x00")),
    Case("connect_reserved_flag", raw.connect("rsv", reserved=True),
         connect=False),
    Case("connect_will_qos_3", will_qos3_connect(), connect=False),
    Case("connect_bad_protocol_name", raw.connect("pn", proto_name="MQTX"),
         connect=False),
    # topics and strings
    Case("invalid_utf8_topic", raw.publish(b"t/\xff\xfe", b"x")),
    Case("nul_in_topic", raw.publish(b"t/\x00x", b"x")),
    Case("surrogate_in_topic", raw.publish(b"t/\xed\xa0\x80", b"x")),
    Case("wildcard_plus_in_publish", raw.publish("t/+/x", b"x")),
    Case("wildcard_hash_in_publish", raw.publish("t/#", b"x")),
    Case("empty_topic_publish", raw.publish("", b"x")),
    Case("invalid_utf8_filter", raw.subscribe(1, [(b"t/\xc3", 0)])),
    Case("invalid_utf8_client_id", raw.connect(b"id\xff"), connect=False),
    Case("empty_subscribe", raw.subscribe(1, [])),
    Case("empty_unsubscribe", raw.unsubscribe(1, [])),
    Case("string_longer_than_packet",
         packet(raw.PUBLISH, 0, u16(500) + b"t/x")),
    # garbage
    Case("http_request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
         connect=False),
    Case("garbage_after_connect", bytes(range(0xF0, 0x100)) * 4),
]


class Healthy:
    """A subscriber and a publisher that must keep working."""

    def __init__(self, client_factory, topic):
        self.topic = topic
        self.sub = client_factory()
        self.sub.subscribe(topic, 1)
        self.pub = client_factory()
        self.n = 0

    def check(self):
        self.n += 1
        payload = f"alive-{self.n}".encode()
        self.pub.publish(self.topic, payload, qos=1)
        m = self.sub.expect_message()
        assert m.payload == payload
        assert not self.sub.disconnected.is_set()
        assert not self.pub.disconnected.is_set()


@pytest.fixture
def healthy(client_factory, topic):
    return Healthy(client_factory, topic)


def send_case(raw_factory, case):
    """Run one case; returns the client's local port once the broker has
    closed the connection."""
    r = raw_factory()
    port = r.local_port
    if case.connect:
        assert r.connect(f"bad-{case.name}"[:23]).rc == 0
    try:
        r.send(case.data)
        if case.shutdown:
            r.shutdown_write()
    except (BrokenPipeError, ConnectionResetError):
        return port  # already closed by the broker
    assert r.wait_closed(5), f"{case.name}: connection left open"
    return port


def assert_logged(broker, port, kind, mark):
    """A log line written after mark names the connection's address and
    gives a reason of the expected kind."""
    addr = f"127.0.0.1:{port}"
    rx = re.compile(REASONS[kind])
    deadline = time.monotonic() + 3
    while True:
        lines = [ln for ln in broker.log_since(mark).splitlines()
                 if addr in ln]
        # The reason follows the address ("... 127.0.0.1:5000: why").
        if any(rx.search(ln.split(addr, 1)[1]) for ln in lines):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"no log line for {addr} with a {kind} reason; "
                        f"lines for it: {lines}")
        time.sleep(0.05)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_bad_input_closes_only_that_connection(broker, raw_factory, healthy,
                                               case):
    healthy.check()
    mark = broker.log_mark()
    port = send_case(raw_factory, case)
    healthy.check()
    # Later connections are served normally.
    r = raw_factory()
    assert r.connect("after-bad").rc == 0
    if broker.is_starling:
        assert_logged(broker, port, case.kind, mark)


def test_battery_while_traffic_flows(broker, raw_factory, healthy):
    """All cases back to back while the healthy pair exchanges QoS 1
    messages; every message arrives, in order."""
    stop = threading.Event()
    sent = []
    errors = []

    def publish_loop():
        try:
            while not stop.is_set():
                payload = f"bg-{len(sent)}".encode()
                healthy.pub.publish(healthy.topic, payload, qos=1)
                sent.append(payload)
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=publish_loop, daemon=True)
    t.start()
    try:
        for case in CASES:
            send_case(raw_factory, case)
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    assert len(sent) > 0
    got = healthy.sub.expect_messages(len(sent), timeout=10)
    assert [m.payload for m in got] == sent
    healthy.check()


@pytest.mark.parametrize("n_conns", [20])
def test_half_open_connections_do_not_block(broker, raw_factory, healthy,
                                            n_conns):
    """Connections that send a partial packet and stall do not stop the
    broker from serving others."""
    stalled = []
    for i in range(n_conns):
        r = raw_factory()
        r.send(raw.connect(f"stall{i}")[:7])
        stalled.append(r)
    healthy.check()
    r = raw_factory()
    assert r.connect("not-stalled").rc == 0


@pytest.mark.starling_only
@pytest.mark.broker(connect_timeout=1, log_level="debug")
@pytest.mark.parametrize("partial", [b"", raw.connect("slow")[:6]],
                         ids=["nothing", "partial_connect"])
def test_connect_timeout(broker, raw_factory, healthy, partial):
    r = raw_factory()
    port = r.local_port
    mark = broker.log_mark()
    start = time.monotonic()
    if partial:
        r.send(partial)
    assert r.wait_closed(4), "connection without CONNECT left open"
    elapsed = time.monotonic() - start
    assert elapsed >= 0.9, f"closed after {elapsed:.2f} s, before the timeout"
    healthy.check()
    assert_logged(broker, port, "timeout", mark)


@pytest.mark.starling_only
@pytest.mark.broker(max_topic_length=16)
def test_topic_too_long(broker, raw_factory, healthy):
    r = raw_factory()
    assert r.connect("long-topic").rc == 0
    r.send(raw.publish("t/" + "x" * 40, b"x"))
    assert r.wait_closed(5)
    healthy.check()


@pytest.mark.starling_only
@pytest.mark.broker(max_topic_levels=4)
def test_too_many_topic_levels(broker, raw_factory, healthy):
    r = raw_factory()
    assert r.connect("deep-topic").rc == 0
    r.send(raw.publish("a/b/c/d/e/f/g", b"x"))
    assert r.wait_closed(5)
    healthy.check()
