"""
The paho-mqtt client wrapper of every suite: a paho client on a network
thread of its own, with blocking helpers that wait for the broker's replies
(CONNACK, SUBACK, PUBACK / PUBCOMP, messages) with timeouts.

Client waits 5 s by default (one broker on the same machine); ClusterClient
waits 10 s (a message may cross nodes and the store) and sets route probes
(payloads starting with PROBE, see harness.cluster.wait_route) apart from
the messages a test reads.
"""
import queue
import socket
import threading
import time
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import HOST

PROTOCOLS = {"31": paho.MQTTv31, "311": paho.MQTTv311, "5": paho.MQTTv5}

# paho reports v3 CONNACK codes as v5 reason names; map them back.
V3_CONNACK = {"Success": 0, "Unsupported protocol version": 1,
              "Client identifier not valid": 2, "Server unavailable": 3,
              "Bad user name or password": 4, "Not authorized": 5}

PROBE = b"__probe__"  # payload prefix of route probes


def paho_props(ptype, **values):
    """paho Properties for a packet type name ("CONNECT", "PUBLISH",
    "DISCONNECT", "SUBSCRIBE", "WILLMESSAGE"...), CamelCase values."""
    p = Properties(getattr(PacketTypes, ptype))
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Msg:
    """A received message (copied out of paho's callback)."""

    def __init__(self, m):
        self.topic = m.topic
        self.payload = bytes(m.payload)
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.dup = bool(m.dup)
        self.mid = m.mid
        self.properties = getattr(m, "properties", None)

    def __repr__(self):
        return (f"<Msg {self.topic!r} {self.payload[:40]!r} qos={self.qos}"
                f"{' retain' if self.retain else ''}"
                f"{' dup' if self.dup else ''}>")


class Client:
    """A paho client for the broker `on`: a port number, or anything with
    .port (and .host; 127.0.0.1 when it has none). connect() may be called
    again after a disconnection, to the same port or another one. With
    reconnect, the network thread itself connects again (after a second)
    whenever the connection drops, until disconnect() or close().

    .connects holds session_present of every accepted CONNACK,
    .disconnects counts the connections lost or closed. transport=
    "websockets" speaks MQTT over WebSocket (paho's ws_set_options() sets
    the path)."""

    TIMEOUT = 5.0  # default of every wait, in seconds
    RECONNECT_DELAY = 1.0
    _n = 0

    def __init__(self, on, client_id=None, protocol="311",
                 clean_session=True, manual_ack=False, reconnect=False,
                 transport="tcp"):
        Client._n += 1
        if client_id is None:
            client_id = f"t{Client._n}-{uuid.uuid4().hex[:10]}"
        self.client_id = client_id
        self.host = getattr(on, "host", HOST)
        self.port = on if isinstance(on, int) else on.port
        self.protocol = protocol
        self.reconnect = reconnect
        kw = {}
        if protocol != "5":
            kw["clean_session"] = clean_session
        self.paho = paho.Client(CallbackAPIVersion.VERSION2,
                                client_id=client_id,
                                protocol=PROTOCOLS[protocol],
                                reconnect_on_failure=False,
                                manual_ack=manual_ack, transport=transport,
                                **kw)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.connects = []
        self.disconnects = 0
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self.session_present = None
        self.connack_props = None
        self._acks = {}  # (kind, mid) -> result
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._closing = False
        self._thread = None
        p = self.paho
        p.on_connect = self._on_connect
        p.on_disconnect = self._on_disconnect
        p.on_message = self._on_message
        p.on_subscribe = self._on_subscribe
        p.on_unsubscribe = self._on_unsubscribe
        p.on_publish = self._on_publish

    # ------------------------------------------------ network thread

    def _on_connect(self, c, u, flags, reason, props):
        rc = reason.value if self.protocol == "5" else V3_CONNACK.get(
            reason.getName(), reason.value)
        sp = bool(flags.session_present)
        with self._cond:
            if not reason.is_failure:
                self.connects.append(sp)
                self.disconnected.clear()
            self._cond.notify_all()
        self.connacks.put((rc, sp, props))

    def _on_disconnect(self, c, u, flags, reason, props):
        with self._cond:
            self.disconnect_reason = reason
            self.disconnects += 1
            self.disconnected.set()
            self._cond.notify_all()

    def _on_message(self, c, u, m):
        self.messages.put(Msg(m))

    def _ack(self, kind, mid, result):
        with self._cond:
            self._acks[(kind, mid)] = result
            self._cond.notify_all()

    def _on_subscribe(self, c, u, mid, codes, props):
        self._ack("sub", mid, [rc.value for rc in codes])

    def _on_unsubscribe(self, c, u, mid, codes, props):
        self._ack("unsub", mid, codes)

    def _on_publish(self, c, u, mid, reason, props):
        self._ack("pub", mid, reason)

    def _run(self):
        while not self._stop.is_set():
            rc = self.paho.loop(timeout=0.05)
            if rc == paho.MQTT_ERR_SUCCESS:
                continue
            if not (self.reconnect and self.connects and not self._closing):
                self._stop.wait(0.05)  # not connected: nothing to poll
                continue
            if self._stop.wait(self.RECONNECT_DELAY):
                return
            try:
                self.paho.reconnect()
            except OSError:
                pass  # the broker is not back yet: try again later

    def _wait_ack(self, kind, mid, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while (kind, mid) not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.client_id}: no {kind} ack "
                                       f"for mid {mid} within {timeout} s")
                self._cond.wait(left)
            return self._acks.pop((kind, mid))

    # ------------------------------------------------ test thread

    def _timeout(self, timeout):
        return self.TIMEOUT if timeout is None else timeout

    def will_set(self, topic, payload, qos=0, retain=False, delay=None):
        """The will; `delay`: its v5 Will Delay Interval in seconds."""
        props = None
        if delay is not None:
            props = paho_props("WILLMESSAGE", WillDelayInterval=delay)
        self.paho.will_set(topic, payload, qos, retain, properties=props)

    def connect(self, keepalive=60, timeout=None, expect_rc=0, port=None,
                expiry=None, clean_start=True, **kw):
        """Connect (to `port`, default the last one) and wait for the
        CONNACK; returns (rc, session_present). Asserts the return code
        when expect_rc is not None. v5: `clean_start` is the Clean Start
        flag, `expiry` the Session Expiry Interval; `kw` go to paho's
        connect() (properties=...)."""
        timeout = self._timeout(timeout)
        self.port = port or self.port
        if self.protocol == "5":
            kw.setdefault("clean_start", clean_start)
            if expiry is not None:
                kw.setdefault("properties", paho_props(
                    "CONNECT", SessionExpiryInterval=expiry))
        self.disconnected.clear()
        self._closing = False
        self.paho.connect(self.host, self.port, keepalive=keepalive, **kw)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"paho-{self.client_id}")
            self._thread.start()
        try:
            rc, sp, self.connack_props = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no CONNACK for {self.client_id} on port "
                               f"{self.port}") from None
        if expect_rc is not None:
            assert rc == expect_rc, f"CONNACK {rc}, expected {expect_rc}"
        self.session_present = sp
        return rc, sp

    def subscribe(self, topic, qos=0, timeout=None, **kw):
        """SUBSCRIBE (topic may be a list of (filter, qos)); returns the
        SUBACK codes."""
        if isinstance(topic, str):
            rc, mid = self.paho.subscribe(topic, qos, **kw)
        else:
            rc, mid = self.paho.subscribe(topic, **kw)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe: {rc}"
        return self._wait_ack("sub", mid, self._timeout(timeout))

    def unsubscribe(self, topic, timeout=None):
        """UNSUBSCRIBE; returns the UNSUBACK's reason codes."""
        rc, mid = self.paho.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS, f"unsubscribe: {rc}"
        return self._wait_ack("unsub", mid, self._timeout(timeout))

    def publish(self, topic, payload=b"", qos=0, retain=False, wait=True,
                timeout=None, **kw):
        """PUBLISH; with wait, block until the QoS flow completes (PUBACK /
        PUBCOMP; for QoS 0, until the packet is written). Returns paho's
        message info."""
        info = self.paho.publish(topic, payload, qos, retain, **kw)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish: {info.rc}"
        if wait:
            self._wait_ack("pub", info.mid, self._timeout(timeout))
        return info

    def ack(self, mid, qos):
        """Acknowledge a message by hand (a client made with manual_ack)."""
        self.paho.ack(mid, qos)

    def next_message(self, timeout=None):
        """The next message received within `timeout`, else None."""
        try:
            return self.messages.get(timeout=self._timeout(timeout))
        except queue.Empty:
            return None

    def expect_message(self, timeout=None):
        """The next message; AssertionError if none comes in time."""
        timeout = self._timeout(timeout)
        m = self.next_message(timeout)
        if m is None:
            raise AssertionError(f"{self.client_id} on :{self.port}: no "
                                 f"message within {timeout} s")
        return m

    def expect_messages(self, n, timeout=None):
        """The next n messages, all within `timeout`."""
        timeout = self._timeout(timeout)
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            m = self.next_message(max(deadline - time.monotonic(), 0.001))
            if m is None:
                raise AssertionError(
                    f"{self.client_id} on :{self.port}: got {len(out)} of "
                    f"{n} messages within {timeout} s: {out!r}")
            out.append(m)
        return out

    def expect_no_message(self, timeout=0.5):
        """No message arrives for `timeout` seconds."""
        m = self.next_message(timeout)
        if m is not None:
            raise AssertionError(
                f"{self.client_id}: unexpected message {m!r}")

    def drain(self):
        """The messages received so far and not read yet."""
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait_for(self, pred, timeout, what):
        """Wait until pred(self) is true; it is looked at whenever a
        CONNACK, an acknowledgement or a disconnection comes in.
        AssertionError naming `what` after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: pred(self), timeout):
                raise AssertionError(f"{self.client_id}: timed out after "
                                     f"{timeout} s waiting for {what}")

    def wait_disconnected(self, timeout=None):
        """Wait until the connection is closed; False if it is still open
        after `timeout`."""
        return self.disconnected.wait(self._timeout(timeout))

    def disconnect(self, timeout=None):
        """Clean DISCONNECT, wait for the link to close, stop the thread."""
        self._closing = True
        if self._thread is not None and not self.disconnected.is_set():
            self.paho.disconnect()
            self.disconnected.wait(self._timeout(timeout))
        self._halt()

    def abort(self):
        """Close the TCP connection without DISCONNECT."""
        self._halt()
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _halt(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self):
        """Teardown: stop the thread and drop the socket."""
        self._halt()
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class ClusterClient(Client):
    """A Client for a cluster: waits of 10 s, and messages whose payload
    starts with PROBE go to .probes instead of .messages."""

    TIMEOUT = 10.0

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.probes = queue.Queue()

    def _on_message(self, c, u, m):
        msg = Msg(m)
        (self.probes if msg.payload.startswith(PROBE)
         else self.messages).put(msg)


def close_all(clients):
    """Teardown of a test's clients: stop every network thread at once,
    then close each."""
    for c in clients:
        c._stop.set()
    for c in clients:
        c.close()


class ClientSet:
    """The clients a test makes through a fixture; close() at teardown."""

    def __init__(self, cls=Client):
        self.cls = cls
        self.made = []

    def make(self, on, client_id=None, protocol="311", clean_session=True,
             connect=True, keepalive=60, will=None, expiry=None,
             clean_start=True, **kw):
        """A client of `on` (see Client; `kw` go to its constructor), with
        `will` = (topic, payload, qos, retain) set; with connect, connected
        with CONNACK 0 asserted."""
        c = self.cls(on, client_id, protocol, clean_session, **kw)
        self.made.append(c)
        if will is not None:
            c.will_set(*will)
        if connect:
            c.connect(keepalive=keepalive, expiry=expiry,
                      clean_start=clean_start)
        return c

    def close(self):
        close_all(self.made)


def persistent(make, client_id, protocol, fresh=False, expiry=300, **kw):
    """A client with a persistent session, made by a client_factory
    fixture's make (kw: further arguments of make, e.g. on=node): MQTT 3
    with Clean Session 0; MQTT 5 with Session Expiry Interval `expiry` and
    Clean Start `fresh`. Connected, CONNACK 0 asserted, unless kw says
    connect=False."""
    if protocol == "5":
        return make(client_id=client_id, protocol="5", expiry=expiry,
                    clean_start=fresh, **kw)
    return make(client_id=client_id, protocol=protocol, clean_session=False,
                **kw)


def payloads(msgs):
    """The payloads of a list of messages."""
    return [m.payload for m in msgs]


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
