"""
Authentication and authorization through an external HTTP endpoint
(auth_http_url, acl_http_url; EMQX 5 contract), password_file and acl_file
(Mosquitto formats), the failure policy, the decision cache and webhooks,
against a scriptable endpoint (auth_server.py) and paho clients.

Skipped when the broker under test does not enforce authentication: its
--help lacks auth_http_url, or an anonymous client is let in although
allow_anonymous is false.
"""
import shutil
import subprocess
import time
import uuid

import pytest

from auth_server import AuthServer, Reply, User
from harness.broker import starling_bin, starling_help
from harness.client import Client, close_all

pytestmark = pytest.mark.starling_only

V3_NOT_AUTHORIZED = 5
V5_BAD_USER_OR_PASSWORD = 0x86
V5_NOT_AUTHORIZED = 0x87
SUBACK_FAILURE = 0x80

_wired = {}


@pytest.fixture
def srv():
    with AuthServer() as s:
        yield s


def auth_enforced(broker_factory):
    """Does this build apply auth at CONNECT? (checked once)"""
    if "wired" not in _wired:
        if "auth_http_url" not in starling_help(starling_bin()):
            _wired["wired"] = False
        else:
            b = broker_factory(allow_anonymous=False)
            c = Client(b)
            try:
                rc, _ = c.connect(expect_rc=None)
            except (TimeoutError, OSError):
                rc = -1
            finally:
                c.close()
            _wired["wired"] = rc != 0
    return _wired["wired"]


@pytest.fixture
def start(broker_factory):
    """start(**keys) -> a broker with auth keys (skips if auth is not
    wired into the broker)."""
    def go(**keys):
        if not auth_enforced(broker_factory):
            pytest.skip("this broker does not enforce authentication")
        return broker_factory(**keys)
    return go


@pytest.fixture
def clients():
    made = []

    def make(broker, user=None, password=None, protocol="311",
             client_id=None, expect_rc=0):
        c = Client(broker, client_id=client_id, protocol=protocol)
        made.append(c)
        if user is not None:
            c.paho.username_pw_set(user, password)
        rc, _ = c.connect(expect_rc=expect_rc)
        c.rc = rc
        return c

    yield make
    close_all(made)


def connack(clients, broker, user, password, protocol="311"):
    """The CONNACK code for these credentials (None: no CONNACK)."""
    try:
        return clients(broker, user, password, protocol, expect_rc=None).rc
    except TimeoutError:
        return None


def refused(rc, protocol):
    if protocol == "5":
        return rc in (V5_BAD_USER_OR_PASSWORD, V5_NOT_AUTHORIZED)
    return rc == V3_NOT_AUTHORIZED


def puback_reason(c, topic, qos=1):
    info = c.publish(topic, b"x", qos=qos, wait=False)
    reason = c._wait_ack("pub", info.mid, 5.0)
    return getattr(reason, "value", reason)


def uniq(prefix):
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- connect


@pytest.mark.parametrize("protocol", ["311", "5"])
def test_auth_http_allow_sends_the_contract(start, srv, clients, protocol):
    srv.users["alice"] = User("s3cret")
    b = start(auth_http_url=srv.url("/auth"))
    c = clients(b, "alice", "s3cret", protocol, client_id="cid-alice")
    assert c.rc == 0
    f = srv.last("/auth")
    assert f["clientid"] == "cid-alice"
    assert f["username"] == "alice"
    assert f["password"] == "s3cret"
    assert f["peerhost"] == "127.0.0.1"
    assert int(f["proto_ver"]) == (5 if protocol == "5" else 4)
    assert f["_headers"].get("Content-Type") == "application/json"


@pytest.mark.parametrize("protocol", ["31", "311", "5"])
def test_auth_http_deny(start, srv, clients, protocol):
    srv.users["alice"] = User("s3cret")
    b = start(auth_http_url=srv.url("/auth"))
    rc = connack(clients, b, "alice", "wrong", protocol)
    assert refused(rc, protocol), rc
    srv.auth_replies["bob"] = Reply.deny()
    assert refused(connack(clients, b, "bob", "x", protocol), protocol)


def test_auth_http_204_allows(start, srv, clients):
    srv.auth_replies["n"] = Reply.no_content()
    b = start(auth_http_url=srv.url("/auth"))
    assert connack(clients, b, "n", "x") == 0


def test_auth_http_get_method(start, srv, clients):
    srv.users["alice"] = User("pw")
    b = start(auth_http_url=srv.url("/auth"), auth_http_method="get",
              auth_http_headers="Authorization: Bearer t0k")
    assert connack(clients, b, "alice", "pw") == 0
    assert srv.last("/auth")["_headers"]["Authorization"] == "Bearer t0k"


def test_auth_ignore_falls_through_to_anonymous(start, srv, clients):
    srv.auth_replies["who"] = Reply.ignore()
    b = start(auth_http_url=srv.url("/auth"))
    assert connack(clients, b, "who", "x") == V3_NOT_AUTHORIZED, \
        "everyone ignored, allow_anonymous is false with auth_http_url"
    b2 = start(auth_http_url=srv.url("/auth"), allow_anonymous=True)
    assert connack(clients, b2, "who", "x") == 0


def test_auth_http_500_is_ignore_then_refused(start, srv, clients):
    srv.auth_replies["alice"] = Reply.status_only(500)
    b = start(auth_http_url=srv.url("/auth"))
    assert connack(clients, b, "alice", "x") == V3_NOT_AUTHORIZED
    assert srv.count("/auth", username="alice") == 1


def test_auth_password_file_then_http(start, srv, clients, tmp_path):
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "filer",
                    "filepw"], check=True)
    srv.users["webby"] = User("webpw")
    b = start(password_file=str(pw), auth_http_url=srv.url("/auth"))
    assert connack(clients, b, "filer", "filepw") == 0
    assert srv.count("/auth") == 0, "the file decided"
    assert connack(clients, b, "filer", "nope") == V3_NOT_AUTHORIZED
    assert srv.count("/auth") == 0, "a wrong password in the file is final"
    assert connack(clients, b, "webby", "webpw") == 0, "file ignores: HTTP"
    assert srv.count("/auth", username="webby") == 1


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("policy,want", [("deny", V3_NOT_AUTHORIZED),
                                         ("allow", 0)])
def test_auth_timeout_applies_policy(start, srv, clients, policy, want):
    srv.auth_replies["slow"] = Reply.allow(delay=2.0)
    b = start(auth_http_url=srv.url("/auth"), auth_http_timeout=300,
              auth_failure_policy=policy)
    t0 = time.monotonic()
    assert connack(clients, b, "slow", "x") == want
    assert time.monotonic() - t0 < 1.8, "answered at the timeout"
    assert b.wait_log(r"(?i)auth.*timed out", 3)


@pytest.mark.parametrize("policy,want", [("deny", V3_NOT_AUTHORIZED),
                                         ("allow", 0)])
def test_auth_endpoint_down_applies_policy(start, clients, policy, want):
    with AuthServer() as gone:
        url = gone.url("/auth")
    b = start(auth_http_url=url, auth_failure_policy=policy)
    assert connack(clients, b, "alice", "x") == want


def test_auth_garbage_applies_policy(start, srv, clients):
    srv.auth_replies["g"] = Reply.garbage()
    b = start(auth_http_url=srv.url("/auth"))
    assert connack(clients, b, "g", "x") == V3_NOT_AUTHORIZED
    b2 = start(auth_http_url=srv.url("/auth"), auth_failure_policy="allow")
    assert connack(clients, b2, "g", "x") == 0


def test_auth_password_never_logged(start, srv, clients):
    secret = "pw-" + uuid.uuid4().hex
    srv.users["alice"] = User(secret)
    srv.auth_replies["slow"] = Reply.allow(delay=1.0)
    srv.auth_replies["g"] = Reply.garbage()
    b = start(auth_http_url=srv.url("/auth"), auth_http_timeout=200,
              log_level="debug")
    connack(clients, b, "alice", secret)
    connack(clients, b, "alice", secret + "x")
    connack(clients, b, "slow", secret)
    connack(clients, b, "g", secret)
    assert b.wait_log(r"(?i)auth.*(timed out|unusable)", 3)
    assert secret not in b.log_text()


# ---------------------------------------------------------------- superuser


def test_auth_superuser_skips_acl(start, srv, clients):
    srv.users["root"] = User("pw", superuser=True)
    srv.acl_default = Reply.deny()
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"))
    c = clients(b, "root", "pw", "5")
    assert c.subscribe("#", 1) == [1]
    assert puback_reason(c, uniq("any")) in (0, 0x10)
    assert srv.count("/acl") == 0


# ---------------------------------------------------------------- ACL


def test_acl_http_publish_v5(start, srv, clients):
    srv.users["u"] = User("pw")
    srv.acl_rules += [("publish", "ok/#", "allow"),
                      ("publish", "no/#", "deny")]
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"))
    c = clients(b, "u", "pw", "5")
    assert puback_reason(c, "ok/1") in (0, 0x10)
    assert puback_reason(c, "no/1") == V5_NOT_AUTHORIZED
    f = srv.last("/acl")
    assert f["action"] == "publish" and f["topic"] == "no/1"
    assert f["username"] == "u" and int(f["qos"]) == 1


@pytest.mark.parametrize("protocol,denied", [("311", SUBACK_FAILURE),
                                             ("5", V5_NOT_AUTHORIZED)])
def test_acl_http_subscribe(start, srv, clients, protocol, denied):
    srv.users["u"] = User("pw")
    srv.acl_rules += [("subscribe", "sensors/#", "allow")]
    srv.acl_default = Reply.deny()
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"))
    c = clients(b, "u", "pw", protocol)
    assert c.subscribe("sensors/+/temp", 1) == [1]
    assert c.subscribe("other/x", 1) == [denied]


def test_acl_rules_from_connect_with_wildcards(start, srv, clients):
    srv.users["dev"] = User("pw", acl=[
        {"permission": "allow", "action": "publish",
         "topic": "devices/${clientid}/#"},
        {"permission": "allow", "action": "subscribe", "topic": "cmd/#"},
        {"permission": "deny", "action": "all", "topic": "#"}])
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"))
    c = clients(b, "dev", "pw", "5", client_id="d1")
    assert puback_reason(c, "devices/d1/up") in (0, 0x10)
    assert puback_reason(c, "devices/d2/up") == V5_NOT_AUTHORIZED
    assert c.subscribe("cmd/+/x", 1) == [1]
    assert c.subscribe("#", 1) == [V5_NOT_AUTHORIZED]
    assert srv.count("/acl") == 0, "the CONNECT rules decided everything"


def test_acl_denied_v3_publish_is_acked_and_dropped(start, srv, clients):
    srv.users["pub"] = User("pw", acl=[
        {"permission": "deny", "action": "publish", "topic": "secret/#"},
        {"permission": "allow", "action": "all", "topic": "#"}])
    b = start(auth_http_url=srv.url("/auth"))
    sub = clients(b, "pub", "pw", "311")
    assert sub.subscribe("#", 1) == [1]
    pub = clients(b, "pub", "pw", "311")
    pub.publish("secret/x", b"no", qos=1)  # PUBACK arrives
    pub.publish("public/x", b"yes", qos=1)
    m = sub.expect_message()
    assert m.topic == "public/x"
    sub.expect_no_message(0.5)


def test_acl_denied_v3_publish_disconnects_when_asked(start, srv, clients):
    srv.users["pub"] = User("pw", acl=[
        {"permission": "deny", "action": "publish", "topic": "secret/#"}])
    b = start(auth_http_url=srv.url("/auth"),
              acl_deny_action_v3="disconnect")
    pub = clients(b, "pub", "pw", "311")
    pub.paho.publish("secret/x", b"no", qos=1)  # rc races the close
    assert pub.wait_disconnected(5)


def test_acl_cache_hit(start, srv, clients):
    srv.users["u"] = User("pw")
    srv.acl_rules += [("all", "#", "allow")]
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"))
    c = clients(b, "u", "pw", "5")
    topic = uniq("cache")
    for _ in range(3):
        assert puback_reason(c, topic) in (0, 0x10)
    assert srv.count("/acl", topic=topic) == 1


@pytest.mark.parametrize("protocol,denied", [("311", SUBACK_FAILURE),
                                             ("5", V5_NOT_AUTHORIZED)])
def test_acl_http_without_cache_asks_once_per_topic(start, srv, clients,
                                                    protocol, denied):
    """auth_cache_ttl 0 (no cache): every filter of a SUBSCRIBE and the
    topic of a PUBLISH are asked about exactly once, one SUBACK answers
    the packet, and input goes on after the answers."""
    srv.users["u"] = User("pw")
    ok, no = uniq("ok"), uniq("no")
    srv.acl_rules += [("all", ok, "allow")]
    srv.acl_default = Reply.deny()
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"),
              auth_cache_ttl=0)
    c = clients(b, "u", "pw", protocol)
    assert c.subscribe(ok, 1) == [1]
    assert c.subscribe([(ok, 1), (no, 1)]) == [1, denied]
    c.publish(ok, b"x", qos=1)
    assert c.expect_message().topic == ok
    assert srv.count("/acl", action="subscribe", topic=ok) == 2
    assert srv.count("/acl", action="subscribe", topic=no) == 1
    assert srv.count("/acl", action="publish", topic=ok) == 1
    c.expect_no_message(0.3)
    assert srv.count("/acl") == 4, "asked again after the answers"


def test_acl_timeout_applies_policy(start, srv, clients):
    srv.users["u"] = User("pw")
    srv.acl_replies["slow/x"] = Reply.allow(delay=2.0)
    b = start(auth_http_url=srv.url("/auth"), acl_http_url=srv.url("/acl"),
              auth_http_timeout=300)
    c = clients(b, "u", "pw", "5")
    assert puback_reason(c, "slow/x") == V5_NOT_AUTHORIZED


def test_acl_file_and_password_file(start, clients, tmp_path):
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "a"],
                   check=True)
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n"
                   "pattern read in/%u/#\n")
    b = start(password_file=str(pw), acl_file=str(acl))
    assert refused(connack(clients, b, None, None, "5"), "5"), \
        "anonymous refused: allow_anonymous auto is false"
    c = clients(b, "alice", "a", "5")
    assert c.subscribe("alice/+", 1) == [1]
    assert c.subscribe("in/alice/#", 0) == [0]
    assert c.subscribe("in/bob/#", 0) == [V5_NOT_AUTHORIZED]
    assert puback_reason(c, "alice/x") in (0, 0x10)
    assert puback_reason(c, "bob/x") == V5_NOT_AUTHORIZED


# ---------------------------------------------------------------- webhooks


def test_webhook_events(start, srv, clients):
    srv.users["u"] = User("pw")
    srv.hook_statuses = [500]  # the first POST fails and is retried
    b = start(auth_http_url=srv.url("/auth"), webhook_url=srv.url("/hook"),
              webhook_topics="hooked/#")
    c = clients(b, "u", "pw", "311", client_id="hooky")
    assert c.subscribe("hooked/#", 0) == [0]
    c.publish("hooked/1", b"payload", qos=1)
    c.publish("unhooked/1", b"payload", qos=1)
    got = srv.wait_events(1, timeout=5, event="message.publish")
    assert got and got[0]["topic"] == "hooked/1"
    assert got[0]["payload"] == "payload"
    assert srv.wait_events(1, timeout=5, event="client.connected",
                           clientid="hooky")
    assert srv.wait_events(1, timeout=5, event="session.subscribed")
    c.disconnect()
    assert srv.wait_events(1, timeout=5, event="client.disconnected")
    assert not srv.wait_events(1, timeout=0.5, topic="unhooked/1")
