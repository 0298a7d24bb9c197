#!/usr/bin/env bash
# compare.sh - Starling and Mosquitto side by side, same machine, same run.
#
# For each scenario and each round it starts a fresh Starling on a free
# loopback port, runs starling-bench against it, stops it, then does the
# same with Mosquitto (configured with the same inflight and queue limits),
# alternating which broker goes first from round to round. The results go
# to bench/RESULTS.md (through bench/report.py); the raw JSON lines stay in
# bench/results-<date>/.
#
# Environment:
#   QUICK=1          about a minute: 1 round, 1 s runs, small counts
#   ROUNDS=N         rounds per scenario (3; QUICK: 1)
#   DURATION=S       publishing time of the throughput scenarios (5; QUICK: 1)
#   IDLE_CONNS=N     idle connections held (10000; QUICK: 2000); bounded by
#                    the descriptor limit (ulimit -n)
#   STORM_CONNS=N    connstorm connections (20000; QUICK: 3000)
#   STORM_TLS_CONNS=N  connstorm-tls connections (10000; QUICK: 2000); both
#                    brokers get a TLS listener with the same throwaway
#                    certificate (ECDSA P-256, self-signed, made by openssl
#                    into the results directory); the bench verifies it
#   PERSIST_SUBS=N, PERSIST_MSGS=N  persist: subscribers (1000; QUICK: 500)
#                    and messages per publisher (5; QUICK: 2), 100 publishers
#   SCENARIOS="..."  subset, from: pairs-q0 fanin-q0 fanout-q0 pairs-q1
#                    pairs-q1-lat wildcard-q1 connstorm connstorm-tls idle
#                    persist persist-redis ppairs ppairs-redis crossnode
#                    crossnode-nobatch; not in the default set: pairs-q1-ws,
#                    connstorm-ws (MQTT over WebSocket; Mosquitto: a
#                    protocol websockets listener)
#   BENCH_THREADS=N  starling-bench threads (1 on a machine of 2 cores or
#                    less, so the broker keeps a core of its own; else 2)
#   TIME_BUDGET=S    scenarios not started after S seconds are skipped
#                    (840; QUICK: 120)
#   STARLING, MOSQUITTO, BENCH, BUILD_DIR, OUT: paths to override
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-1}
    IDLE_CONNS=${IDLE_CONNS:-2000}; STORM_CONNS=${STORM_CONNS:-3000}
    STORM_TLS_CONNS=${STORM_TLS_CONNS:-2000}
    PERSIST_SUBS=${PERSIST_SUBS:-500}; PERSIST_MSGS=${PERSIST_MSGS:-2}
    TIME_BUDGET=${TIME_BUDGET:-120}
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}
    IDLE_CONNS=${IDLE_CONNS:-10000}; STORM_CONNS=${STORM_CONNS:-20000}
    STORM_TLS_CONNS=${STORM_TLS_CONNS:-10000}
    PERSIST_SUBS=${PERSIST_SUBS:-1000}; PERSIST_MSGS=${PERSIST_MSGS:-5}
    TIME_BUDGET=${TIME_BUDGET:-840}
fi
SCENARIOS=${SCENARIOS:-"pairs-q0 fanin-q0 fanout-q0 pairs-q1 pairs-q1-lat wildcard-q1 connstorm connstorm-tls idle persist persist-redis ppairs ppairs-redis crossnode crossnode-nobatch"}
if [ "$(nproc)" -le 2 ]; then BENCH_THREADS=${BENCH_THREADS:-1}; else BENCH_THREADS=${BENCH_THREADS:-2}; fi
BUILD_DIR=${BUILD_DIR:-$ROOT/build-release}
STARLING=${STARLING:-$BUILD_DIR/starling}
BENCH=${BENCH:-$BUILD_DIR/bench/starling-bench}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
OUT=${OUT:-$ROOT/bench/RESULTS.md}
# The limits both brokers get (Starling's defaults, also Mosquitto's).
MAX_INFLIGHT=${MAX_INFLIGHT:-20}
MAX_QUEUED=${MAX_QUEUED:-1000}

RESDIR=$ROOT/bench/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESDIR"
TLSDIR=$RESDIR/tls
RESULTS=$RESDIR/results.jsonl
: > "$RESULTS"
NOTES=()
PIDS=()

log() { echo "compare: $*" >&2; }

# ---- build ---------------------------------------------------------------

build() {
    if [ ! -d "$BUILD_DIR" ]; then
        meson setup "$BUILD_DIR" "$ROOT" --buildtype=release >/dev/null || return 1
    fi
    ninja -C "$BUILD_DIR" bench/starling-bench >/dev/null || return 1
    if ! ninja -C "$BUILD_DIR" starling >/dev/null 2>&1; then
        log "starling does not build; Mosquitto only"
    fi
}

# ---- processes -----------------------------------------------------------

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait until something accepts TCP connections on the port (5 s at most).
wait_port() {
    local port=$1 i
    for i in $(seq 1 50); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

stop_all() {
    local p
    for p in "${PIDS[@]:-}"; do stop_pid "$p"; done
    PIDS=()
}
trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT TERM

# starling_start PORT [ARGS...] -> prints the pid
starling_start() {
    local port=$1; shift
    "$STARLING" --bind 127.0.0.1 --port "$port" --log_level warning \
        --max_inflight_messages "$MAX_INFLIGHT" \
        --max_queued_messages "$MAX_QUEUED" "$@" $STARLING_EXTRA \
        >>"$RESDIR/starling.log" 2>&1 &
    echo $!
}

# tls_material: a throwaway self-signed certificate and key for 127.0.0.1
# in $TLSDIR (once per run), used by both brokers and trusted by the bench.
tls_material() {
    [ -s "$TLSDIR/server.pem" ] && return 0
    mkdir -p "$TLSDIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$TLSDIR/server.key" -out "$TLSDIR/server.pem" \
        >>"$TLSDIR/openssl.log" 2>&1 || return 1
    # Mosquitto started as root reads it as user mosquitto (throwaway key).
    chmod 755 "$TLSDIR" && chmod 644 "$TLSDIR/server.key" "$TLSDIR/server.pem"
}

# mosquitto_start PORT [BRIDGE_TO_PORT QOS] -> prints the pid; with
# MOSQ_TLS_PORT set, also a TLS listener on that port ($TLSDIR's certificate),
# with MOSQ_WS_PORT a websockets listener
mosquitto_start() {
    local port=$1 bridge=${2:-} qos=${3:-0} conf=$RESDIR/mosquitto-$1.conf
    cat >"$conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
max_inflight_messages $MAX_INFLIGHT
max_queued_messages $MAX_QUEUED
max_connections -1
persistence false
log_dest stderr
log_type error
log_type warning
connection_messages false
EOF
    if [ -n "${MOSQ_TLS_PORT:-}" ]; then
        cat >>"$conf" <<EOF
listener $MOSQ_TLS_PORT 127.0.0.1
certfile $TLSDIR/server.pem
keyfile $TLSDIR/server.key
EOF
    fi
    if [ -n "${MOSQ_WS_PORT:-}" ]; then
        cat >>"$conf" <<EOF
listener $MOSQ_WS_PORT 127.0.0.1
protocol websockets
EOF
    fi
    if [ -n "$bridge" ]; then
        cat >>"$conf" <<EOF
connection node-a
address 127.0.0.1:$bridge
topic sb/# in $qos
cleansession true
try_private true
bridge_protocol_version mqttv311
EOF
    fi
    "$MOSQUITTO" -c "$conf" >>"$RESDIR/mosquitto.log" 2>&1 &
    echo $!
}

# ---- scenarios -----------------------------------------------------------

# The starling-bench arguments of a scenario (without host, port, pid).
scenario_args() {
    local d=$DURATION
    case $1 in
    pairs-q0) echo "--scenario pairs --pairs 10 --qos 0 --duration $d" ;;
    fanin-q0) echo "--scenario fanin --pubs 10 --qos 0 --duration $d" ;;
    fanout-q0) echo "--scenario fanout --subs 100 --qos 0 --duration $d" ;;
    pairs-q1) echo "--scenario pairs --pairs 10 --qos 1 --inflight 10 --duration $d" ;;
    pairs-q1-lat) echo "--scenario pairs --pairs 10 --qos 1 --rate 1000 --duration $d" ;;
    wildcard-q1) echo "--scenario wildcard --pubs 8 --subs 64 --qos 1 --rate 100 --duration $d" ;;
    connstorm) echo "--scenario connstorm --clients $STORM_CONNS --concurrency 100" ;;
    connstorm-tls) echo "--scenario connstorm --clients $STORM_TLS_CONNS --concurrency 100 --tls --cafile $TLSDIR/server.pem" ;;
    pairs-q1-ws) echo "--scenario pairs --pairs 10 --qos 1 --inflight 10 --duration $d --ws" ;;
    connstorm-ws) echo "--scenario connstorm --clients $STORM_CONNS --concurrency 100 --ws" ;;
    idle) echo "--scenario idle --clients $IDLE_CONNS --duration 2" ;;
    persist | persist-redis) echo "--scenario persist --subs $PERSIST_SUBS --pubs 100 --msgs $PERSIST_MSGS --qos 1" ;;
    ppairs | ppairs-redis) echo "--scenario ppairs --pairs 10 --qos 1 --inflight 32 --duration $d" ;;
    crossnode | crossnode-nobatch) echo "--scenario crossnode --pairs 10 --qos 0 --duration $d --settle 1" ;;
    *) return 1 ;;
    esac
}

# record BROKER ID ROUND COMMAND OUTPUT_FILE [SCRIPT_CALLS REDIS_COMMANDS]
record() {
    python3 - "$@" <<'EOF' >>"$RESULTS"
import json, sys
broker, sid, rnd, cmd, path = sys.argv[1:6]
calls = int(sys.argv[6]) if len(sys.argv) > 7 and sys.argv[6] else None
cmds = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[7] else None
line = ""
try:
    lines = [l for l in open(path) if l.startswith("{")]
    line = lines[-1] if lines else ""
except OSError:
    pass
try:
    d = json.loads(line)
except ValueError:
    d = {"ok": False, "verdict": "no result", "error": "the bench printed no result"}
d.update(broker=broker, id=sid, round=int(rnd), command=cmd)
if calls is not None and d.get("received"):
    d["store_calls"] = calls
    d["store_cmds"] = cmds
    d["store_calls_per_msg"] = calls / d["received"]
    d["store_cmds_per_msg"] = cmds / d["received"]
print(json.dumps(d))
EOF
}

# redis_calls PORT: "scripts commands" run by the redis-server on PORT
# (INFO commandstats): the script calls (EVALSHA, the store's requests for
# every session operation), and every command executed, those the scripts
# ran included (INFO itself left out)
redis_calls() {
    redis-cli -p "$1" info commandstats 2>/dev/null | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_evalsha:/ { s += $3 }
            /^cmdstat_/ && $1 != "cmdstat_info" { n += $3 }
            END { print s + 0, n + 0 }'
}

# bench_run BROKER ID ROUND PID ARGS... : run the bench, record the result.
# With STORE_PORT set (the redis-server the broker uses), the store commands
# the run cost are recorded too (store_calls, store_calls_per_msg).
bench_run() {
    local broker=$1 sid=$2 rnd=$3 pid=$4; shift 4
    local out=$RESDIR/$sid-$broker-$rnd.out
    local limit=$((DURATION + 90)) s0=0 n0=0 s1 n1 calls="" cmds=""
    [ -n "${STORE_PORT:-}" ] && read -r s0 n0 <<<"$(redis_calls "$STORE_PORT")"
    timeout $((limit + 30)) "$BENCH" "$@" --threads "$BENCH_THREADS" \
        --broker-pid "$pid" --timeout "$limit" --json >"$out" 2>&1
    if [ -n "${STORE_PORT:-}" ]; then
        read -r s1 n1 <<<"$(redis_calls "$STORE_PORT")"
        calls=$((s1 - s0)) cmds=$((n1 - n0))
    fi
    record "$broker" "$sid" "$rnd" "starling-bench $*" "$out" "$calls" "$cmds"
    tail -1 "$out" | python3 -c 'import json,sys
try:
    d=json.loads(sys.stdin.read())
except ValueError:
    print("  no result"); sys.exit()
keys=["delivered_per_s","lat_p99_us","connects_per_s","rss_per_conn_bytes","persisted_per_s","lost","verdict"]
if len(sys.argv) > 2 and sys.argv[1] and d.get("received"):
    d["store_calls_per_msg"] = round(int(sys.argv[1]) / d["received"], 3)
    d["store_cmds_per_msg"] = round(int(sys.argv[2]) / d["received"], 2)
    keys += ["store_calls_per_msg", "store_cmds_per_msg"]
print("  " + "  ".join(f"{k}={d[k]}" for k in keys if d.get(k) not in (None,0,0.0)))' "$calls" "$cmds" >&2
}

# start_failed BROKER ID ROUND WHAT: record a run whose broker never listened,
# with the last line the broker logged as the reason.
start_failed() {
    local why
    why=$(tail -1 "$RESDIR/$1.log" 2>/dev/null | tr -d '"\\\000-\037' | cut -c1-200)
    log "$1 $4: $why"
    printf '{"ok":false,"verdict":"%s","error":"%s"}\n' "$4" "$why" >"$RESDIR/$2-$1-$3.out"
    record "$1" "$2" "$3" "" "$RESDIR/$2-$1-$3.out"
    stop_all
}

# redis_start -> prints the port of a fresh redis-server (pid in PIDS)
redis_start() {
    local rport
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
        >>"$RESDIR/redis.log" 2>&1 &
    PIDS+=("$!")
    wait_port "$rport" || true
    echo "$rport"
}

run_single() {
    local broker=$1 sid=$2 rnd=$3 port pid args rport="" tport="" wport="" bport
    args=$(scenario_args "$sid")
    port=$(free_port)
    bport=$port
    PIDS=()
    if [ "$sid" = connstorm-tls ]; then
        if ! tls_material; then
            start_failed "$broker" "$sid" "$rnd" "no TLS certificate (openssl failed)"
            return
        fi
        tport=$(free_port)
        bport=$tport
    fi
    case $sid in
    *-ws) wport=$(free_port); bport=$wport ;;
    esac
    if [ "$broker" = starling ] && [[ $sid == *-redis ]]; then
        redis_start >"$RESDIR/rport"
        rport=$(cat "$RESDIR/rport")
        pid=$(starling_start "$port" --store "redis://127.0.0.1:$rport")
    elif [ "$broker" = starling ] && [ -n "$tport" ]; then
        pid=$(starling_start "$port" --tls_port "$tport" \
            --tls_cert_file "$TLSDIR/server.pem" --tls_key_file "$TLSDIR/server.key")
    elif [ "$broker" = starling ] && [ -n "$wport" ]; then
        pid=$(starling_start "$port" --ws_port "$wport")
    elif [ "$broker" = starling ]; then
        pid=$(starling_start "$port")
    else
        pid=$(MOSQ_TLS_PORT=$tport MOSQ_WS_PORT=$wport mosquitto_start "$port")
    fi
    PIDS+=("$pid")
    if ! wait_port "$port" || ! wait_port "$bport"; then
        start_failed "$broker" "$sid" "$rnd" "broker did not start"
        return
    fi
    # shellcheck disable=SC2086
    STORE_PORT=$rport bench_run "$broker" "$sid" "$rnd" "$pid" $args --host 127.0.0.1 --port "$bport"
    stop_all
}

# Two nodes: publishers on A, subscribers on B.
run_crossnode() {
    local broker=$1 sid=$2 rnd=$3 pa pb a b rport args batch=true
    args=$(scenario_args "$sid")
    pa=$(free_port); pb=$(free_port)
    [ "$sid" = crossnode-nobatch ] && batch=false
    if [ "$broker" = starling ]; then
        PIDS=()
        redis_start >"$RESDIR/rport"
        rport=$(cat "$RESDIR/rport")
        a=$(starling_start "$pa" --store "redis://127.0.0.1:$rport" --node_id node-a --cluster_batch $batch)
        b=$(starling_start "$pb" --store "redis://127.0.0.1:$rport" --node_id node-b --cluster_batch $batch)
        PIDS+=("$a" "$b")
    else
        a=$(mosquitto_start "$pa")
        PIDS=("$a")
        wait_port "$pa" || true
        b=$(mosquitto_start "$pb" "$pa" 0)
        PIDS+=("$b")
    fi
    if ! wait_port "$pa" || ! wait_port "$pb"; then
        start_failed "$broker" "$sid" "$rnd" "nodes did not start"
        return
    fi
    # shellcheck disable=SC2086
    bench_run "$broker" "$sid" "$rnd" "$a" $args --host 127.0.0.1 --port "$pa" \
        --sub-host 127.0.0.1 --sub-port "$pb"
    stop_all
}

run_one() {
    log "$2 round $3: $1"
    case $2 in
    crossnode*) run_crossnode "$@" ;;
    *) run_single "$@" ;;
    esac
}

# Does the Starling binary start and accept an MQTT connection?
starling_usable() {
    [ -x "$STARLING" ] || return 1
    local port pid ok=1
    port=$(free_port)
    pid=$(starling_start "$port")
    PIDS=("$pid")
    if wait_port "$port" && "$BENCH" --scenario connstorm --clients 5 --port "$port" \
        --timeout 10 --json >/dev/null 2>&1; then
        ok=0
    fi
    stop_all
    return $ok
}

# ---- facts and report ----------------------------------------------------

facts() {
    local rev status
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    status=$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)
    [ -n "$status" ] && rev="$rev (work tree with uncommitted changes)"
    python3 - "$rev" "$@" <<'EOF'
import json, os, platform, subprocess, sys
rev = sys.argv[1]
env = dict(a.split("=", 1) for a in sys.argv[2:])
def out(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:
        return ""
cpu = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
machine = {
    "date": out("date -u '+%Y-%m-%d %H:%M UTC'"),
    "CPU": cpu,
    "cores": os.cpu_count(),
    "kernel": platform.release(),
    "load average at start": out("cut -d' ' -f1-3 /proc/loadavg"),
    "mosquitto": out(env["MOSQUITTO"] + " -h | head -1"),
    "starling": out(env["STARLING"] + " --version 2>&1 | head -1") or "not available",
    "starling git revision": rev,
    "settings": ("ROUNDS=%(ROUNDS)s DURATION=%(DURATION)s s, IDLE_CONNS=%(IDLE_CONNS)s, "
                 "STORM_CONNS=%(STORM_CONNS)s, STORM_TLS_CONNS=%(STORM_TLS_CONNS)s, "
                 "bench threads %(BENCH_THREADS)s, "
                 "max_inflight_messages %(MAX_INFLIGHT)s, max_queued_messages "
                 "%(MAX_QUEUED)s (both brokers), descriptor limit %(NOFILE)s") % env,
}
print(json.dumps({"machine": machine}))
EOF
}

write_report() {
    local machine_json=$1 cmds_json notes_json scen_json
    cmds_json=$(for sid in $SCENARIOS; do
        a=$(scenario_args "$sid") || continue
        extra="--host 127.0.0.1 --port PORT"
        case $sid in crossnode*) extra="$extra --sub-host 127.0.0.1 --sub-port PORT_B" ;; esac
        printf '%s\t%s\n' "$sid" "starling-bench $a $extra --threads $BENCH_THREADS --broker-pid PID --json"
    done | python3 -c 'import json,sys; print(json.dumps(dict(l.rstrip("\n").split("\t",1) for l in sys.stdin if l.strip())))')
    notes_json=$(printf '%s\n' "${NOTES[@]:-}" | python3 -c 'import json,sys; print(json.dumps([l.rstrip("\n") for l in sys.stdin if l.strip()]))')
    scen_json=$(printf '%s\n' $SCENARIOS | python3 -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin if l.strip()]))')
    python3 - "$machine_json" "$cmds_json" "$notes_json" "$scen_json" >"$RESDIR/facts.json" <<'EOF'
import json, sys
f = json.loads(sys.argv[1])
f["commands"] = json.loads(sys.argv[2])
f["notes"] = json.loads(sys.argv[3])
f["scenarios"] = json.loads(sys.argv[4])
print(json.dumps(f))
EOF
    python3 "$ROOT/bench/report.py" "$RESULTS" "$RESDIR/facts.json" >"$OUT"
}

# ---- main ----------------------------------------------------------------

ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$IDLE_CONNS" -gt $((NOFILE - 200)) ]; then
    NOTES+=("IDLE_CONNS lowered from $IDLE_CONNS to $((NOFILE - 200)): the descriptor limit here is $NOFILE (ulimit -Hn) for the bench and the broker alike.")
    IDLE_CONNS=$((NOFILE - 200))
fi
STARLING_EXTRA=${STARLING_EXTRA:-}

build || { log "build failed"; exit 1; }
[ -x "$BENCH" ] || { log "no $BENCH"; exit 1; }
[ -x "$MOSQUITTO" ] || { log "no $MOSQUITTO"; exit 1; }

BROKERS="starling mosquitto"
if ! starling_usable; then
    BROKERS="mosquitto"
    NOTES+=("Starling ($STARLING) was not usable for this run (missing, or it did not accept an MQTT connection): only the Mosquitto column is filled.")
    log "starling not usable: Mosquitto only"
fi
if [ "$BROKERS" != mosquitto ] && ! command -v redis-server >/dev/null; then
    NOTES+=("redis-server is missing: the Starling crossnode runs could not start a store.")
fi

MACHINE=$(facts MOSQUITTO="$MOSQUITTO" STARLING="$STARLING" ROUNDS="$ROUNDS" DURATION="$DURATION" \
    IDLE_CONNS="$IDLE_CONNS" STORM_CONNS="$STORM_CONNS" STORM_TLS_CONNS="$STORM_TLS_CONNS" \
    BENCH_THREADS="$BENCH_THREADS" \
    MAX_INFLIGHT="$MAX_INFLIGHT" MAX_QUEUED="$MAX_QUEUED" NOFILE="$NOFILE")

for sid in $SCENARIOS; do
    if ! scenario_args "$sid" >/dev/null; then
        log "unknown scenario $sid"; continue
    fi
    if [ "$SECONDS" -ge "$TIME_BUDGET" ]; then
        NOTES+=("$sid skipped: the time budget of $TIME_BUDGET s was used up.")
        continue
    fi
    for rnd in $(seq 1 "$ROUNDS"); do
        order=$BROKERS
        if [ $((rnd % 2)) = 0 ]; then order=$(echo "$BROKERS" | awk '{for (i=NF;i>0;i--) printf "%s ", $i}'); fi
        for broker in $order; do run_one "$broker" "$sid" "$rnd"; done
    done
done

NOTES+=("Both brokers and the bench share this machine's $(nproc) cores (the bench and the broker each need a core); other processes running at the same time move the figures, so compare the two columns of one run rather than runs of different days.")
NOTES+=("Unpaced runs measure what the subscribers received per second. Their publishers stay at most 5,000 deliveries ahead of the subscribers (starling-bench --backlog), so the broker always has work queued and the latency of those runs is mostly that queue; broker latency is compared at a fixed offered rate (pairs-q1-lat).")
NOTES+=("Compare broker CPU with run time: a broker that used much less CPU than the run lasted was waiting for the bench (which has one core here), so its throughput figure is a lower bound.")
NOTES+=("connstorm and idle spend most of their time in the kernel's TCP connection set-up and tear-down, which on loopback is charged to the bench as much as to the broker: with both on 2 cores the ratio understates the difference between brokers.")
NOTES+=("connstorm-tls: both brokers listen for TLS with the same throwaway self-signed ECDSA P-256 certificate (openssl, made for the run; Mosquitto: listener + certfile/keyfile and its TLS defaults; Starling: tls_port and its defaults); the bench verifies the certificate and makes a full handshake per connection (no session resumption), so the figure is dominated by public-key work on both sides of the loopback, the bench's included.")
NOTES+=("Mosquitto runs with persistence off; Starling with its memory store (single node), or a local redis-server started for the run (persist-redis, crossnode*). persist measures deliveries queued for offline persistent sessions per second of publishing (until every PUBACK arrived); the rate at which the reconnected sessions drain is the delivered msgs/s row. persist-redis is the same load with every queued delivery written to Redis before the publisher's PUBACK (Mosquitto keeps it in memory either way).")
NOTES+=("ppairs is pairs of persistent sessions (clean session 0 on both sides, every subscriber online, QoS 1, publisher window 32): each delivery is queued in the subscriber's stored session before the publisher's PUBACK, its packet id is recorded before it is sent, and it is removed on the subscriber's PUBACK. ppairs runs Starling on its memory store (single node): that Starling figure is the reference for ppairs-redis, the same load with the store in a local redis-server. The Mosquitto column of both is Mosquitto with persistence off. store calls per delivered message: the script calls (EVALSHA, one per store request) the redis-server ran during the run, set-up and clean-up included; redis commands per delivered message: every command it executed, those inside the scripts included (INFO commandstats).")
NOTES+=("Mosquitto crossnode is two Mosquitto brokers joined by a bridge (topic sb/# in 0), the nearest it has to a cluster. crossnode-nobatch is Starling's crossnode with cluster_batch off (one store PUBLISH per message instead of one per node and event-loop pass); its Mosquitto column is the same bridge.")
NOTES+=("Raw results of this run: bench/$(basename "$RESDIR")/results.jsonl, one JSON line per run (kept on the machine that ran it, not committed).")

write_report "$MACHINE"
log "wrote $OUT (total $SECONDS s)"
