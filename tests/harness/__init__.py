"""
The black-box test harness shared by tests/integration, tests/cluster and
tests/e2e: everything a suite needs to start processes and talk to them,
with no fixture in it (the suites' conftest.py files hold the fixtures).

    wait.py      poll a condition or a port until a deadline
    ports.py     free loopback ports (and port pairs for a Redis Cluster bus)
    broker.py    Starling (or Mosquitto) processes: Broker, cluster Node
    redis.py     a RESP client, redis-server / Kvrocks servers and clusters,
                 store URLs
    client.py    the paho-mqtt client wrapper (Client, ClusterClient)
    raw.py       the raw MQTT 3.1 / 3.1.1 / 5.0 packet codec and socket
                 clients (RawClient, V5Client, RawSession)
    sysinfo.py   $SYS readers
    cluster.py   a set of Starling nodes on one store (StarlingCluster),
                 route probes
    compose.py   the docker-compose deployment of the end-to-end suite

tests/conftest.py puts tests/ on sys.path, so `import harness` works from
every suite, whichever directory pytest runs from.
"""
import re
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def unique(prefix="t"):
    """A topic prefix (or name) no other test shares."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def safe_name(nodeid):
    """A test's node id made fit for a file or directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-150:]


def cid_for(name):
    """A client id starting with `name` that no other test uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"
