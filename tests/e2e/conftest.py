"""
Fixtures for the end-to-end suite: the docker-compose deployment of a
Starling cluster (docker-compose.yml at the repository root) under the
project name starling-e2e (harness.compose).

The `cluster` fixture (one per session) builds the debian:bookworm-slim base
image when it is missing (deploy/base-image.sh), runs
`compose up -d --build --scale broker=3`, waits until every node is healthy,
serves behind the load balancer and sees the others, then yields a
`ComposeCluster`; at the end it saves the containers' logs and runs
`compose down -v`. The tests reach the cluster only through the load
balancer's ports, published on 127.0.0.1 (free ports picked by Docker).

Environment: STARLING_E2E_KEEP=1 leaves the deployment running;
STARLING_TEST_LOGDIR is where compose.log goes (default
build/test-logs/e2e).
"""
import os
import subprocess
import time

import pytest

from harness import HOST, REPO
from harness.compose import PROJECT, ComposeCluster, log_dir


@pytest.fixture(scope="session")
def cluster():
    if subprocess.run(["docker", "info"], capture_output=True,
                      timeout=60).returncode != 0:
        pytest.skip("docker is not usable here")
    cl = ComposeCluster()
    t0 = time.monotonic()
    subprocess.run([str(REPO / "deploy" / "base-image.sh")], check=True,
                   timeout=900)
    cl.compose("down", "-v", "--remove-orphans", timeout=180, check=False)
    try:
        cl.compose("up", "-d", "--build", "--scale", "broker=3",
                   timeout=1200)
        cl.mqtt_port = cl.published("lb", 1883)
        cl.stats_port = cl.published("lb", 8404)
        print(f"\ne2e: images built and up in {time.monotonic() - t0:.0f}s; "
              f"MQTT on {HOST}:{cl.mqtt_port}")
        cl.wait_formed(3, timeout=120)
        print(f"e2e: cluster of 3 formed after {time.monotonic() - t0:.0f}s")
        yield cl
    finally:
        cl.close_clients()
        try:
            (log_dir() / "compose.log").write_text(
                cl.compose("logs", "--no-color", "-t", timeout=120,
                           check=False))
        except Exception as e:  # logs are a courtesy, never the failure
            print(f"e2e: could not save logs: {e}")
        if os.environ.get("STARLING_E2E_KEEP") == "1":
            print(f"e2e: left running (project {PROJECT})")
        else:
            cl.compose("down", "-v", "--remove-orphans", timeout=300,
                       check=False)


@pytest.fixture
def clients(cluster):
    yield cluster
    cluster.close_clients()
