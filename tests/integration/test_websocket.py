"""MQTT over WebSocket: the ws_port and wss_port listeners.

Covered: pub/sub over ws:// and wss:// with paho's websocket transport
(QoS 0/1/2, MQTT 3.1.1 and 5, messages larger than one read and than a
16-bit frame length), TCP, TLS, WebSocket and secure WebSocket clients in
one exchange (messages, a retained message, a will, a persistent session
resumed over another transport), the upgrade's refusals (404 for another
path, 400 for plain HTTP, plain MQTT or no mqtt subprotocol, 426 for
another version, 403 for an origin not allowed), a custom ws_path, raw
frames (unmasked 1002, text 1003, oversized 1009 and a bad close reason
1007 each closing only that connection; ping -> pong; packets split over
frames and fragments; several packets in one frame; the close handshake
both ways), X-Forwarded-For from a trusted proxy and the auth endpoint's
listener field, the upgrade deadline, and a stop with connections still
in their upgrade.
"""
import socket
import struct
import time
from types import SimpleNamespace

import pytest

from harness import raw as mqtt_raw
from auth_server import AuthServer, User
from harness import HOST
from harness.broker import FreePort
from harness.client import Client
from harness.ports import free_port
from test_tls import pki, tls_context  # noqa: F401 (the module's PKI)
from harness.ws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                    Closed, WsClient, http_exchange, upgrade_status)

pytestmark = pytest.mark.starling_only

PORT_KEY = {"ws": "ws_port", "wss": "wss_port", "tls": "tls_port"}


def ws_keys(pki=None, **extra):
    """Keys for a broker with a WebSocket listener (and, given the PKI,
    the secure WebSocket and TLS listeners)."""
    keys = dict(ws_port=FreePort())
    if pki is not None:
        keys.update(wss_port=FreePort(), tls_port=FreePort(),
                    tls_cert_file=pki.server_pem, tls_key_file=pki.server_key)
    keys.update(extra)
    return keys


@pytest.fixture
def ws_broker(broker_factory):
    return broker_factory(**ws_keys())


@pytest.fixture
def all_broker(broker_factory, pki):
    """TCP, TLS, WebSocket and secure WebSocket listeners."""
    return broker_factory(**ws_keys(pki))


@pytest.fixture
def mk(pki):
    """mk(b, transport="ws", ...) -> a paho Client over tcp, tls, ws or
    wss (closed at teardown).

    Every write of a paho client here happens on its network thread (a
    no-op on_socket_register_write keeps paho from writing from the test
    thread): over TLS, the test thread's SSL_write would otherwise race
    the network thread's SSL_read on the same SSL object, and over
    WebSocket two threads could interleave frames."""
    made = []

    def make(b, transport="ws", protocol="311", client_id=None,
             clean_session=True, path="/mqtt", will=None, connect=True,
             expect_rc=0, headers=None):
        ep = b if transport == "tcp" else SimpleNamespace(
            host=b.host, port=b.ports[PORT_KEY[transport]])
        ws = transport in ("ws", "wss")
        c = Client(ep, client_id, protocol, clean_session,
                   transport="websockets" if ws else "tcp")
        made.append(c)
        if transport != "tcp":
            c.paho.on_socket_register_write = lambda *a: None
        if ws:
            c.paho.ws_set_options(path=path, headers=headers)
        if transport in ("wss", "tls"):
            c.paho.tls_set(ca_certs=pki.ca_pem)
        if will is not None:
            c.will_set(*will)
        if connect:
            c.connect(expect_rc=expect_rc)
        return c

    yield make
    for c in made:
        c._stop.set()
    for c in made:
        c.close()


@pytest.fixture
def raw_ws(pki):
    """raw_ws(b, secure=False, **kw) -> an upgraded WsClient (closed at
    teardown)."""
    made = []

    def make(b, secure=False, **kw):
        ctx = tls_context(pki) if secure else None
        ws = WsClient(b.host, b.ports["wss_port" if secure else "ws_port"],
                      ssl_context=ctx, **kw)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close()


def ws_port(b):
    return b.ports["ws_port"]


# ---------------------------------------------------------------- traffic

@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", ["311", "5"])
@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_publish_subscribe(all_broker, mk, topic, qos, protocol, transport):
    sub = mk(all_broker, transport, protocol)
    pub = mk(all_broker, transport, protocol)
    assert sub.subscribe(topic, qos) == [qos]
    payloads = [b"small", bytes(range(256)) * 2, b"x" * 70000]
    for p in payloads:
        pub.publish(topic, p, qos)
    got = sub.expect_messages(len(payloads))
    assert [m.payload for m in got] == payloads
    assert {m.qos for m in got} == {qos}


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_large_message(all_broker, mk, topic, transport):
    """Much more than one read and one TLS record each way."""
    sub = mk(all_broker, transport)
    pub = mk(all_broker, transport)
    sub.subscribe(topic, 1)
    payload = bytes(range(256)) * 2400  # 614 400 bytes
    pub.publish(topic, payload, 1, timeout=15)
    assert sub.expect_message(timeout=15).payload == payload


def test_tcp_tls_ws_wss_exchange(all_broker, mk, raw_ws, topic):
    b = all_broker
    transports = ["tcp", "tls", "ws", "wss"]

    # a retained message from TCP reaches subscribers on every transport
    mk(b, "tcp").publish(f"{topic}/retained", b"kept", 1, retain=True)
    for t in transports:
        s = mk(b, t)
        s.subscribe(f"{topic}/retained", 1)
        m = s.expect_message()
        assert (m.payload, m.retain) == (b"kept", True), t

    # every transport publishes, every transport receives everything
    subs = {t: mk(b, t) for t in transports}
    for s in subs.values():
        s.subscribe(f"{topic}/all/+", 1)
    for t in transports:
        mk(b, t).publish(f"{topic}/all/{t}", f"from {t}".encode(), 1)
    for t, s in subs.items():
        got = sorted(m.payload for m in s.expect_messages(len(transports)))
        assert got == sorted(f"from {x}".encode() for x in transports), t

    # a will: a WebSocket client whose TCP connection just drops
    watcher = mk(b, "tls")
    watcher.subscribe(f"{topic}/will", 1)
    ws = raw_ws(b)
    assert ws.connect("will-ws", will=(f"{topic}/will", b"ws gone", 1,
                                       False)).rc == 0
    ws.sock.shutdown(socket.SHUT_RDWR)
    ws.close()
    assert watcher.expect_message().payload == b"ws gone"

    # a persistent session made over WebSocket, resumed over TLS, then
    # over secure WebSocket
    cid = f"persist-{topic.split('/')[-1]}"
    p = mk(b, "ws", client_id=cid, clean_session=False)
    p.subscribe(f"{topic}/queued", 1)
    p.disconnect()
    mk(b, "tcp").publish(f"{topic}/queued", b"while away", 1)
    again = mk(b, "tls", client_id=cid, clean_session=False)
    assert again.session_present
    assert again.expect_message().payload == b"while away"
    again.disconnect()
    mk(b, "tcp").publish(f"{topic}/queued", b"away again", 1)
    third = mk(b, "wss", client_id=cid, clean_session=False)
    assert third.session_present
    assert third.expect_message().payload == b"away again"


def test_mqttv31_subprotocol(ws_broker, raw_ws):
    ws = raw_ws(ws_broker, protocols=("mqttv3.1",))
    assert ws.headers["sec-websocket-protocol"] == "mqttv3.1"
    assert ws.connect("old", level=mqtt_raw.V31).rc == 0


@pytest.mark.broker(ws_port=FreePort(), ws_path="/ws/mqtt")
def test_custom_path(broker, mk, topic):
    sub = mk(broker, "ws", path="/ws/mqtt")
    pub = mk(broker, "ws", path="/ws/mqtt?token=abc")
    sub.subscribe(topic)
    pub.publish(topic, b"hi")
    assert sub.expect_message().payload == b"hi"
    status, _, body = upgrade_status(HOST, broker.ports["ws_port"],
                                     path="/mqtt")
    assert status == 404


# ---------------------------------------------------------------- refusals

def test_wrong_path_is_404(ws_broker):
    status, headers, body = upgrade_status(HOST, ws_port(ws_broker),
                                           path="/")
    assert status == 404
    assert headers["connection"] == "close"
    assert b"no WebSocket endpoint" in body
    assert ws_broker.wait_log(r"WebSocket upgrade from 127\.0\.0\.1:\d+ "
                              r"refused: 404")


def test_plain_http_is_400(ws_broker):
    answer = http_exchange(HOST, ws_port(ws_broker),
                           b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert b"not a WebSocket upgrade" in answer


def test_plain_mqtt_on_the_websocket_port_is_400(ws_broker):
    answer = http_exchange(HOST, ws_port(ws_broker),
                           mqtt_raw.connect("confused"))
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def test_missing_subprotocol_is_400(ws_broker):
    status, _, body = upgrade_status(HOST, ws_port(ws_broker), protocols=())
    assert status == 400
    assert b"subprotocol" in body
    status, _, _ = upgrade_status(HOST, ws_port(ws_broker),
                                  protocols=("chat", "MQTT"))
    assert status == 400


def test_other_version_is_426(ws_broker):
    status, headers, _ = upgrade_status(HOST, ws_port(ws_broker),
                                        version="8")
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    status, _, _ = upgrade_status(HOST, ws_port(ws_broker), version=None)
    assert status == 400


@pytest.mark.broker(ws_port=FreePort(),
                    ws_allowed_origins="https://app.example, "
                                       "http://localhost:3000")
def test_origin_check(broker, mk, topic):
    port = broker.ports["ws_port"]
    status, _, body = upgrade_status(
        HOST, port, headers={"Origin": "https://evil.example"})
    assert (status, body) == (403, b"origin not allowed\n")
    assert upgrade_status(HOST, port, headers={
        "Origin": "http://localhost:3000"})[0] == 101
    assert upgrade_status(HOST, port)[0] == 101, "no Origin: not a browser"
    # paho sends Origin: http://127.0.0.1:PORT
    with pytest.raises(Exception):
        mk(broker, "ws")
    c = mk(broker, "ws", headers={"Origin": "https://app.example"})
    assert c.subscribe(topic) == [0]


# ---------------------------------------------------------------- frames

def assert_closed_with(ws, code, log_part, broker, other):
    """ws gets a close frame with `code`, then the TCP close; the broker
    says why; `other` (a raw client on the same broker) still works."""
    got, _ = ws.expect_close()
    assert got == code
    assert broker.wait_log(log_part), broker.log_tail(20)
    other.send(mqtt_raw.pingreq())
    other.expect(mqtt_raw.PINGRESP)


def test_unmasked_frame_closes_1002(ws_broker, raw_ws):
    other = raw_ws(ws_broker)
    other.connect("bystander")
    ws = raw_ws(ws_broker)
    ws.connect("unmasked")
    ws.send_frame(OP_BINARY, mqtt_raw.pingreq(), mask=False)
    assert_closed_with(ws, 1002, r"WebSocket: unmasked client frame "
                                 r"\(close 1002\)", ws_broker, other)


def test_text_frame_closes_1003(ws_broker, raw_ws):
    other = raw_ws(ws_broker)
    other.connect("bystander")
    ws = raw_ws(ws_broker)
    ws.connect("texter")
    ws.send_frame(OP_TEXT, b"hello")
    assert_closed_with(ws, 1003, r"text frame .*\(close 1003\)", ws_broker,
                       other)


@pytest.mark.broker(ws_port=FreePort(), ws_max_frame_size=1024)
def test_oversized_frame_closes_1009(broker, raw_ws, topic):
    other = raw_ws(broker)
    other.connect("bystander")
    other.subscribe([(topic, 0)])
    ws = raw_ws(broker)
    ws.connect("big")
    fits = mqtt_raw.publish(topic, b"x" * (1024 - 5 - len(topic)))
    assert len(fits) == 1024
    ws.send(fits)
    assert other.expect(mqtt_raw.PUBLISH).payload == fits[5 + len(topic):]
    ws.send(mqtt_raw.publish(topic, b"x" * 1100))
    assert_closed_with(ws, 1009, r"ws_max_frame_size \(close 1009\)", broker,
                       other)


def test_bad_close_reason_closes_1007(ws_broker, raw_ws):
    other = raw_ws(ws_broker)
    other.connect("bystander")
    ws = raw_ws(ws_broker)
    ws.connect("badutf8")
    ws.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xc3\x28")
    assert_closed_with(ws, 1007, r"close reason not UTF-8 \(close 1007\)",
                       ws_broker, other)


def test_ping_answered_with_pong(ws_broker, raw_ws):
    ws = raw_ws(ws_broker)
    ws.send_frame(OP_PING, b"before connect")
    assert ws.recv_frame() == (True, OP_PONG, b"before connect")
    ws.connect("pinger")
    ws.send_frame(OP_PING, b"")
    assert ws.recv_frame() == (True, OP_PONG, b"")
    ws.send(mqtt_raw.pingreq())
    assert ws.recv_frame() == (True, OP_BINARY, bytes([0xD0, 0]))


def test_packets_split_over_frames(ws_broker, raw_ws, topic):
    ws = raw_ws(ws_broker)
    # CONNECT as one fragmented message with a ping between the fragments
    c = mqtt_raw.connect("splitter")
    ws.send_frame(OP_BINARY, c[:3], fin=False)
    ws.send_frame(OP_PING, b"mid")
    ws.send_frame(OP_CONT, c[3:9], fin=False)
    ws.send_frame(OP_CONT, c[9:], fin=True)
    assert ws.expect(mqtt_raw.CONNACK).rc == 0
    assert ws.controls == [(OP_PONG, b"mid")]
    # SUBSCRIBE over two separate messages
    s = mqtt_raw.subscribe(1, [(topic, 1)])
    ws.send(s[:5])
    ws.send(s[5:])
    assert ws.expect(mqtt_raw.SUBACK).codes == [1]
    # PUBLISH one byte per frame, an empty frame in between
    p = mqtt_raw.publish(topic, b"bytewise", qos=1, pid=7)
    for i, byte in enumerate(p):
        ws.send(bytes([byte]))
        if i == 3:
            ws.send(b"")
    got = {}
    for _ in range(2):
        pkt = ws.recv()
        got[pkt.type] = pkt
    assert got[mqtt_raw.PUBACK].pid == 7
    assert got[mqtt_raw.PUBLISH].payload == b"bytewise"


def test_several_packets_in_one_frame(ws_broker, raw_ws, topic):
    ws = raw_ws(ws_broker)
    ws.send(mqtt_raw.connect("batcher") +
            mqtt_raw.subscribe(1, [(topic, 1)]) +
            mqtt_raw.publish(topic, b"one", qos=1, pid=5) +
            mqtt_raw.publish(topic, b"two", qos=0) +
            mqtt_raw.pingreq())
    types = [ws.recv().type for _ in range(6)]
    assert types[:2] == [mqtt_raw.CONNACK, mqtt_raw.SUBACK]
    assert sorted(types[2:]) == sorted([mqtt_raw.PUBACK, mqtt_raw.PUBLISH,
                                        mqtt_raw.PUBLISH, mqtt_raw.PINGRESP])


@pytest.mark.parametrize("secure", [False, True])
def test_client_close_gets_a_close_reply_and_the_will(broker_factory, pki,
                                                      raw_ws, topic, secure):
    b = broker_factory(**ws_keys(pki, close_linger=5000))
    watcher = raw_ws(b)
    watcher.connect("watcher")
    watcher.subscribe([(topic, 0)])
    ws = raw_ws(b, secure)
    ws.connect("leaver", will=(topic, b"left without DISCONNECT", 0, False))
    t0 = time.monotonic()
    ws.send_frame(OP_CLOSE, struct.pack("!H", 1001) + b"going away")
    code, reason = ws.expect_close()
    assert code == 1001, "the client's code echoed"
    assert time.monotonic() - t0 < 2, "the broker closes at once, no linger"
    assert watcher.expect(mqtt_raw.PUBLISH).payload == \
        b"left without DISCONNECT"


@pytest.mark.parametrize("secure", [False, True])
def test_close_reply_ends_the_linger(broker_factory, pki, raw_ws, secure):
    """After the broker's close frame, the client's close frame completes
    the handshake: the broker closes without waiting out close_linger
    (over TLS it cannot half-close the connection first)."""
    b = broker_factory(**ws_keys(pki, close_linger=5000))
    ws = raw_ws(b, secure)
    ws.connect("twice")
    ws.send(mqtt_raw.connect("twice"))  # a protocol error: the broker closes
    with pytest.raises(Closed):
        while True:
            ws.recv()
    assert ws.close_code == 1000
    t0 = time.monotonic()
    ws.send_frame(OP_CLOSE, struct.pack("!H", 1000))
    assert ws.wait_eof(4)
    assert time.monotonic() - t0 < 2


def test_disconnect_then_close_sends_no_will(ws_broker, raw_ws, topic):
    watcher = raw_ws(ws_broker)
    watcher.connect("watcher")
    watcher.subscribe([(topic, 0)])
    ws = raw_ws(ws_broker)
    ws.connect("polite", will=(topic, b"should not", 0, False))
    ws.send(mqtt_raw.disconnect())
    ws.send_frame(OP_CLOSE, b"")
    code, _ = ws.expect_close()
    assert code in (None, 1000)
    with pytest.raises(TimeoutError):
        watcher.recv(timeout=0.5)


def test_broker_close_sends_a_close_frame(ws_broker, raw_ws):
    ws = raw_ws(ws_broker)
    ws.connect("twice")
    ws.send(mqtt_raw.connect("twice"))  # a second CONNECT: protocol error
    code, _ = ws.expect_close()
    assert code == 1000


def test_garbage_before_connect_closes_only_that_client(ws_broker, raw_ws):
    other = raw_ws(ws_broker)
    other.connect("bystander")
    ws = raw_ws(ws_broker)
    ws.send(b"\xff\xff\xff\xff\xff")
    ws.expect_close()
    other.send(mqtt_raw.pingreq())
    other.expect(mqtt_raw.PINGRESP)


# ---------------------------------------------------------------- peers

def auth_broker(broker_factory, srv, pki, **keys):
    srv.users["alice"] = User("pw")
    return broker_factory(**ws_keys(pki, auth_http_url=srv.url("/auth"),
                                    **keys))


@pytest.mark.parametrize("secure", [False, True])
def test_forwarded_for_from_a_trusted_proxy(broker_factory, raw_ws, pki,
                                            secure):
    with AuthServer() as srv:
        b = auth_broker(broker_factory, srv, pki,
                        ws_trusted_proxies="10.0.0.0/8, 127.0.0.1")
        ws = raw_ws(b, secure, headers={
            "X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"})
        assert ws.connect("proxied", username="alice",
                          password="pw").rc == 0
        f = srv.last("/auth")
        assert f["peerhost"] == "203.0.113.9"
        assert f["listener"] == ("wss" if secure else "ws")
        assert b.wait_log(r"client 'proxied' 203\.0\.113\.9:\d+ connected")


def test_forwarded_for_ignored_from_others(broker_factory, raw_ws, pki):
    with AuthServer() as srv:
        b = auth_broker(broker_factory, srv, pki,
                        ws_trusted_proxies="10.0.0.0/8")
        ws = raw_ws(b, headers={"X-Forwarded-For": "203.0.113.9"})
        assert ws.connect("direct", username="alice", password="pw").rc == 0
        f = srv.last("/auth")
        assert (f["peerhost"], f["listener"]) == ("127.0.0.1", "ws")


# ---------------------------------------------------------------- life cycle

@pytest.mark.broker(ws_port=FreePort(), connect_timeout=1)
def test_no_upgrade_within_connect_timeout(broker):
    with socket.create_connection((HOST, broker.ports["ws_port"]),
                                  timeout=5) as s:
        s.sendall(b"GET /mqtt HTTP/1.1\r\n")  # and nothing more
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(100) == b""
        assert 0.5 < time.monotonic() - t0 < 3
    assert broker.wait_log(r"no upgrade request within connect_timeout")


def test_stop_with_connections_in_their_upgrade(broker_factory, pki):
    b = broker_factory(**ws_keys(pki))
    socks = [socket.create_connection((HOST, b.ports[k]), timeout=5)
             for k in ("ws_port", "wss_port", "ws_port")]
    socks[0].sendall(b"GET /mqtt HTTP/1.1\r\n")
    time.sleep(0.2)
    b.stop()  # the fixture checks for a clean exit
    for s in socks:
        s.close()


def test_wss_port_needs_a_certificate(starling_run):
    r = starling_run("--bind", HOST, "--port", str(free_port()),
                     "--wss_port", str(free_port()))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "wss_port is set but tls_cert_file is not" in r.stdout + r.stderr


def test_ws_listener_is_logged(ws_broker):
    assert ws_broker.wait_log(r"listening for MQTT over WebSocket on "
                              r"127\.0\.0\.1:\d+")
