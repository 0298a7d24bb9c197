"""
mqtt_raw.py - a tiny MQTT 3.1 / 3.1.1 packet builder and reader for tests
that need exact bytes on the wire (malformed packets, unacknowledged QoS
flows, return codes that client libraries hide).

Builders return bytes; RawClient owns one TCP socket and reads whole packets
with deadlines. Nothing here validates: tests are free to build wrong packets.
"""
import socket
import struct
import time

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

NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH",
    PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT",
}

# MQTT protocol levels.
V31 = 3
V311 = 4


# ---------------------------------------------------------------- encoding

def varint(n):
    """Remaining-length encoding (1 to 4 bytes for valid values)."""
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


def mqtt_str(s):
    """Length-prefixed string; bytes are sent as given (may be invalid)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return u16(len(s)) + s


def packet(ptype, flags, body):
    """Fixed header + body with a correct remaining length."""
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + body


def connect(client_id="", clean=True, keepalive=60, level=V311,
            proto_name=None, will=None, username=None, password=None,
            reserved=False):
    """CONNECT. will = (topic, payload, qos, retain)."""
    if proto_name is None:
        proto_name = "MQIsdp" if level == V31 else "MQTT"
    flags = 0
    if clean:
        flags |= 0x02
    if will is not None:
        _, _, wqos, wretain = will
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    if reserved:
        flags |= 0x01
    body = mqtt_str(proto_name) + bytes([level, flags]) + u16(keepalive)
    body += mqtt_str(client_id)
    if will is not None:
        wtopic, wpayload, _, _ = will
        if isinstance(wpayload, str):
            wpayload = wpayload.encode()
        body += mqtt_str(wtopic) + u16(len(wpayload)) + wpayload
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += mqtt_str(password)
    return packet(CONNECT, 0, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_str(topic)
    if qos > 0:
        body += u16(pid if pid is not None else 1)
    return packet(PUBLISH, flags, body + payload)


def puback(pid):
    return packet(PUBACK, 0, u16(pid))


def pubrec(pid):
    return packet(PUBREC, 0, u16(pid))


def pubrel(pid):
    return packet(PUBREL, 2, u16(pid))


def pubcomp(pid):
    return packet(PUBCOMP, 0, u16(pid))


def subscribe(pid, filters, flags=2):
    """filters: list of (filter, qos)."""
    body = u16(pid)
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe(pid, filters, flags=2):
    body = u16(pid)
    for f in filters:
        body += mqtt_str(f)
    return packet(UNSUBSCRIBE, flags, body)


def pingreq():
    return packet(PINGREQ, 0, b"")


def disconnect():
    return packet(DISCONNECT, 0, b"")


# ---------------------------------------------------------------- decoding

class Packet:
    """One received packet: type, flags and body, plus decoded fields."""

    def __init__(self, ptype, flags, body):
        self.type = ptype
        self.flags = flags
        self.body = body
        self.pid = None
        if ptype == PUBLISH:
            self.dup = bool(flags & 0x08)
            self.qos = (flags >> 1) & 0x03
            self.retain = bool(flags & 0x01)
            tlen = struct.unpack("!H", body[:2])[0]
            self.topic = body[2:2 + tlen].decode("utf-8")
            rest = body[2 + tlen:]
            if self.qos > 0:
                self.pid = struct.unpack("!H", rest[:2])[0]
                rest = rest[2:]
            self.payload = bytes(rest)
        elif ptype == CONNACK:
            self.session_present = bool(body[0] & 0x01)
            self.rc = body[1]
        elif ptype == SUBACK:
            self.pid = struct.unpack("!H", body[:2])[0]
            self.codes = list(body[2:])
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
            self.pid = struct.unpack("!H", body[:2])[0]

    def __repr__(self):
        name = NAMES.get(self.type, str(self.type))
        if self.type == PUBLISH:
            return (f"<PUBLISH {self.topic!r} qos={self.qos} dup={self.dup} "
                    f"retain={self.retain} pid={self.pid} "
                    f"payload={self.payload[:40]!r}>")
        return f"<{name} flags={self.flags:#x} body={self.body[:40].hex()}>"


class Closed(Exception):
    """The peer closed the connection."""


class RawClient:
    """One TCP connection to the broker, read packet by packet."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

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

    def recv(self, timeout=5.0):
        """The next whole packet; TimeoutError or Closed otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse()
            if pkt is not None:
                return pkt
            self._fill(deadline)

    def _parse(self):
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
        return Packet(first >> 4, first & 0x0F, body)

    def expect(self, ptype, timeout=5.0):
        """The next packet, which must be of type ptype."""
        pkt = self.recv(timeout)
        assert pkt.type == ptype, \
            f"expected {NAMES[ptype]}, got {pkt!r}"
        return pkt

    def expect_nothing(self, timeout):
        """Assert that no packet arrives (and the link stays up) for timeout s."""
        try:
            pkt = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {pkt!r}")

    def connect(self, client_id="", **kw):
        """Send CONNECT and return the CONNACK packet."""
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def subscribe(self, filters, pid=1):
        """SUBSCRIBE and return the SUBACK return codes."""
        self.send(subscribe(pid, filters))
        ack = self.expect(SUBACK)
        assert ack.pid == pid
        return ack.codes

    def wait_closed(self, timeout):
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
