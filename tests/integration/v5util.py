"""
v5util.py - MQTT 5.0 packets by hand for the v5 black-box tests: an
encoder for properties and every client-to-server packet (including wrong
ones: duplicate or misplaced properties, bad reason codes), a decoder for
what the broker sends back, and V5Client, a raw-socket client on top of
mqtt_raw.RawClient that reads whole v5 packets with deadlines.

Also small helpers for paho MQTT 5 clients (properties, connecting with
CONNECT properties).

Properties are given as a list of (id, value) pairs, so that order and
duplicates are under the test's control; a dict works too. A User
Property's value is a (name, value) pair.
"""
import struct
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqtt_raw
from mqtt_raw import (CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL,
                      PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK,
                      PINGREQ, DISCONNECT, Closed, packet, u16,
                      varint, mqtt_str)

AUTH = 15
V5 = 5
NAMES = {**mqtt_raw.NAMES, AUTH: "AUTH"}

# ---------------------------------------------------------------- properties

PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTH_METHOD = 0x15
AUTH_DATA = 0x16
REQUEST_PROBLEM_INFO = 0x17
WILL_DELAY = 0x18
REQUEST_RESPONSE_INFO = 0x19
RESPONSE_INFO = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUB_AVAILABLE = 0x28
SUB_ID_AVAILABLE = 0x29
SHARED_SUB_AVAILABLE = 0x2A

BYTE, U16, U32, VARINT, STR, BIN, PAIR = range(7)
PROP_TYPES = {
    PAYLOAD_FORMAT: BYTE, MESSAGE_EXPIRY: U32, CONTENT_TYPE: STR,
    RESPONSE_TOPIC: STR, CORRELATION_DATA: BIN, SUBSCRIPTION_ID: VARINT,
    SESSION_EXPIRY: U32, ASSIGNED_CLIENT_ID: STR, SERVER_KEEP_ALIVE: U16,
    AUTH_METHOD: STR, AUTH_DATA: BIN, REQUEST_PROBLEM_INFO: BYTE,
    WILL_DELAY: U32, REQUEST_RESPONSE_INFO: BYTE, RESPONSE_INFO: STR,
    SERVER_REFERENCE: STR, REASON_STRING: STR, RECEIVE_MAXIMUM: U16,
    TOPIC_ALIAS_MAXIMUM: U16, TOPIC_ALIAS: U16, MAXIMUM_QOS: BYTE,
    RETAIN_AVAILABLE: BYTE, USER_PROPERTY: PAIR, MAXIMUM_PACKET_SIZE: U32,
    WILDCARD_SUB_AVAILABLE: BYTE, SUB_ID_AVAILABLE: BYTE,
    SHARED_SUB_AVAILABLE: BYTE,
}

# Reason codes the tests look for.
RC_SUCCESS = 0x00
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_BAD_AUTH_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_RETAIN_NOT_SUPPORTED = 0x9A
RC_QOS_NOT_SUPPORTED = 0x9B
RC_SHARED_NOT_SUPPORTED = 0x9E


def u32(n):
    return struct.pack("!I", n)


def binary(b):
    if isinstance(b, str):
        b = b.encode()
    return u16(len(b)) + b


def prop_value(pid, value):
    kind = PROP_TYPES[pid]
    if kind == BYTE:
        return bytes([value])
    if kind == U16:
        return u16(value)
    if kind == U32:
        return u32(value)
    if kind == VARINT:
        return varint(value)
    if kind == STR:
        return mqtt_str(value)
    if kind == BIN:
        return binary(value)
    name, val = value
    return mqtt_str(name) + mqtt_str(val)


def props(items=()):
    """Encoded property block: varint length + properties in the given
    order. items: [(id, value)] or {id: value}. A raw bytes item is copied
    as is (for hand-made wrong properties)."""
    if isinstance(items, dict):
        items = list(items.items())
    body = b""
    for item in items:
        if isinstance(item, (bytes, bytearray)):
            body += bytes(item)
        else:
            pid, value = item
            body += varint(pid) + prop_value(pid, value)
    return varint(len(body)) + body


class Props:
    """Decoded properties: an ordered list of (id, value)."""

    def __init__(self, items):
        self.items = items

    def get(self, pid, default=None):
        for k, v in self.items:
            if k == pid:
                return v
        return default

    def all(self, pid):
        return [v for k, v in self.items if k == pid]

    def ids(self):
        return [k for k, _ in self.items]

    def __contains__(self, pid):
        return any(k == pid for k, _ in self.items)

    def __repr__(self):
        return f"Props({self.items!r})"


class Reader:
    """Sequential reads from a packet body; raises ValueError when short."""

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def left(self):
        return len(self.data) - self.pos

    def take(self, n):
        if self.left() < n:
            raise ValueError(f"short packet: need {n}, have {self.left()}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def varint(self):
        n, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                return n
        raise ValueError("varint longer than 4 bytes")

    def binary(self):
        return self.take(self.u16())

    def string(self):
        return self.binary().decode("utf-8")

    def rest(self):
        return self.take(self.left())

    def props(self):
        end = self.varint()
        sub = Reader(self.take(end))
        items = []
        while sub.left():
            pid = sub.varint()
            kind = PROP_TYPES.get(pid)
            if kind is None:
                raise ValueError(f"unknown property id {pid:#x}")
            if kind == BYTE:
                v = sub.byte()
            elif kind == U16:
                v = sub.u16()
            elif kind == U32:
                v = sub.u32()
            elif kind == VARINT:
                v = sub.varint()
            elif kind == STR:
                v = sub.string()
            elif kind == BIN:
                v = sub.binary()
            else:
                v = (sub.string(), sub.string())
            items.append((pid, v))
        return Props(items)


# ---------------------------------------------------------------- packets

def sub_options(qos=0, no_local=False, retain_as_published=False,
                retain_handling=0):
    """The subscription options byte of a v5 SUBSCRIBE."""
    return (qos | (0x04 if no_local else 0)
            | (0x08 if retain_as_published else 0) | (retain_handling << 4))


def connect(client_id="", clean_start=True, keepalive=60, properties=(),
            will=None, username=None, password=None, level=V5):
    """CONNECT. will = (topic, payload, qos, retain, will_properties)."""
    flags = 0x02 if clean_start else 0
    if will is not None:
        _, _, wqos, wretain, _ = will
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = mqtt_str("MQTT") + bytes([level, flags]) + u16(keepalive)
    body += props(properties) + mqtt_str(client_id)
    if will is not None:
        wtopic, wpayload, _, _, wprops = will
        body += props(wprops) + mqtt_str(wtopic) + binary(wpayload)
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += binary(password)
    return packet(CONNECT, 0, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None,
            properties=()):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_str(topic)
    if qos > 0:
        body += u16(pid if pid is not None else 1)
    return packet(PUBLISH, flags, body + props(properties) + payload)


def ack(ptype, pid, rc=0, properties=()):
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""
    body = u16(pid)
    if rc or properties:
        body += bytes([rc]) + props(properties)
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def subscribe(pid, filters, properties=(), flags=2):
    """filters: [(filter, options byte)]; see sub_options()."""
    body = u16(pid) + props(properties)
    for f, opts in filters:
        body += mqtt_str(f) + bytes([opts])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe(pid, filters, properties=()):
    body = u16(pid) + props(properties)
    for f in filters:
        body += mqtt_str(f)
    return packet(UNSUBSCRIBE, 2, body)


def disconnect(rc=0, properties=()):
    if not rc and not properties:
        return packet(DISCONNECT, 0, b"")
    return packet(DISCONNECT, 0, bytes([rc]) + props(properties))


def pingreq():
    return packet(PINGREQ, 0, b"")


class Packet5:
    """One packet from the broker, decoded as MQTT 5.0."""

    def __init__(self, ptype, flags, body):
        self.type = ptype
        self.flags = flags
        self.body = body
        self.pid = None
        self.rc = 0
        self.props = Props([])
        r = Reader(body)
        if ptype == CONNACK:
            self.session_present = bool(r.byte() & 0x01)
            self.rc = r.byte()
            self.props = r.props()
        elif ptype == PUBLISH:
            self.dup = bool(flags & 0x08)
            self.qos = (flags >> 1) & 0x03
            self.retain = bool(flags & 0x01)
            self.topic = r.string()
            if self.qos:
                self.pid = r.u16()
            self.props = r.props()
            self.payload = r.rest()
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.pid = r.u16()
            if r.left():
                self.rc = r.byte()
            if r.left():
                self.props = r.props()
        elif ptype in (SUBACK, UNSUBACK):
            self.pid = r.u16()
            self.props = r.props()
            self.codes = list(r.rest())
        elif ptype in (DISCONNECT, AUTH):
            if r.left():
                self.rc = r.byte()
            if r.left():
                self.props = r.props()
        if r.left():
            raise ValueError(f"{NAMES.get(ptype)}: {r.left()} bytes left over")

    @property
    def name(self):
        return NAMES.get(self.type, str(self.type))

    def __repr__(self):
        if self.type == PUBLISH:
            return (f"<PUBLISH {self.topic!r} qos={self.qos} dup={self.dup} "
                    f"retain={self.retain} pid={self.pid} {self.props!r} "
                    f"payload={self.payload[:40]!r}>")
        return f"<{self.name} pid={self.pid} rc={self.rc:#x} {self.props!r}>"


class V5Client:
    """An MQTT 5.0 client on a mqtt_raw.RawClient socket (so raw_factory
    closes it at teardown). Acknowledgements are sent by the test, except
    where a helper says otherwise."""

    def __init__(self, rawclient):
        self.raw = rawclient
        self.next_pid = 1
        self.backlog = []  # packets read while waiting for something else

    def pid(self):
        p = self.next_pid
        self.next_pid = p % 65535 + 1
        return p

    def send(self, data):
        self.raw.send(data)

    def recv(self, timeout=5.0):
        if self.backlog:
            return self.backlog.pop(0)
        pkt = self.raw.recv(timeout)
        return Packet5(pkt.type, pkt.flags, pkt.body)

    def expect_reply(self, ptype, timeout=5.0):
        """Like expect(), but PUBLISH and PUBREL packets arriving first
        (messages for this client) are kept for later recv() calls."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                pkt = self.raw.recv(max(deadline - time.monotonic(), 0.001))
                pkt = Packet5(pkt.type, pkt.flags, pkt.body)
                if pkt.type in (PUBLISH, PUBREL) and ptype != pkt.type:
                    kept.append(pkt)
                    continue
                assert pkt.type == ptype, \
                    f"expected {NAMES[ptype]}, got {pkt!r}"
                return pkt
        finally:
            self.backlog += kept

    def expect(self, ptype, timeout=5.0):
        pkt = self.recv(timeout)
        assert pkt.type == ptype, f"expected {NAMES[ptype]}, got {pkt!r}"
        return pkt

    def expect_nothing(self, timeout):
        """No packet for timeout seconds, and the link stays up."""
        try:
            pkt = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {pkt!r}")

    def wait_closed(self, timeout=5.0):
        return self.raw.wait_closed(timeout)

    def expect_disconnect(self, rc, timeout=3.0):
        """The broker sends DISCONNECT with reason code rc (other packets
        before it, such as acknowledgements, are skipped) and closes."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                pkt = self.recv(max(deadline - time.monotonic(), 0.001))
            except Closed:
                raise AssertionError(
                    f"connection closed without DISCONNECT {rc:#x} "
                    f"(received {seen!r})") from None
            except TimeoutError:
                raise AssertionError(
                    f"no DISCONNECT {rc:#x} within {timeout} s "
                    f"(received {seen!r})") from None
            if pkt.type == DISCONNECT:
                break
            seen.append(pkt)
        assert pkt.rc == rc, f"DISCONNECT {pkt.rc:#x}, expected {rc:#x}"
        assert self.wait_closed(max(deadline - time.monotonic(), 1.0)), \
            "connection still open after DISCONNECT"
        return pkt

    # ---- conversations

    def connect(self, client_id="", **kw):
        """CONNECT; returns the CONNACK (any reason code)."""
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def connect_ok(self, client_id="", **kw):
        ack = self.connect(client_id, **kw)
        assert ack.rc == 0, f"CONNACK {ack.rc:#x} {ack.props!r}"
        return ack

    def connect_refused(self, client_id, rc, **kw):
        """CONNECT that the broker must refuse: a CONNACK with reason code
        rc, or (where the spec lets the broker choose, as for malformed
        packets and protocol errors) no CONNACK at all; then it closes."""
        self.send(connect(client_id, **kw))
        try:
            ack = self.recv()
        except Closed:
            return None
        assert ack.type == CONNACK, f"expected CONNACK, got {ack!r}"
        assert ack.rc == rc, f"CONNACK {ack.rc:#x}, expected {rc:#x}"
        assert self.wait_closed(), "connection still open after CONNACK"
        return ack

    def subscribe(self, filters, properties=(), timeout=5.0):
        """SUBSCRIBE [(filter, options byte)]; returns the SUBACK."""
        pid = self.pid()
        self.send(subscribe(pid, filters, properties))
        ack = self.expect_reply(SUBACK, timeout)
        assert ack.pid == pid
        return ack

    def unsubscribe(self, filters, timeout=5.0):
        pid = self.pid()
        self.send(unsubscribe(pid, filters))
        ack = self.expect_reply(UNSUBACK, timeout)
        assert ack.pid == pid
        return ack

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=(),
                timeout=5.0):
        """PUBLISH and complete its QoS flow; returns the PUBACK, PUBREC
        (QoS 2 refused with a reason code >= 0x80) or PUBCOMP packet, or
        None for QoS 0."""
        pid = self.pid() if qos else None
        self.send(publish(topic, payload, qos, retain, pid=pid,
                          properties=properties))
        if qos == 0:
            return None
        if qos == 1:
            ack_ = self.expect_reply(PUBACK, timeout)
            assert ack_.pid == pid
            return ack_
        rec = self.expect_reply(PUBREC, timeout)
        assert rec.pid == pid
        if rec.rc >= 0x80:
            return rec
        self.send(ack(PUBREL, pid))
        comp = self.expect_reply(PUBCOMP, timeout)
        assert comp.pid == pid
        return comp

    def expect_publish(self, timeout=5.0, auto_ack=True):
        """The next packet, which must be a PUBLISH; with auto_ack, QoS 1 is
        acknowledged and QoS 2 gets its PUBREC (a PUBREL arriving later is
        answered by the next expect_publish)."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self.recv(max(deadline - time.monotonic(), 0.001))
            if auto_ack and pkt.type == PUBREL:
                self.send(ack(PUBCOMP, pkt.pid))
                continue
            break
        assert pkt.type == PUBLISH, f"expected PUBLISH, got {pkt!r}"
        if auto_ack and pkt.qos == 1:
            self.send(ack(PUBACK, pkt.pid))
        elif auto_ack and pkt.qos == 2:
            self.send(ack(PUBREC, pkt.pid))
        return pkt


def v5connect(raw_factory, client_id="", on=None, **kw):
    """A V5Client on a new socket, connected with CONNACK 0 asserted;
    returns (client, connack)."""
    c = V5Client(raw_factory(on=on))
    return c, c.connect_ok(client_id, **kw)


# ---------------------------------------------------------------- paho

def paho_props(ptype, **values):
    """paho Properties for a packet type name ("CONNECT", "PUBLISH",
    "DISCONNECT", "SUBSCRIBE", "WILLMESSAGE"...), CamelCase values."""
    p = Properties(getattr(PacketTypes, ptype))
    for k, v in values.items():
        setattr(p, k, v)
    return p


def paho5(client_factory, client_id=None, clean_start=True, keepalive=60,
          **connect_props):
    """A paho MQTT 5 client connected with CONNECT properties (CamelCase,
    e.g. SessionExpiryInterval=10); CONNACK 0 asserted."""
    c = client_factory(client_id, protocol="5", connect=False)
    kw = {"clean_start": clean_start}
    if connect_props:
        kw["properties"] = paho_props("CONNECT", **connect_props)
    c.connect(keepalive=keepalive, **kw)
    return c
