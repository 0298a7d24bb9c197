"""CONNECT handling: protocol versions, client ids, return codes, limits."""
import re

import pytest

from harness import raw


def test_connect_each_v3_protocol(client_factory, v3):
    c = client_factory(protocol=v3, connect=False)
    rc, sp = c.connect()
    assert rc == 0
    assert sp is False


@pytest.mark.parametrize("level", [raw.V31, raw.V311])
def test_raw_connack_accepted(raw_factory, level):
    r = raw_factory()
    ack = r.connect("raw-ok", level=level)
    assert ack.rc == 0
    assert ack.body == b"\x00\x00"  # session present 0, rc 0


def test_zero_length_clientid_clean_session_accepted(raw_factory):
    r = raw_factory()
    ack = r.connect("", clean=True)
    assert ack.rc == 0
    assert not ack.session_present
    # The connection is usable: PINGREQ answered.
    r.send(raw.pingreq())
    r.expect(raw.PINGRESP)


def test_zero_length_clientid_paho(client_factory, topic):
    c = client_factory(client_id="", connect=False)
    assert c.connect() == (0, False)
    assert c.subscribe(topic, 1) == [1]
    c.publish(topic, b"self", qos=1)
    assert c.expect_message().payload == b"self"


def test_zero_length_clientid_persistent_refused(raw_factory):
    r = raw_factory()
    ack = r.connect("", clean=False)
    assert ack.rc == 2  # identifier rejected
    assert not ack.session_present
    assert r.wait_closed(5)


@pytest.mark.broker(allow_zero_length_clientid=False)
def test_zero_length_clientid_disabled(raw_factory):
    r = raw_factory()
    ack = r.connect("", clean=True)
    assert ack.rc == 2
    assert r.wait_closed(5)
    # A named client is still welcome.
    assert raw_factory().connect("named").rc == 0


@pytest.mark.parametrize("level", [2, 6, 7])
def test_unsupported_protocol_level(raw_factory, level):
    r = raw_factory()
    r.send(raw.connect("badlevel", level=level, proto_name="MQTT"))
    pkt = r.recv()
    assert pkt.type == raw.CONNACK
    assert pkt.rc == 1  # unacceptable protocol version
    assert r.wait_closed(5)


def test_session_present_flag(raw_factory):
    cid = "sp-check"
    r = raw_factory()
    assert r.connect(cid, clean=False).session_present is False
    r.send(raw.disconnect())
    assert r.wait_closed(5)
    r = raw_factory()
    assert r.connect(cid, clean=False).session_present is True
    r.send(raw.disconnect())
    assert r.wait_closed(5)
    # clean session: never present, and the old session is gone afterwards.
    r = raw_factory()
    assert r.connect(cid, clean=True).session_present is False
    r.send(raw.disconnect())
    assert r.wait_closed(5)
    r = raw_factory()
    assert r.connect(cid, clean=False).session_present is False


def test_long_clientid_v311(raw_factory):
    """3.1.1 servers may accept ids longer than 23 bytes; both do."""
    r = raw_factory()
    ack = r.connect("x" * 60, level=raw.V311)
    assert ack.rc == 0


def test_disconnect_closes_connection(raw_factory):
    r = raw_factory()
    assert r.connect("bye").rc == 0
    r.send(raw.disconnect())
    assert r.wait_closed(5)


@pytest.mark.starling_only  # mosquitto 2.0.11 miscounts closed connections
@pytest.mark.broker(max_connections=2)
def test_max_connections(raw_factory):
    def admitted(cid):
        # The broker's readiness probe may briefly hold a slot: retry.
        for _ in range(50):
            r = raw_factory()
            try:
                if r.connect(cid).rc == 0:
                    return r
            except (raw.Closed, ConnectionResetError, BrokenPipeError):
                pass
            r.close()
        pytest.fail(f"{cid} never admitted")

    a = admitted("mc-a")
    b = admitted("mc-b")
    c = raw_factory()
    try:
        c.send(raw.connect("mc-c"))
        pkt = c.recv(5)
    except raw.Closed:
        pkt = None  # refused without a CONNACK
    except (ConnectionResetError, BrokenPipeError):
        pkt = None
    if pkt is not None:
        assert pkt.type == raw.CONNACK and pkt.rc != 0
    assert c.wait_closed(5)
    # Existing clients are unaffected; a slot frees up when one leaves.
    a.send(raw.pingreq())
    a.expect(raw.PINGRESP)
    b.send(raw.disconnect())
    assert b.wait_closed(5)
    admitted("mc-d")  # the broker notices b's close asynchronously


@pytest.mark.starling_only
def test_connect_logged_with_id_and_address(broker, raw_factory):
    r = raw_factory()
    assert r.connect("log-me-please").rc == 0
    addr = re.escape(f"127.0.0.1:{r.local_port}")
    assert broker.wait_log(rf"log-me-please.*{addr}|{addr}.*log-me-please")
