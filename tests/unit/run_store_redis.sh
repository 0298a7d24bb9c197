#!/usr/bin/env bash
# run_store_redis.sh - run the store contract suite (test_store) against
# real servers: a standalone redis-server and a 3-master Redis Cluster, each
# on free loopback ports, torn down on exit.
#
# Usage: tests/unit/run_store_redis.sh [BUILD_DIR] [criterion args...]
#   BUILD_DIR defaults to build/ (build-asan/ runs it under the sanitizers).
# Needs redis-server and redis-cli (Debian: redis-server, redis-tools).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
shift || true
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
TEST=$BUILD/tests/unit/test_store

for cmd in redis-server redis-cli python3; do
    command -v "$cmd" >/dev/null || { echo "run_store_redis: $cmd not found" >&2; exit 1; }
done
[ -x "$TEST" ] || { echo "run_store_redis: $TEST not built" >&2; exit 1; }

WORK=$(mktemp -d /tmp/starling-store-XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# free_port: a port p such that p and p + 10000 (cluster bus) are free
free_port() {
    python3 - <<'EOF'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45000)
    if free(p) and free(p + 10000):
        print(p)
        break
EOF
}

# The standalone server only knows an ACL user (AUTH user password, and
# the tests use database 2); the cluster has a plain password.
USER=starling
PASS=s3cret-user
CPASS=s3cret-cluster

# start_redis PORT 'redis-cli auth args' [extra redis-server args...]
start_redis() {
    local port=$1 auth=$2
    shift 2
    mkdir -p "$WORK/$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$WORK/$port" --logfile "$WORK/$port/redis.log" "$@" &
    PIDS+=($!)
    for _ in $(seq 100); do
        # shellcheck disable=SC2086
        if redis-cli -p "$port" $auth --no-auth-warning ping 2>/dev/null |
            grep -q PONG; then
            return 0
        fi
        sleep 0.05
    done
    echo "run_store_redis: redis-server on port $port did not start" >&2
    cat "$WORK/$port/redis.log" >&2 || true
    return 1
}

SOLO=$(free_port)
start_redis "$SOLO" "--user $USER --pass $PASS" \
    --user default off --user "$USER" on ">$PASS" '~*' '&*' '+@all'

CPORTS=()
for _ in 1 2 3; do
    p=$(free_port)
    while [[ " ${CPORTS[*]} $SOLO " == *" $p "* ]]; do
        p=$(free_port)
    done
    CPORTS+=("$p")
    start_redis "$p" "-a $CPASS" --cluster-enabled yes \
        --cluster-node-timeout 2000 --cluster-config-file "$WORK/$p/nodes.conf" \
        --requirepass "$CPASS" --masterauth "$CPASS"
done
redis-cli -a "$CPASS" --no-auth-warning --cluster create \
    "${CPORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 \
    --cluster-yes >"$WORK/cluster-create.log" 2>&1 || {
    cat "$WORK/cluster-create.log" >&2
    exit 1
}
for _ in $(seq 200); do
    ok=0
    for p in "${CPORTS[@]}"; do
        if redis-cli -p "$p" -a "$CPASS" --no-auth-warning cluster info \
            2>/dev/null | grep -q 'cluster_state:ok'; then
            ok=$((ok + 1))
        fi
    done
    [ "$ok" = 3 ] && break
    sleep 0.05
done

export STARLING_TEST_REDIS="redis://$USER:$PASS@127.0.0.1:$SOLO/2"
export STARLING_TEST_REDIS_CLUSTER="redis+cluster://:$CPASS@127.0.0.1:${CPORTS[0]},127.0.0.1:${CPORTS[1]}"
echo "store tests: $STARLING_TEST_REDIS and $STARLING_TEST_REDIS_CLUSTER"
"$TEST" --jobs 1 "$@"
