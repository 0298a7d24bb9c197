"""MQTT over TLS: the tls_port listener next to the plain one.

A throwaway PKI is made with the openssl CLI for the module: a CA, a server
certificate for 127.0.0.1 / localhost, a client certificate from that CA,
and a client certificate from a second CA the broker does not trust.

Covered: QoS 0/1/2 over TLS (paho with the CA), TLS and plain TCP clients
talking to each other, clients that speak plain MQTT or garbage to the TLS
port (or nothing at all) being dropped and counted while a TLS client
carries on, mutual TLS, and start-up refusing a missing key or
certificate.
"""
import socket
import ssl
import subprocess
import time
from types import SimpleNamespace

import pytest

from harness import HOST, raw as mqtt_raw
from harness.broker import FreePort
from harness.client import Client, close_all
from harness.ports import free_port

pytestmark = pytest.mark.starling_only


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=30)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, cn, ext):
    openssl("req", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
            cwd=d)
    (d / f"{name}.ext").write_text(ext + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "2",
            "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "server", "ca", "localhost",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth")
    make_cert(d, "client", "ca", "client1", "extendedKeyUsage=clientAuth")
    make_cert(d, "stranger", "otherca", "client2",
              "extendedKeyUsage=clientAuth")
    return SimpleNamespace(**{
        f"{n}_{kind}": str(d / f"{n}.{kind}")
        for n in ("ca", "server", "client", "stranger")
        for kind in ("pem", "key")})


def tls_keys(pki, **extra):
    keys = dict(tls_port=FreePort(), tls_cert_file=pki.server_pem,
                tls_key_file=pki.server_key)
    keys.update(extra)
    return keys


@pytest.fixture
def tls_broker(broker_factory, pki):
    return broker_factory(**tls_keys(pki))


def tls_endpoint(b):
    """What Client needs to connect: host and the TLS port."""
    return SimpleNamespace(host=b.host, port=b.ports["tls_port"])


@pytest.fixture
def clients():
    """Clients made by a test, closed at teardown."""
    made = []
    yield made
    close_all(made)


@pytest.fixture
def tcp_client(clients):
    """make(b) -> a Client connected to b's plain TCP port."""
    def make(b):
        c = Client(b)
        clients.append(c)
        c.connect()
        return c
    return make


@pytest.fixture
def tls_client(clients, pki):
    """make(b, protocol="311", cert=None) -> a Client connected over TLS
    (server verified against the test CA; cert = (pem, key)).

    A paho client over TLS must not publish to a topic it subscribes to:
    its network thread would then write the PUBACK while the test thread
    is still inside SSL_write on the same SSL object, which OpenSSL does
    not allow (a fast broker makes that race likely). Tests use separate
    publishers and subscribers."""
    def make(b, protocol="311", cert=None):
        c = Client(tls_endpoint(b), protocol=protocol)
        clients.append(c)
        certfile, keyfile = cert or (None, None)
        c.paho.tls_set(ca_certs=pki.ca_pem, certfile=certfile,
                       keyfile=keyfile)
        c.connect()
        return c
    return make


def tls_context(pki, cert=None):
    ctx = ssl.create_default_context(cafile=pki.ca_pem)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def read_until_closed(sock, timeout=5.0):
    """Everything the broker sends until it closes the connection; fails if
    it is still open after timeout."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"connection still open after {timeout} s " \
                         f"(got {bytes(data[:40])!r})"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return bytes(data)
        except ssl.SSLError as e:  # an alert: the broker refused
            return e
        except socket.timeout:
            continue
        if not chunk:
            return bytes(data)
        data += chunk


def sys_value(client, name, want, timeout=10.0):
    """Wait until the retained $SYS/broker/<name> equals want."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            m = client.expect_message(timeout=max(
                0.01, deadline - time.monotonic()))
        except AssertionError:
            break
        if m.topic == f"$SYS/broker/{name}":
            seen = m.payload.decode()
            if seen == want:
                return
    raise AssertionError(f"$SYS/broker/{name} is {seen!r}, want {want!r}")


# ---------------------------------------------------------------- traffic

@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", ["311", "5"])
def test_publish_subscribe_over_tls(tls_broker, tls_client, topic, qos,
                                    protocol):
    sub = tls_client(tls_broker, protocol)
    pub = tls_client(tls_broker, protocol)
    codes = sub.subscribe(topic, qos)
    assert codes == [qos]
    payloads = [f"m{i}".encode() * (i * 500 + 1) for i in range(5)]
    for p in payloads:
        pub.publish(topic, p, qos)
    got = sub.expect_messages(len(payloads))
    assert [m.payload for m in got] == payloads
    assert {m.qos for m in got} == {qos}


def test_large_message_over_tls(tls_broker, tls_client, topic):
    """More than one TLS record (16 KiB) each way."""
    sub = tls_client(tls_broker)
    pub = tls_client(tls_broker)
    sub.subscribe(topic, 1)
    payload = bytes(range(256)) * 1000  # 256 000 bytes
    pub.publish(topic, payload, 1)
    assert sub.expect_message().payload == payload


def test_slow_tls_reader_gets_everything(tls_broker, tls_client, pki,
                                        topic):
    """A TLS subscriber that does not read while 5 MB are published to it:
    the broker's writes block (WANT_WRITE) and resume, nothing is lost or
    reordered, and the reader stays connected."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(5)
    raw.connect((HOST, tls_broker.ports["tls_port"]))
    r = mqtt_raw.RawClient.over(
        tls_context(pki).wrap_socket(raw, server_hostname=HOST))
    try:
        assert r.connect("slow-reader").rc == 0
        assert r.subscribe([(topic, 0)]) == [0]
        pub = tls_client(tls_broker)
        payloads = [bytes([i]) * 50000 for i in range(100)]
        for p in payloads:
            pub.publish(topic, p, 1)
        got = [r.expect(mqtt_raw.PUBLISH, timeout=10).payload
               for _ in payloads]
        assert got == payloads
    finally:
        r.close()


def test_tls_and_tcp_clients_exchange_messages(tls_broker, tls_client,
                                               tcp_client, topic):
    tls_sub = tls_client(tls_broker)
    tcp_sub = tcp_client(tls_broker)
    tls_sub.subscribe(f"{topic}/from-tcp", 1)
    tcp_sub.subscribe(f"{topic}/from-tls", 1)
    tcp_pub = tcp_client(tls_broker)
    tls_pub = tls_client(tls_broker)
    tcp_pub.publish(f"{topic}/from-tcp", b"over tcp", 1)
    tls_pub.publish(f"{topic}/from-tls", b"over tls", 1)
    assert tls_sub.expect_message().payload == b"over tcp"
    assert tcp_sub.expect_message().payload == b"over tls"


# ---------------------------------------------------------------- bad clients

@pytest.mark.parametrize("junk", [
    mqtt_raw.connect("plain-mqtt"),
    bytes(range(256)) * 4,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["plain-mqtt", "garbage", "http"])
def test_non_tls_client_dropped_others_unaffected(tls_broker, tls_client,
                                                  topic, junk):
    sub = tls_client(tls_broker)
    pub = tls_client(tls_broker)
    sub.subscribe(topic, 1)
    mark = tls_broker.log_mark()
    with socket.create_connection(
            (HOST, tls_broker.ports["tls_port"]), timeout=5) as s:
        s.sendall(junk)
        got = read_until_closed(s)
    assert not (isinstance(got, bytes) and got[:1] == b"\x20"), \
        "the TLS port answered plain MQTT with a CONNACK"
    assert tls_broker.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed",
                               since=mark)
    pub.publish(topic, b"still here", 1)
    assert sub.expect_message().payload == b"still here"
    assert tls_broker.alive()


def test_handshake_errors_counted_in_sys(broker_factory, pki, tls_client,
                                         tcp_client):
    b = broker_factory(**tls_keys(pki, sys_interval=1))
    watcher = tcp_client(b)
    watcher.subscribe("$SYS/broker/tls/handshake_errors")
    sys_value(watcher, "tls/handshake_errors", "0")
    for _ in range(3):
        with socket.create_connection((HOST, b.ports["tls_port"]),
                                      timeout=5) as s:
            s.sendall(mqtt_raw.connect("plain"))
            read_until_closed(s)
    tls_client(b).disconnect()  # a good one does not count
    sys_value(watcher, "tls/handshake_errors", "3")


def test_silent_client_closed_at_connect_timeout(broker_factory, pki):
    b = broker_factory(**tls_keys(pki, connect_timeout=1))
    mark = b.log_mark()
    with socket.create_connection((HOST, b.ports["tls_port"]),
                                  timeout=5) as s:
        t0 = time.monotonic()
        read_until_closed(s, timeout=5)
        assert time.monotonic() - t0 >= 0.9
    assert b.wait_log("no handshake within connect_timeout", since=mark)


def test_handshake_then_no_connect_closed_at_connect_timeout(
        broker_factory, pki):
    """The deadline covers the handshake and CONNECT together."""
    b = broker_factory(**tls_keys(pki, connect_timeout=1))
    raw = socket.create_connection((HOST, b.ports["tls_port"]), timeout=5)
    with tls_context(pki).wrap_socket(raw, server_hostname=HOST) as s:
        assert read_until_closed(s, timeout=5) == b""
    assert b.wait_log("no CONNECT within connect_timeout")


def test_client_refusing_server_certificate_does_not_hurt(
        tls_broker, tls_client, pki, topic):
    """A client that does not trust the server aborts the handshake."""
    sub = tls_client(tls_broker)
    sub.subscribe(topic)
    ctx = ssl.create_default_context()  # system CAs: not ours
    raw = socket.create_connection((HOST, tls_broker.ports["tls_port"]),
                                   timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname=HOST)
    raw.close()
    pub = tls_client(tls_broker)
    pub.publish(topic, b"ok")
    assert sub.expect_message().payload == b"ok"


# ---------------------------------------------------------------- mutual TLS

def mqtt_over_tls(b, pki, cert=None):
    """CONNECT over a fresh TLS connection: the CONNACK's return code, or
    the exception / b"" that ended the connection instead."""
    raw = socket.create_connection((HOST, b.ports["tls_port"]), timeout=5)
    try:
        s = tls_context(pki, cert).wrap_socket(raw, server_hostname=HOST)
    except (ssl.SSLError, ConnectionResetError) as e:
        raw.close()
        return e
    with s:
        try:
            s.sendall(mqtt_raw.connect(f"mtls-{time.monotonic_ns()}"))
        except (ssl.SSLError, OSError) as e:
            return e
        got = read_until_closed_or_connack(s)
        return got


def read_until_closed_or_connack(s, timeout=5.0):
    deadline = time.monotonic() + timeout
    data = bytearray()
    while time.monotonic() < deadline:
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = s.recv(4096)
        except (ssl.SSLError, ConnectionResetError) as e:
            return e
        except socket.timeout:
            break
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) >= 4 and data[0] == 0x20:
            return data[3]  # CONNACK return code
    raise AssertionError(f"neither CONNACK nor close within {timeout} s: "
                         f"{bytes(data)!r}")


def test_mutual_tls_required(broker_factory, pki, tls_client, topic):
    b = broker_factory(**tls_keys(pki, tls_ca_file=pki.ca_pem,
                                  tls_require_client_cert=True))
    assert mqtt_over_tls(b, pki, (pki.client_pem, pki.client_key)) == 0
    mark = b.log_mark()
    refused = mqtt_over_tls(b, pki)
    assert not isinstance(refused, int), "CONNACK without a certificate"
    assert b.wait_log(r"TLS handshake with .* failed: peer did not return "
                      r"a certificate", since=mark)
    mark = b.log_mark()
    refused = mqtt_over_tls(b, pki, (pki.stranger_pem, pki.stranger_key))
    assert not isinstance(refused, int), "CONNACK with an untrusted cert"
    assert b.wait_log(r"TLS handshake with .* failed: certificate verify "
                      r"failed", since=mark)
    # paho with a client certificate works end to end
    cert = (pki.client_pem, pki.client_key)
    sub, pub = tls_client(b, cert=cert), tls_client(b, cert=cert)
    sub.subscribe(topic, 1)
    pub.publish(topic, b"mtls", 1)
    assert sub.expect_message().payload == b"mtls"


def test_client_cert_optional_without_require(broker_factory, pki):
    b = broker_factory(**tls_keys(pki, tls_ca_file=pki.ca_pem))
    assert mqtt_over_tls(b, pki) == 0
    assert mqtt_over_tls(b, pki, (pki.client_pem, pki.client_key)) == 0
    refused = mqtt_over_tls(b, pki, (pki.stranger_pem, pki.stranger_key))
    assert not isinstance(refused, int), "an offered cert is verified"


def test_min_version_tls13(broker_factory, pki):
    b = broker_factory(**tls_keys(pki, tls_min_version="tls1.3"))
    ctx = tls_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection((HOST, b.ports["tls_port"]), timeout=5)
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname=HOST)
    raw.close()
    ctx = tls_context(pki)
    raw = socket.create_connection((HOST, b.ports["tls_port"]), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=HOST) as s:
        assert s.version() == "TLSv1.3"


def test_tls12_client_accepted_by_default(broker_factory, pki):
    b = broker_factory(**tls_keys(pki, tls_ciphers="ECDHE+AESGCM"))
    ctx = tls_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection((HOST, b.ports["tls_port"]), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=HOST) as s:
        assert s.version() == "TLSv1.2"
        assert "GCM" in s.cipher()[0]
        s.sendall(mqtt_raw.connect("tls12"))
        assert read_until_closed_or_connack(s) == 0


# ---------------------------------------------------------------- start-up

def start_fails(starling_run, pki, *extra):
    port, tls_port = free_port(), free_port()
    r = starling_run("--bind", HOST, "--port", str(port),
                     "--tls_port", str(tls_port), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_missing_key_file_refuses_to_start(starling_run, pki, tmp_path):
    missing = tmp_path / "nope.key"
    out = start_fails(starling_run, pki, "--tls_cert_file", pki.server_pem,
                      "--tls_key_file", str(missing))
    assert f"tls_key_file '{missing}': cannot open: No such file" in out


def test_missing_cert_setting_refuses_to_start(starling_run, pki):
    out = start_fails(starling_run, pki, "--tls_key_file", pki.server_key)
    assert "tls_port is set but tls_cert_file is not" in out


def test_key_not_matching_cert_refuses_to_start(starling_run, pki):
    out = start_fails(starling_run, pki, "--tls_cert_file", pki.server_pem,
                      "--tls_key_file", pki.client_key)
    assert "does not match tls_cert_file" in out


def test_cert_file_not_pem_refuses_to_start(starling_run, pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    out = start_fails(starling_run, pki, "--tls_cert_file", str(bad),
                      "--tls_key_file", pki.server_key)
    assert f"tls_cert_file '{bad}': no usable PEM certificate" in out


def test_require_client_cert_needs_ca(starling_run, pki):
    out = start_fails(starling_run, pki, "--tls_cert_file", pki.server_pem,
                      "--tls_key_file", pki.server_key,
                      "--tls_require_client_cert", "true")
    assert "tls_require_client_cert needs tls_ca_file" in out
