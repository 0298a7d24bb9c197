"""
Fixtures for the black-box suite: a broker process per test on a free
loopback port, its log captured to a file, paho-mqtt clients whose helpers
wait on events with timeouts, and raw-socket clients for hand-made bytes.
What they hand out lives in tests/harness.

The broker under test is Starling (STARLING_BIN, default build/starling).
STARLING_TEST_BROKER=mosquitto (or --broker mosquitto) runs the same tests
against Mosquitto with an equivalent generated config, to check the tests
themselves; tests marked starling_only, that need a key Mosquitto has no
equivalent for, or that use a store backend, are skipped then.

For the store backends: real redis-server processes on free loopback ports
(a standalone server and a 3-master Redis Cluster shared by the session,
and servers of a test's own that it may kill, stall or restart: the
fixtures of tests/conftest.py), the store_url fixture (once per backend:
memory, redis, redis-cluster, each test under a key prefix of its own),
Broker.restart() (a new process on the same port and store) and RawSession
(a raw v3.1.1 / v5 client for hand-driven QoS flows).
"""
import os
import subprocess
from pathlib import Path

import pytest

from harness import safe_name
from harness.broker import (IGNORED_UNDER_MOSQUITTO, MOSQUITTO_KEYS, Broker,
                            child_env, mosquitto_bin, starling_bin, stop_all)
from harness.client import Client, ClientSet
from harness.raw import RawClient, RawSession
from harness.redis import redis_cluster_url, redis_url

# Fixtures of Starling's store backends: a test using one is skipped when
# the broker under test is Mosquitto.
STORE_FIXTURES = {"store_url", "redis_standalone", "redis_cluster",
                  "redis_factory"}


def pytest_addoption(parser):
    parser.addoption(
        "--broker", choices=("starling", "mosquitto"),
        default=os.environ.get("STARLING_TEST_BROKER", "starling"),
        help="broker to test (env STARLING_TEST_BROKER)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "starling_only: behaviour or keys Mosquitto does not have")
    config.addinivalue_line(
        "markers", "broker(**keys): config keys for the broker fixture")


def broker_kind(config):
    return config.getoption("--broker")


def pytest_report_header(config):
    kind = broker_kind(config)
    if kind == "mosquitto":
        return f"broker: mosquitto ({mosquitto_bin()})"
    return f"broker: starling ({starling_bin()})"


def pytest_collection_modifyitems(config, items):
    if broker_kind(config) != "mosquitto":
        return
    only = pytest.mark.skip(reason="starling_only test (running mosquitto)")
    store = pytest.mark.skip(reason="the store backends are Starling's")
    for item in items:
        if "starling_only" in item.keywords:
            item.add_marker(only)
        elif STORE_FIXTURES.intersection(item.fixturenames):
            item.add_marker(store)


@pytest.fixture
def broker_factory(request, tmp_path):
    """start(args=(), env=None, **keys) -> a running Broker; every broker is
    stopped and checked for abnormal exits and sanitizer reports at
    teardown. args/env are extra command-line arguments and environment
    variables (Starling only)."""
    kind = broker_kind(request.config)
    logdir = os.environ.get("STARLING_TEST_LOGDIR")
    brokers = []
    request.node._brokers = brokers

    def start(args=(), env=None, **keys):
        if kind == "mosquitto":
            for k in keys:
                if k not in MOSQUITTO_KEYS and k not in IGNORED_UNDER_MOSQUITTO:
                    pytest.skip(f"key {k} has no mosquitto equivalent")
        n = len(brokers)
        name = safe_name(request.node.nodeid) + (f"-{n}" if n else "")
        log_path = (Path(logdir) / f"{name}.log" if logdir
                    else tmp_path / f"broker{n}.log")
        b = Broker(kind, keys, log_path, tmp_path, args, env)
        brokers.append(b)
        return b.start()

    yield start
    problems = stop_all(brokers)
    if problems:
        # The broker log itself is attached by pytest_runtest_makereport.
        pytest.fail("broker problems:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture
def broker(request, broker_factory):
    """The broker for this test, configured by @pytest.mark.broker(**keys)."""
    marker = request.node.get_closest_marker("broker")
    keys = dict(marker.kwargs) if marker else {}
    return broker_factory(**keys)


@pytest.fixture
def starling_run(request):
    """run(*args, env=None, timeout=10) -> CompletedProcess of the Starling
    binary (for options that exit at once: --help, --check-config...)."""
    if broker_kind(request.config) != "starling":
        pytest.skip("runs the starling binary")

    def run(*args, env=None, timeout=10):
        return subprocess.run([str(starling_bin()), *args],
                              capture_output=True, text=True,
                              timeout=timeout,
                              env={**child_env(), **(env or {})})

    return run


@pytest.fixture
def client_factory(broker):
    """make(client_id=None, protocol="311", clean_session=True,
    connect=True, keepalive=60, will=None, on=broker, expiry=None,
    clean_start=True, **kw) -> Client (kw: Client's, e.g. manual_ack;
    expiry and clean_start: see Client.connect). With connect=True the
    CONNACK must be 0."""
    clients = ClientSet(Client)

    def make(client_id=None, protocol="311", clean_session=True,
             connect=True, keepalive=60, will=None, on=None, expiry=None,
             clean_start=True, **kw):
        return clients.make(on or broker, client_id, protocol,
                            clean_session, connect=connect,
                            keepalive=keepalive, will=will, expiry=expiry,
                            clean_start=clean_start, **kw)

    yield make
    clients.close()


@pytest.fixture
def raw_factory(broker):
    """make(on=broker) -> harness.raw.RawClient, closed at teardown."""
    made = []

    def make(on=None, timeout=5.0):
        b = on or broker
        r = RawClient(b.host, b.port, timeout)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def raw_session(raw_factory):
    """make(proto, on=None) -> RawSession (closed at teardown)."""
    def make(proto, on=None):
        return RawSession(raw_factory, proto, on)
    return make


@pytest.fixture(params=["31", "311"])
def v3(request):
    """Run a test once per MQTT 3 protocol version (3.1, 3.1.1)."""
    return request.param


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store_url(request):
    """The store of a test, once per backend: "memory", a standalone
    redis-server and a 3-master Redis Cluster (each test with its own key
    prefix; the cluster is known by two seeds)."""
    if request.param == "memory":
        return "memory"
    if request.param == "redis":
        return redis_url(request.getfixturevalue("redis_standalone"))
    return redis_cluster_url(request.getfixturevalue("redis_cluster"),
                             seeds=2)


@pytest.fixture(params=["term", "kill"])
def how(request):
    """How a broker ends before a restart: SIGTERM or SIGKILL."""
    return request.param
