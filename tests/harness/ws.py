"""
harness/ws.py - a raw WebSocket (RFC 6455) client for tests that need exact
frames on the wire: the HTTP upgrade with any headers, masked or unmasked
frames of any opcode, fragments, pings, close frames, and MQTT packets
read back from the binary frames (mqtt_raw builds and decodes them).

    ws = WsClient(host, port)                 # upgraded, subprotocol mqtt
    ws.send(mqtt_raw.connect("c1"))           # one binary frame
    ws.expect(mqtt_raw.CONNACK)
    ws.send_frame(OP_PING, b"x"); ws.recv_frame()   # (True, OP_PONG, b"x")

    status, headers, body = upgrade_status(host, port, path="/other")
"""
import base64
import hashlib
import os
import socket
import struct
import time

from harness import raw as mqtt_raw

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Closed(mqtt_raw.Closed):
    """The broker closed the WebSocket (close frame) or the TCP
    connection; .code and .reason are the close frame's (None if none)."""

    def __init__(self, msg, code=None, reason=b""):
        super().__init__(msg)
        self.code = code
        self.reason = reason


def accept_for(key):
    return base64.b64encode(
        hashlib.sha1((key + GUID).encode()).digest()).decode()


def request_bytes(path="/mqtt", protocols=("mqtt",), headers=None,
                  host="127.0.0.1", key=None, version="13", upgrade=True):
    """An upgrade request; headers (dict) are added or, with value None,
    left out."""
    h = {"Host": host}
    if upgrade:
        h["Upgrade"] = "websocket"
        h["Connection"] = "Upgrade"
    h["Sec-WebSocket-Key"] = key
    if version is not None:
        h["Sec-WebSocket-Version"] = version
    if protocols:
        h["Sec-WebSocket-Protocol"] = ", ".join(protocols)
    h.update(headers or {})
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in h.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(op, payload=b"", fin=True, mask=True, rsv=0, length=None,
          mask_key=None):
    """A client frame (masked unless mask=False); length overrides the
    announced payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | op])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = mask_key or os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


class WsClient:
    """One WebSocket connection (over TLS with ssl_context), upgraded at
    construction unless upgrade=False."""

    def __init__(self, host, port, path="/mqtt", protocols=("mqtt",),
                 headers=None, ssl_context=None, timeout=5.0, upgrade=True):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.host = host
        self.buf = bytearray()     # bytes from the socket, not yet framed
        self.stream = bytearray()  # binary payloads, not yet MQTT packets
        self.controls = []         # (op, payload) of pongs and pings seen
        self.eof = False
        self.close_code = None
        self.close_reason = b""
        if upgrade:
            status, self.headers, body = self.upgrade(path, protocols,
                                                      headers)
            assert status == 101, f"upgrade refused: {status} {body!r}"

    # ------------------------------------------------------------ upgrade

    def upgrade(self, path="/mqtt", protocols=("mqtt",), headers=None,
                **kw):
        """Send the request; (status, headers (lower-case names), body).
        A 101 is checked (accept key, subprotocol)."""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(request_bytes(path, protocols, headers,
                                        host=self.host, key=key, **kw))
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        body = b""
        if status == 101:
            assert hdrs["sec-websocket-accept"] == accept_for(key)
            assert hdrs["upgrade"].lower() == "websocket"
            assert hdrs["connection"].lower() == "upgrade"
            assert hdrs["sec-websocket-protocol"] in protocols
        else:
            n = int(hdrs.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill(deadline)
            body = bytes(self.buf[:n])
            del self.buf[:n]
        return status, hdrs, body

    # ------------------------------------------------------------ frames

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, op, payload=b"", **kw):
        self.sock.sendall(frame(op, payload, **kw))

    def send(self, data):
        """MQTT bytes as one binary frame."""
        self.send_frame(OP_BINARY, data)

    def _fill(self, deadline):
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
            raise Closed("connection closed by broker", self.close_code,
                         self.close_reason)
        self.buf += data

    def _parse_frame(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin, op = bool(b[0] & 0x80), b[0] & 0x0F
        assert b[0] & 0x70 == 0, "reserved bits from the broker"
        assert not b[1] & 0x80, "server frames are not masked"
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < at + n:
            return None
        payload = bytes(b[at:at + n])
        del b[:at + n]
        return fin, op, payload

    def recv_frame(self, timeout=5.0):
        """The next frame: (fin, opcode, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse_frame()
            if f is not None:
                return f
            self._fill(deadline)

    # ------------------------------------------------------------ MQTT

    def _parse_packet(self):
        s = self.stream
        if len(s) < 2:
            return None
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(s):
                return None
            length += (s[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not s[i - 1] & 0x80:
                break
        if len(s) < i + length:
            return None
        first = s[0]
        body = bytes(s[i:i + length])
        del s[:i + length]
        return mqtt_raw.Packet(first >> 4, first & 0x0F, body)

    def recv(self, timeout=5.0):
        """The next MQTT packet; a close frame raises Closed (with its
        code), a ping or pong is recorded in self.controls."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse_packet()
            if pkt is not None:
                return pkt
            fin, op, payload = self.recv_frame(
                max(deadline - time.monotonic(), 0.001))
            if op in (OP_BINARY, OP_CONT):
                self.stream += payload
            elif op == OP_CLOSE:
                self.close_code = (struct.unpack("!H", payload[:2])[0]
                                   if len(payload) >= 2 else None)
                self.close_reason = payload[2:]
                raise Closed("close frame from broker", self.close_code,
                             self.close_reason)
            else:
                self.controls.append((op, payload))

    def expect(self, ptype, timeout=5.0):
        pkt = self.recv(timeout)
        assert pkt.type == ptype, \
            f"expected {mqtt_raw.NAMES[ptype]}, got {pkt!r}"
        return pkt

    def connect(self, client_id="", **kw):
        self.send(mqtt_raw.connect(client_id, **kw))
        return self.expect(mqtt_raw.CONNACK)

    def subscribe(self, filters, pid=1):
        self.send(mqtt_raw.subscribe(pid, filters))
        ack = self.expect(mqtt_raw.SUBACK)
        assert ack.pid == pid
        return ack.codes

    def expect_close(self, timeout=5.0):
        """Read until the broker's close frame: (code, reason). Then the
        broker must close the TCP connection too."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv(max(deadline - time.monotonic(), 0.001))
            except Closed as e:
                assert e.code is not None or not self.eof, \
                    "TCP closed without a close frame"
                break
        code, reason = self.close_code, self.close_reason
        assert self.wait_eof(timeout), "TCP still open after the close frame"
        return code, reason

    def wait_eof(self, timeout=5.0):
        """Discard frames until the TCP connection closes (True) or the
        time is up (False)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self.buf.clear()
                self._fill(deadline)
            except Closed:
                return True
            except TimeoutError:
                return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def upgrade_status(host, port, ssl_context=None, **kw):
    """(status, headers, body) of one upgrade request; the connection is
    closed afterwards."""
    with WsClient(host, port, ssl_context=ssl_context, upgrade=False) as ws:
        return ws.upgrade(**kw)


def http_exchange(host, port, data, timeout=5.0):
    """Send raw bytes, read until the broker closes: the whole answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)
