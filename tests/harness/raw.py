"""
MQTT by hand, for tests that need exact bytes on the wire (malformed
packets, acknowledgements held back or sent late, return codes that client
libraries hide): one codec for MQTT 3.1, 3.1.1 and 5.0, and clients on raw
sockets that read whole packets with deadlines.

Builders return bytes and validate nothing: tests are free to build wrong
packets. Where the two versions differ, a builder writes the MQTT 5 form
when it is given `properties` (a property block, empty for ()), the 3.1.1
form when properties is None (the default). `v5` is this module seen from
an MQTT 5 test: the same builders with the MQTT 5 defaults, and every other
name (v5.publish(t, b"x", 1), v5.SESSION_EXPIRY).

Properties are given as a list of (id, value) pairs, so that order and
duplicates are under the test's control; a dict works too. A User
Property's value is a (name, value) pair.

RawClient owns one TCP connection and decodes what it reads as the
protocol level it speaks (3.1.1 unless told otherwise); V5Client holds MQTT
5 conversations over one; RawSession speaks either version through the
same calls.
"""
import socket
import struct
import time
import uuid

# ---------------------------------------------------------------- constants

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH",
    PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

# MQTT protocol levels.
V31 = 3
V311 = 4
V5 = 5

# MQTT 5 properties.
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

# MQTT 5 reason codes the tests look for.
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


# ---------------------------------------------------------------- encoding

def varint(n):
    """Variable byte integer (1 to 4 bytes for valid values)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def u16(n):
    return struct.pack("!H", n)


def u32(n):
    return struct.pack("!I", n)


def binary(b):
    """Length-prefixed bytes (a str is UTF-8 encoded)."""
    if isinstance(b, str):
        b = b.encode("utf-8")
    return u16(len(b)) + b


def mqtt_str(s):
    """Length-prefixed string; bytes are sent as given (may be invalid)."""
    return binary(s)


def packet(ptype, flags, body):
    """Fixed header + body with a correct remaining length."""
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + body


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


def _props_if(properties):
    """The property block of the MQTT 5 form, nothing for 3.1.1."""
    return b"" if properties is None else props(properties)


def connect(client_id="", clean=True, keepalive=60, level=V311,
            proto_name=None, will=None, username=None, password=None,
            reserved=False, properties=None):
    """CONNECT. will = (topic, payload, qos, retain[, will properties]);
    clean is Clean Session (3.1.1) or Clean Start (5); reserved sets the
    reserved flag bit."""
    if proto_name is None:
        proto_name = "MQIsdp" if level == V31 else "MQTT"
    flags = 0
    if clean:
        flags |= 0x02
    if will is not None:
        wqos, wretain = will[2], will[3]
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    if reserved:
        flags |= 0x01
    body = mqtt_str(proto_name) + bytes([level, flags]) + u16(keepalive)
    body += _props_if(properties) + mqtt_str(client_id)
    if will is not None:
        wtopic, wpayload = will[0], will[1]
        if properties is not None:
            body += props(will[4] if len(will) > 4 else ())
        body += mqtt_str(wtopic) + binary(wpayload)
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += binary(password)
    return packet(CONNECT, 0, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None,
            properties=None):
    """PUBLISH (packet id 1 unless `pid` is given, when qos > 0)."""
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_str(topic)
    if qos > 0:
        body += u16(pid if pid is not None else 1)
    return packet(PUBLISH, flags, body + _props_if(properties) + payload)


def ack(ptype, pid, rc=0, properties=None):
    """PUBACK, PUBREC, PUBREL or PUBCOMP; a reason code and properties
    (MQTT 5) only when one of them is given."""
    body = u16(pid)
    if rc or properties:
        body += bytes([rc]) + props(properties or ())
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def puback(pid):
    return ack(PUBACK, pid)


def pubrec(pid):
    return ack(PUBREC, pid)


def pubrel(pid):
    return ack(PUBREL, pid)


def pubcomp(pid):
    return ack(PUBCOMP, pid)


def sub_options(qos=0, no_local=False, retain_as_published=False,
                retain_handling=0):
    """The subscription options byte of an MQTT 5 SUBSCRIBE."""
    return (qos | (0x04 if no_local else 0)
            | (0x08 if retain_as_published else 0) | (retain_handling << 4))


def subscribe(pid, filters, flags=2, properties=None):
    """SUBSCRIBE. filters: [(filter, qos)] (MQTT 5: [(filter, options
    byte)], see sub_options())."""
    body = u16(pid) + _props_if(properties)
    for f, opts in filters:
        body += mqtt_str(f) + bytes([opts])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe(pid, filters, flags=2, properties=None):
    body = u16(pid) + _props_if(properties)
    for f in filters:
        body += mqtt_str(f)
    return packet(UNSUBSCRIBE, flags, body)


def pingreq():
    return packet(PINGREQ, 0, b"")


def disconnect(rc=0, properties=None):
    """DISCONNECT; a reason code and properties (MQTT 5) only when one of
    them is given."""
    if not rc and not properties:
        return packet(DISCONNECT, 0, b"")
    return packet(DISCONNECT, 0, bytes([rc]) + props(properties or ()))


class _V5Builders:
    """This module for MQTT 5 tests: the builders whose 3.1.1 and 5 forms
    differ, with the MQTT 5 defaults (CONNECT at level 5, a property block,
    empty unless given); any other name reads through to the module."""

    @staticmethod
    def connect(client_id="", clean_start=True, keepalive=60,
                properties=(), will=None, username=None, password=None,
                level=V5):
        """CONNECT. will = (topic, payload, qos, retain, will_properties)."""
        return connect(client_id, clean_start, keepalive, level, will=will,
                       username=username, password=password,
                       properties=properties)

    @staticmethod
    def publish(topic, payload=b"", qos=0, retain=False, dup=False,
                pid=None, properties=()):
        return publish(topic, payload, qos, retain, dup, pid, properties)

    @staticmethod
    def subscribe(pid, filters, properties=(), flags=2):
        """filters: [(filter, options byte)]; see sub_options()."""
        return subscribe(pid, filters, flags, properties)

    @staticmethod
    def unsubscribe(pid, filters, properties=()):
        return unsubscribe(pid, filters, properties=properties)

    def __getattr__(self, name):
        try:
            return globals()[name]
        except KeyError:
            raise AttributeError(name) from None


v5 = _V5Builders()


# ---------------------------------------------------------------- decoding

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

    def __len__(self):
        return len(self.items)

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


class Packet:
    """One packet from the broker: type, flags and body, decoded as the
    protocol `level` says. .pid, .rc (reason or return code, 0 where the
    packet has none) and .props (MQTT 5) always exist; PUBLISH has .topic
    .payload .qos .dup .retain, CONNACK .session_present, SUBACK (and MQTT
    5 UNSUBACK) .codes. An MQTT 5 packet with bytes left over after its
    fields is a ValueError."""

    def __init__(self, ptype, flags, body, level=V311):
        self.type = ptype
        self.flags = flags
        self.body = body
        self.level = level
        self.pid = None
        self.rc = 0
        self.props = Props([])
        is5 = level == V5
        r = Reader(body)
        if ptype == CONNACK:
            self.session_present = bool(r.byte() & 0x01)
            self.rc = r.byte()
            if is5:
                self.props = r.props()
        elif ptype == PUBLISH:
            self.dup = bool(flags & 0x08)
            self.qos = (flags >> 1) & 0x03
            self.retain = bool(flags & 0x01)
            self.topic = r.string()
            if self.qos:
                self.pid = r.u16()
            if is5:
                self.props = r.props()
            self.payload = r.rest()
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.pid = r.u16()
            if is5 and r.left():
                self.rc = r.byte()
            if is5 and r.left():
                self.props = r.props()
        elif ptype == SUBACK or (is5 and ptype == UNSUBACK):
            self.pid = r.u16()
            if is5:
                self.props = r.props()
            self.codes = list(r.rest())
        elif ptype == UNSUBACK:
            self.pid = r.u16()
        elif is5 and ptype in (DISCONNECT, AUTH):
            if r.left():
                self.rc = r.byte()
            if r.left():
                self.props = r.props()
        if is5 and r.left():
            raise ValueError(f"{self.name}: {r.left()} bytes left over")

    @property
    def name(self):
        return NAMES.get(self.type, str(self.type))

    def __repr__(self):
        props_ = f" {self.props!r}" if len(self.props) else ""
        if self.type == PUBLISH:
            return (f"<PUBLISH {self.topic!r} qos={self.qos} dup={self.dup} "
                    f"retain={self.retain} pid={self.pid}{props_} "
                    f"payload={self.payload[:40]!r}>")
        return (f"<{self.name} flags={self.flags:#x} pid={self.pid} "
                f"rc={self.rc:#x}{props_} body={self.body[:40].hex()}>")


class Closed(Exception):
    """The peer closed the connection."""


# ---------------------------------------------------------------- clients

class RawClient:
    """One TCP connection to the broker, read packet by packet and decoded
    as protocol `level`. Packets set aside while waiting for a reply
    (expect_reply) come first in later reads."""

    def __init__(self, host, port, timeout=5.0, level=V311):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._setup(sock, level)

    @classmethod
    def over(cls, sock, level=V311):
        """A RawClient on a socket connected already (a TLS one, say)."""
        self = cls.__new__(cls)
        self._setup(sock, level)
        return self

    def _setup(self, sock, level):
        self.sock = sock
        self.level = level
        self.buf = bytearray()
        self.eof = False
        self.backlog = []

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read more bytes into buf; raise TimeoutError or Closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from broker")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from broker") from None
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise Closed("connection closed by broker")
        self.buf += data

    def _parse(self):
        """The first whole packet in buf (removed from it), or None."""
        if len(self.buf) < 2:
            return None
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise ValueError("bad remaining length from broker")
        if len(self.buf) < i + length:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i:i + length])
        del self.buf[:i + length]
        return Packet(first >> 4, first & 0x0F, body, self.level)

    def _read(self, timeout):
        """The next whole packet from the socket (the backlog aside)."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse()
            if pkt is not None:
                return pkt
            self._fill(deadline)

    def recv(self, timeout=5.0):
        """The next packet: TimeoutError, or Closed, when none comes."""
        if self.backlog:
            return self.backlog.pop(0)
        return self._read(timeout)

    def expect(self, ptype, timeout=5.0):
        """The next packet, which must be of type ptype."""
        pkt = self.recv(timeout)
        assert pkt.type == ptype, f"expected {NAMES[ptype]}, got {pkt!r}"
        return pkt

    def expect_reply(self, ptype, timeout=5.0):
        """Like expect(), but PUBLISH and PUBREL packets arriving first
        (messages for this client) are kept for later recv() calls."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                pkt = self._read(max(deadline - time.monotonic(), 0.001))
                if pkt.type in (PUBLISH, PUBREL) and ptype != pkt.type:
                    kept.append(pkt)
                    continue
                assert pkt.type == ptype, \
                    f"expected {NAMES[ptype]}, got {pkt!r}"
                return pkt
        finally:
            self.backlog += kept

    def expect_nothing(self, timeout):
        """No packet arrives (and the link stays up) for `timeout` s."""
        try:
            pkt = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {pkt!r}")

    def connect(self, client_id="", **kw):
        """Send CONNECT (see connect()) and return the CONNACK packet."""
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def subscribe(self, filters, pid=1):
        """SUBSCRIBE and return the SUBACK return codes."""
        self.send(subscribe(pid, filters))
        ack_ = self.expect(SUBACK)
        assert ack_.pid == pid
        return ack_.codes

    def wait_closed(self, timeout=5.0):
        """Wait for EOF, discarding packets. True if the broker closed the
        connection within timeout, False otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv(max(deadline - time.monotonic(), 0.001))
            except Closed:
                return True
            except TimeoutError:
                return False

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _OverRaw:
    """Sending and reading through the RawClient self.raw."""

    def send(self, data):
        self.raw.send(data)

    def recv(self, timeout=5.0):
        return self.raw.recv(timeout)

    def expect(self, ptype, timeout=5.0):
        return self.raw.expect(ptype, timeout)

    def expect_reply(self, ptype, timeout=5.0):
        return self.raw.expect_reply(ptype, timeout)

    def expect_nothing(self, timeout):
        self.raw.expect_nothing(timeout)

    def wait_closed(self, timeout=5.0):
        return self.raw.wait_closed(timeout)


class V5Client(_OverRaw):
    """MQTT 5.0 conversations over a RawClient (so raw_factory closes it at
    teardown), which from then on decodes MQTT 5. Acknowledgements are sent
    by the test, except where a helper says otherwise."""

    def __init__(self, rawclient):
        self.raw = rawclient
        self.raw.level = V5
        self.next_pid = 1

    def pid(self):
        p = self.next_pid
        self.next_pid = p % 65535 + 1
        return p

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
        """CONNECT (see v5.connect()); returns the CONNACK (any reason
        code)."""
        self.send(v5.connect(client_id, **kw))
        return self.expect(CONNACK)

    def connect_ok(self, client_id="", **kw):
        ack_ = self.connect(client_id, **kw)
        assert ack_.rc == 0, f"CONNACK {ack_.rc:#x} {ack_.props!r}"
        return ack_

    def connect_refused(self, client_id, rc, **kw):
        """CONNECT that the broker must refuse: a CONNACK with reason code
        rc, or (where the spec lets the broker choose, as for malformed
        packets and protocol errors) no CONNACK at all; then it closes."""
        self.send(v5.connect(client_id, **kw))
        try:
            ack_ = self.recv()
        except Closed:
            return None
        assert ack_.type == CONNACK, f"expected CONNACK, got {ack_!r}"
        assert ack_.rc == rc, f"CONNACK {ack_.rc:#x}, expected {rc:#x}"
        assert self.wait_closed(), "connection still open after CONNACK"
        return ack_

    def subscribe(self, filters, properties=(), timeout=5.0):
        """SUBSCRIBE [(filter, options byte)]; returns the SUBACK."""
        pid = self.pid()
        self.send(v5.subscribe(pid, filters, properties))
        ack_ = self.expect_reply(SUBACK, timeout)
        assert ack_.pid == pid
        return ack_

    def unsubscribe(self, filters, timeout=5.0):
        pid = self.pid()
        self.send(v5.unsubscribe(pid, filters))
        ack_ = self.expect_reply(UNSUBACK, timeout)
        assert ack_.pid == pid
        return ack_

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

    def wait_no_subscriber(self, topic, timeout):
        """Publish QoS 1 to `topic` until the PUBACK says no subscriber
        matched (0x10): where the only subscriber is an offline session,
        the moment it expired. Returns the seconds waited; fails after
        `timeout`."""
        start = time.monotonic()
        while True:
            ack_ = self.publish(topic, b"probe", qos=1)
            if ack_.rc == RC_NO_MATCHING_SUBSCRIBERS:
                return time.monotonic() - start
            assert ack_.rc == 0, f"PUBACK {ack_.rc:#x}"
            assert time.monotonic() - start < timeout, \
                f"session still there after {timeout} s"
            time.sleep(0.05)


def v5connect(raw_factory, client_id="", on=None, **kw):
    """A V5Client on a new socket, connected with CONNACK 0 asserted;
    returns (client, connack)."""
    c = V5Client(raw_factory(on=on))
    return c, c.connect_ok(client_id, **kw)


class RawSession(_OverRaw):
    """A raw-socket client speaking MQTT 3.1.1 (proto "311") or 5.0
    ("5") through the same calls, for tests that hold acknowledgements back
    or send them by hand whatever the version. Packets received have .type
    .pid .qos .dup .topic .payload (and .rc / .session_present where they
    apply)."""

    def __init__(self, raw_factory, proto, on=None):
        self.proto = proto
        self.raw = raw_factory(on=on)
        self.v5 = V5Client(self.raw) if proto == "5" else None

    def connect(self, client_id, fresh=False, expiry=300, **kw):
        """CONNECT with a persistent session (v3: clean session 0; v5:
        Clean Start `fresh`, Session Expiry Interval `expiry` unless
        None); returns the CONNACK."""
        if self.v5 is None:
            return self.raw.connect(client_id, clean=False, **kw)
        props_ = [] if expiry is None else [(SESSION_EXPIRY, expiry)]
        return self.v5.connect(client_id, clean_start=fresh,
                               properties=props_, **kw)

    def subscribe(self, filters):
        """filters: [(filter, qos)]; returns the SUBACK codes."""
        if self.v5 is None:
            return self.raw.subscribe(filters)
        return self.v5.subscribe([(f, sub_options(q))
                                  for f, q in filters]).codes

    def publish(self, topic, payload, qos=0, pid=None, dup=False,
                retain=False):
        """Send a PUBLISH (the QoS flow is the test's business)."""
        self.send(publish(topic, payload, qos, retain, dup, pid,
                          properties=() if self.v5 else None))

    def ack(self, ptype, pid):
        """Send PUBACK, PUBREC, PUBREL or PUBCOMP."""
        self.send(ack(ptype, pid))

    def ping(self, timeout=5.0):
        """PINGREQ and wait for PINGRESP: everything the broker had to send
        before it is read (and returned)."""
        self.send(pingreq())
        got = []
        while True:
            pkt = self.recv(timeout)
            if pkt.type == PINGRESP:
                return got
            got.append(pkt)

    def store_barrier(self):
        """SUBSCRIBE (to a topic of its own) and wait for the SUBACK. A
        persistent session's SUBACK follows the store's reply to the
        subscription write, and the store completes one client's
        operations in order: so every store write the broker issued for
        this session before (fire and forget ones too) is done."""
        f = f"barrier/{uuid.uuid4().hex[:12]}"
        codes = self.subscribe([(f, 0)])
        assert codes == [0], f"barrier SUBSCRIBE refused: {codes}"

    def disconnect(self):
        self.send(disconnect())
        return self.raw.wait_closed(5.0)

    def close(self):
        self.raw.close()
