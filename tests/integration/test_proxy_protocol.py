"""PROXY protocol (v1 and v2) on the listeners named by proxy_protocol: the
address the header carries is the client's in the log and in the auth
request; a connection without a valid header, or without one in time, is
closed before MQTT starts; a LOCAL header keeps the connection's own
address; a listener not named takes no header."""
import socket
import struct

import pytest

from auth_server import AuthServer, User
from harness import HOST, raw as mqtt_raw
from harness.broker import starling_help, starling_bin

pytestmark = pytest.mark.starling_only

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport, dst=None, dport=1883):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("2001:db8::1" if fam == "TCP6" else "192.0.2.1")
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src, sport, dst="192.0.2.1", dport=1883, local=False):
    addrs = (socket.inet_pton(socket.AF_INET, src) +
             socket.inet_pton(socket.AF_INET, dst) +
             struct.pack("!HH", sport, dport))
    tlv = b"\x04\x00\x03abc"  # a TLV to skip (PP2_TYPE_NOOP)
    body = addrs + tlv
    return V2_SIG + bytes([0x20 if local else 0x21, 0x11]) + \
        struct.pack("!H", len(body)) + body


def closed_without_reply(sock):
    """The broker closed the connection (EOF or a reset: the header's
    bytes were left unread) without a byte of MQTT."""
    try:
        data = sock.recv(100)
    except ConnectionResetError:
        data = b""
    sock.close()
    return data == b""


@pytest.fixture
def srv():
    with AuthServer() as s:
        yield s


@pytest.fixture
def start(broker_factory):
    if "proxy_protocol" not in starling_help(starling_bin()):
        pytest.skip("this build has no proxy_protocol")
    return broker_factory


def mqtt_over(broker, header, client_id, **kw):
    """A raw MQTT client on a socket that first sends `header`."""
    sock = socket.create_connection((HOST, broker.port), timeout=5)
    sock.sendall(header)
    r = mqtt_raw.RawClient.over(sock)
    return r, r.connect(client_id, **kw)


@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
def test_proxy_header_gives_the_client_address(start, srv, make):
    srv.users["u"] = User("pw")
    b = start(proxy_protocol="tcp", auth_http_url=srv.url("/auth"))
    mark = b.log_mark()
    r, ack = mqtt_over(b, make("203.0.113.77", 40123), "behind-lb",
                       username="u", password="pw")
    assert ack.rc == 0
    req = srv.last("/auth")
    assert req["peerhost"] == "203.0.113.77"
    assert int(req["peerport"]) == 40123
    assert b.wait_log(r"client 'behind-lb' 203\.0\.113\.77:40123 connected",
                      5, since=mark)
    # MQTT goes on over the same connection after the header.
    assert r.subscribe([("lb/t", 1)]) == [1]


def test_proxy_v6_and_local(start):
    b = start(proxy_protocol="tcp")
    mark = b.log_mark()
    r, ack = mqtt_over(b, v1("2001:db8::5", 7000), "v6-client")
    assert ack.rc == 0
    assert b.wait_log(r"client 'v6-client' \[2001:db8::5\]:7000 connected",
                      5, since=mark)
    # LOCAL (the balancer's own health check): the socket's own address.
    r2, ack2 = mqtt_over(b, v2("203.0.113.9", 1, local=True), "local-hc")
    assert ack2.rc == 0
    assert b.wait_log(r"client 'local-hc' 127\.0\.0\.1:\d+ connected", 5,
                      since=mark)


@pytest.mark.parametrize("first", [
    mqtt_raw.connect("no-header"),
    b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 1883\r\n",
    V2_SIG + b"\x22\x11\x00\x0c" + bytes(12),
], ids=["plain-mqtt", "bad-port", "bad-command"])
def test_listener_expecting_proxy_refuses_without_valid_header(start, first):
    b = start(proxy_protocol="tcp")
    mark = b.log_mark()
    sock = socket.create_connection((HOST, b.port), timeout=5)
    sock.sendall(first)
    assert closed_without_reply(sock), "no CONNACK: the connection closes"
    assert b.wait_log(r"invalid PROXY header, closing", 5, since=mark)
    # Others are not affected.
    r, ack = mqtt_over(b, v1("198.51.100.2", 5000), "after-bad")
    assert ack.rc == 0


def test_no_header_in_time_is_closed(start):
    b = start(proxy_protocol="tcp", connect_timeout=1)
    mark = b.log_mark()
    sock = socket.create_connection((HOST, b.port), timeout=5)
    sock.sendall(b"PROXY TCP4 ")  # a beginning, never finished
    assert closed_without_reply(sock)
    assert b.wait_log(r"no PROXY header within connect_timeout", 5,
                      since=mark)


def test_listener_not_named_takes_no_header(start):
    """proxy_protocol names only tls: the plain listener speaks MQTT at
    once, and a PROXY header there is not MQTT."""
    b = start(proxy_protocol="tls")
    r = mqtt_raw.RawClient(HOST, b.port)
    assert r.connect("plain").rc == 0
    sock = socket.create_connection((HOST, b.port), timeout=5)
    sock.sendall(v1("203.0.113.7", 1))
    assert closed_without_reply(sock)
