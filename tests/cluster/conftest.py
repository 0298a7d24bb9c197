"""
Fixtures for the cluster black-box suite: real redis-server processes (one
standalone server and a 3-master Redis Cluster, each started once per run:
tests/conftest.py; every test keeps to a key prefix of its own), a factory
of Starling nodes sharing one store (each with its own port, node id and
log file; kill -9, SIGTERM and restart on the same port), paho-mqtt clients
whose helpers wait on events with timeouts, and readers of the per-node
$SYS figures. What they hand out lives in tests/harness.

A test fails when a node log holds a sanitizer report, or when a node exited
on its own or not with status 0 after SIGTERM; the logs of every node are
attached to a failed test's report.
"""
import os
from pathlib import Path

import pytest

from harness import safe_name
from harness.broker import Node, starling_bin, stop_all
from harness.client import ClientSet, ClusterClient
from harness.cluster import StarlingCluster
from harness.redis import (KvrocksCluster, RedisCluster, need_kvrocks,
                           need_redis, redis_cluster_url, redis_url)


def pytest_report_header(config):
    return f"starling: {starling_bin()}"


@pytest.fixture(params=["redis", "redis-cluster"])
def store(request):
    """The store URL of a test, once per store kind: a standalone
    redis-server and a 3-master Redis Cluster (fresh key prefix)."""
    if request.param == "redis":
        return redis_url(request.getfixturevalue("redis_standalone"))
    return redis_cluster_url(request.getfixturevalue("redis_cluster"))


@pytest.fixture
def store_cluster_private(tmp_path):
    """make(kind) -> a started 3-master store cluster of this test alone,
    kind "redis-cluster" (AOF, fsync always) or "kvrocks-cluster" (RocksDB),
    whose masters can be killed and restarted with their data; stopped at
    teardown."""
    made = []

    def make(kind):
        if kind == "redis-cluster":
            need_redis()
            c = RedisCluster(tmp_path / kind, appendonly=True)
        else:
            need_kvrocks()
            c = KvrocksCluster(tmp_path / kind)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        for n in c.nodes:
            n.kill()


@pytest.fixture
def cluster_factory(request, tmp_path):
    """make(store, n=3, formed=True, peers=False, **keys) ->
    StarlingCluster of n running nodes (ids n1, n2, ...) on `store` with
    the extra config `keys`; formed: every node listens on the bus; peers:
    and knows every other node (see wait_formed; costs a heartbeat period).
    Every node is stopped with SIGTERM and checked at teardown."""
    logdir = os.environ.get("STARLING_TEST_LOGDIR")
    base = (Path(logdir) / safe_name(request.node.nodeid) if logdir
            else tmp_path / "logs")
    all_nodes = []
    watches = {}
    request.node._brokers = all_nodes

    def make(store, n=3, formed=True, peers=False, **keys):
        k = len(all_nodes)
        nodes = []
        for i in range(n):
            nid = f"n{k + i + 1}"
            nodes.append(Node(nid, store, base / f"{nid}.log", tmp_path,
                              keys))
        all_nodes.extend(nodes)
        for node in nodes:
            node.start()
        c = StarlingCluster(nodes, watches)
        if formed:
            c.wait_formed(peers=peers)
        return c

    yield make
    for w in watches.values():
        w.close()
    problems = stop_all(all_nodes)
    if problems:
        pytest.fail("node problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def cluster3(cluster_factory, store):
    """Three nodes on the test's store, all listening on the bus."""
    return cluster_factory(store)


@pytest.fixture
def client_factory():
    """make(node_or_port, client_id=None, protocol="311",
    clean_session=True, connect=True, keepalive=60, will=None, expiry=None,
    clean_start=True, **kw) -> ClusterClient, closed at teardown."""
    clients = ClientSet(ClusterClient)
    yield clients.make
    clients.close()
