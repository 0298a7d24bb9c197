"""
Shared by every black-box suite under tests/: tests/ goes on sys.path so
that the suites import the harness package (tests/harness) whichever
directory pytest runs from; the fixtures and hooks every suite uses.
"""
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import pytest  # noqa: E402

from harness import unique  # noqa: E402
from harness.redis import RedisCluster, RedisServer, need_redis  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the log of every broker process it
    started (the fixtures list them in item._brokers)."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for b in getattr(item, "_brokers", []):
        rep.sections.append((f"{b.name} log {b.log_path}", b.log_tail()))


@pytest.fixture
def topic():
    """A topic prefix of this test alone."""
    return unique()


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory):
    """A redis-server shared by the whole session (tests keep apart by a
    key prefix of their own: see harness.redis.redis_url)."""
    need_redis()
    r = RedisServer(tmp_path_factory.mktemp("redis-solo")).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-master Redis Cluster shared by the whole session."""
    need_redis()
    c = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield c
    c.stop()


@pytest.fixture
def redis_factory(tmp_path):
    """make(appendonly=True, start=True) -> a RedisServer of this test
    alone (for tests that kill, pause or restart the store), started unless
    told otherwise; killed at teardown."""
    need_redis()
    made = []

    def make(appendonly=True, start=True):
        r = RedisServer(tmp_path, appendonly=appendonly)
        made.append(r)
        return r.start() if start else r

    yield make
    for r in made:
        r.kill()
