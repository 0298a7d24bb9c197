#!/usr/bin/env bash
# smoke.sh - every starling-bench scenario, briefly, with exact counts.
#
# Not a benchmark: each case runs for well under a few seconds at a modest
# paced rate and must deliver every message exactly as expected (zero loss
# even at QoS 0, no QoS 2 duplicates, connection counts met). The expected
# counts are worked out here, independently of the bench's own oracle.
#
# Usage:
#   bench/smoke.sh [--broker BIN] [--port PORT [--sub-port PORT]
#                  [--tls-port PORT --cafile FILE] [--ws-port PORT]
#                  [--wss-port PORT]] [--bench BIN]
#
#   --broker BIN   broker to start on a free loopback port, with TLS,
#                  WebSocket and secure WebSocket listeners on others (a
#                  throwaway certificate made by openssl) (default
#                  build/starling; a path ending in "mosquitto" gets a
#                  generated Mosquitto config)
#   --port PORT    use a broker already listening on 127.0.0.1:PORT instead
#   --sub-port P   crossnode: second node for the subscribers (default: the
#                  same broker)
#   --tls-port P   with --port: that broker's TLS port (the TLS cases are
#                  skipped without it), its certificate verified with
#                  --cafile FILE
#   --ws-port P    with --port: that broker's WebSocket port, and
#   --wss-port P   its secure WebSocket port (their cases are skipped
#                  without them)
#   --bench BIN    default build/bench/starling-bench
#
# Prints one line per case and "N passed, N failed"; exits 1 on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BROKER=$ROOT/build/starling
BENCH=$ROOT/build/bench/starling-bench
PORT=""
SUB_PORT=""
TLS_PORT=""
CAFILE=""
WS_PORT=""
WSS_PORT=""
while [ $# -gt 0 ]; do
    case $1 in
    --broker) BROKER=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --sub-port) SUB_PORT=$2; shift 2 ;;
    --tls-port) TLS_PORT=$2; shift 2 ;;
    --cafile) CAFILE=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    --ws-port) WS_PORT=$2; shift 2 ;;
    --wss-port) WSS_PORT=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "smoke: unknown argument $1" >&2; exit 64 ;;
    esac
done

[ -x "$BENCH" ] || { echo "smoke: no bench binary $BENCH" >&2; exit 1; }
TMP=$(mktemp -d)
chmod 755 "$TMP"
BROKER_PID=""

cleanup() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 50); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2).close()" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A self-signed certificate for 127.0.0.1; CAFILE is the certificate itself.
tls_material() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$TMP/tls.key" -out "$TMP/tls.pem" >"$TMP/openssl.log" 2>&1 || {
        echo "smoke: openssl could not make a certificate" >&2
        cat "$TMP/openssl.log" >&2
        exit 1
    }
    # Mosquitto started as root reads it as user mosquitto (throwaway key).
    chmod 644 "$TMP/tls.key" "$TMP/tls.pem"
    CAFILE=$TMP/tls.pem
}

start_broker() {
    PORT=$(free_port)
    TLS_PORT=$(free_port)
    WS_PORT=$(free_port)
    WSS_PORT=$(free_port)
    tls_material
    case $BROKER in
    *mosquitto)
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nlog_dest stderr\nlog_type error\n' \
            "$PORT" >"$TMP/mosquitto.conf"
        printf 'listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\n' \
            "$TLS_PORT" "$TMP/tls.pem" "$TMP/tls.key" >>"$TMP/mosquitto.conf"
        printf 'listener %s 127.0.0.1\nprotocol websockets\n' \
            "$WS_PORT" >>"$TMP/mosquitto.conf"
        printf 'listener %s 127.0.0.1\nprotocol websockets\ncertfile %s\nkeyfile %s\n' \
            "$WSS_PORT" "$TMP/tls.pem" "$TMP/tls.key" >>"$TMP/mosquitto.conf"
        "$BROKER" -c "$TMP/mosquitto.conf" >"$TMP/broker.log" 2>&1 &
        ;;
    *)
        "$BROKER" --bind 127.0.0.1 --port "$PORT" --log_level warning \
            --tls_port "$TLS_PORT" --tls_cert_file "$TMP/tls.pem" \
            --tls_key_file "$TMP/tls.key" --ws_port "$WS_PORT" \
            --wss_port "$WSS_PORT" >"$TMP/broker.log" 2>&1 &
        ;;
    esac
    BROKER_PID=$!
    if ! wait_port "$PORT" || ! wait_port "$TLS_PORT" ||
        ! wait_port "$WS_PORT" || ! wait_port "$WSS_PORT"; then
        echo "smoke: $BROKER did not start on port $PORT" >&2
        cat "$TMP/broker.log" >&2
        exit 1
    fi
}

if [ -z "$PORT" ]; then
    [ -x "$BROKER" ] || { echo "smoke: no broker binary $BROKER" >&2; exit 1; }
    start_broker
fi
[ -n "$SUB_PORT" ] || SUB_PORT=$PORT
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# Deliveries the wildcard scenario must make: 8 publishers on
# r<i%4>/d<i>/t, subscriber j on one of seven filter shapes.
wildcard_expected() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
pubs, subs, msgs = map(int, sys.argv[1:])
def match(f, t):
    f, t = f.split("/"), t.split("/")
    for i, lv in enumerate(f):
        if lv == "#":
            return True
        if i >= len(t) or (lv != "+" and lv != t[i]):
            return False
    return len(f) == len(t)
topics = ["w/r%d/d%d/t" % (i % 4, i) for i in range(pubs)]
def filt(j):
    r, d = j % 4, j % pubs
    return ["w/r%d/+/t" % r, "w/#", "w/+/d%d/t" % d, "w/r%d/#" % r,
            "w/+/+/+", "w/+/d%d/#" % d, "w/r%d/d%d/x" % (r, d)][j % 7]
print(sum(msgs for j in range(subs) for t in topics if match(filt(j), t)))
EOF
}

PASS=0
FAIL=0

# case NAME EXPECTED FIELD ARGS... : run, then require exit 0 and
# FIELD == EXPECTED (and unique == expected for message scenarios).
case_run() {
    local name=$1 want=$2 field=$3; shift 3
    local out=$TMP/out.json rc why
    timeout 60 "$BENCH" --host 127.0.0.1 --port "$PORT" --json --strict \
        --timeout 30 --threads 2 "$@" >"$out" 2>"$TMP/err"
    rc=$?
    why=$(python3 - "$out" "$want" "$field" "$rc" <<'EOF'
import json, sys
path, want, field, rc = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
try:
    d = json.loads([l for l in open(path) if l.startswith("{")][-1])
except (IndexError, ValueError):
    print("no result (exit %d)" % rc); sys.exit()
bad = []
if rc != 0:
    bad.append("exit %d (%s%s)" % (rc, d.get("verdict"), ": " + d["error"] if d.get("error") else ""))
if d.get(field) != want:
    bad.append("%s %s, want %s" % (field, d.get(field), want))
if field == "expected" and d.get("unique") != want:
    bad.append("unique %s, want %s" % (d.get("unique"), want))
if d.get("lost") or d.get("unexpected"):
    bad.append("lost %s, unexpected %s" % (d.get("lost"), d.get("unexpected")))
if d.get("qos") == 2 and d.get("dups"):
    bad.append("dups %s at QoS 2" % d.get("dups"))
print("; ".join(bad))
EOF
)
    if [ -z "$why" ]; then
        PASS=$((PASS + 1)); echo "ok   $name"
    else
        FAIL=$((FAIL + 1)); echo "FAIL $name: $why"
        sed 's/^/     /' "$TMP/err" | head -5
    fi
}

case_run "pairs qos0 v3.1.1" 2500 expected --scenario pairs --pairs 5 --msgs 500 --rate 2000 --qos 0
case_run "pairs qos1 v5" 2500 expected --scenario pairs --pairs 5 --msgs 500 --rate 2000 --qos 1 --version 5
case_run "pairs qos2 v3.1.1" 2500 expected --scenario pairs --pairs 5 --msgs 500 --rate 2000 --qos 2
case_run "pairs qos1 unpaced" 10000 expected --scenario pairs --pairs 4 --msgs 2500 --qos 1
case_run "fanin qos1 wildcard" 1500 expected --scenario fanin --pubs 5 --msgs 300 --rate 1000 --qos 1
case_run "fanin qos2 same topic v5" 1500 expected --scenario fanin --pubs 5 --msgs 300 --rate 1000 --qos 2 --same-topic --version 5
case_run "fanout qos0 v5" 6000 expected --scenario fanout --subs 20 --msgs 300 --rate 1000 --qos 0 --version 5
case_run "fanout qos2" 6000 expected --scenario fanout --subs 20 --msgs 300 --rate 1000 --qos 2
case_run "wildcard qos1" "$(wildcard_expected 8 35 200)" expected --scenario wildcard --pubs 8 --subs 35 --msgs 200 --rate 500 --qos 1
case_run "wildcard qos0 v5" "$(wildcard_expected 8 35 200)" expected --scenario wildcard --pubs 8 --subs 35 --msgs 200 --rate 500 --qos 0 --version 5
case_run "connstorm v3.1.1" 500 connects --scenario connstorm --clients 500 --concurrency 20
case_run "connstorm v5" 500 connects --scenario connstorm --clients 500 --concurrency 20 --version 5
if [ -n "$TLS_PORT" ]; then
    tls=(--port "$TLS_PORT" --tls)
    [ -n "$CAFILE" ] && tls+=(--cafile "$CAFILE")
    case_run "connstorm tls v3.1.1" 300 connects --scenario connstorm --clients 300 --concurrency 20 "${tls[@]}"
    case_run "connstorm tls v5" 300 connects --scenario connstorm --clients 300 --concurrency 20 --version 5 "${tls[@]}"
    case_run "pairs qos2 tls" 1000 expected --scenario pairs --pairs 4 --msgs 250 --rate 2000 --qos 2 "${tls[@]}"
else
    echo "skip TLS cases (no --tls-port)"
fi
if [ -n "$WS_PORT" ]; then
    case_run "pairs qos1 ws v5" 2000 expected --scenario pairs --pairs 4 --msgs 500 --rate 2000 --qos 1 --version 5 --port "$WS_PORT" --ws
    case_run "connstorm ws" 300 connects --scenario connstorm --clients 300 --concurrency 20 --port "$WS_PORT" --ws
else
    echo "skip WebSocket cases (no --ws-port)"
fi
if [ -n "$WSS_PORT" ]; then
    wss=(--port "$WSS_PORT" --wss)
    [ -n "$CAFILE" ] && wss+=(--cafile "$CAFILE")
    case_run "pairs qos2 wss" 1000 expected --scenario pairs --pairs 4 --msgs 250 --rate 2000 --qos 2 "${wss[@]}"
    case_run "connstorm wss" 200 connects --scenario connstorm --clients 200 --concurrency 20 "${wss[@]}"
else
    echo "skip secure WebSocket cases (no --wss-port)"
fi
case_run "idle" 500 connects --scenario idle --clients 500 --duration 1
case_run "persist qos1" 1000 expected --scenario persist --subs 50 --pubs 10 --msgs 2 --qos 1
case_run "persist qos2 v5" 1000 expected --scenario persist --subs 50 --pubs 10 --msgs 2 --qos 2 --version 5
case_run "ppairs qos1" 1000 expected --scenario ppairs --pairs 4 --msgs 250 --qos 1
case_run "ppairs qos2 v5" 1000 expected --scenario ppairs --pairs 4 --msgs 250 --qos 2 --version 5
case_run "crossnode qos1" 2500 expected --scenario crossnode --pairs 5 --msgs 500 --rate 2000 --qos 1 --sub-port "$SUB_PORT"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
