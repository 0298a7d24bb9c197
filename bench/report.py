#!/usr/bin/env python3
"""report.py - turn compare.sh's results into bench/RESULTS.md.

Usage: report.py RESULTS.jsonl FACTS.json > RESULTS.md

RESULTS.jsonl holds one line per run: starling-bench's --json line plus
"broker" (starling | mosquitto), "id" (the compare.sh scenario id), "round"
and "command". FACTS.json holds the machine facts and settings compare.sh
collected. Each scenario gets a table of min / median / max over its rounds
for both brokers and the ratio of the medians; the targets the broker must
meet are checked against the medians.
"""
import json
import os
import statistics
import sys

# id -> (title, primary figure, unit, how the target reads, target check)
# check(s, m, all_medians) returns True/False, or None when not decidable.
SCENARIOS = {
    "pairs-q0": ("QoS 0 pairs, unpaced", "delivered_per_s", "msgs/s",
                 "Starling >= 1.5x Mosquitto delivered msgs/s",
                 lambda s, m, a: s >= 1.5 * m),
    "fanin-q0": ("QoS 0 fan-in, unpaced", "delivered_per_s", "msgs/s",
                 "Starling >= 1.5x Mosquitto delivered msgs/s",
                 lambda s, m, a: s >= 1.5 * m),
    "fanout-q0": ("QoS 0 fan-out, unpaced", "delivered_per_s", "msgs/s",
                  "Starling >= 1.3x Mosquitto delivered msgs/s",
                  lambda s, m, a: s >= 1.3 * m),
    "pairs-q1": ("QoS 1 pairs, unpaced (inflight window)", "delivered_per_s",
                 "msgs/s", "Starling >= 1.5x Mosquitto delivered msgs/s",
                 lambda s, m, a: s >= 1.5 * m),
    "pairs-q1-lat": ("QoS 1 pairs at a fixed offered rate", "lat_p99_us", "us",
                     "Starling p99 latency <= Mosquitto's at the same rate",
                     lambda s, m, a: s <= m),
    "wildcard-q1": ("QoS 1 wildcard subscriptions, paced", "delivered_per_s",
                    "msgs/s", "(no target; correctness of + and # matching)",
                    None),
    "connstorm": ("connection storm: CONNECT/CONNACK/DISCONNECT",
                  "connects_per_s", "connects/s",
                  "Starling connects/s >= Mosquitto's",
                  lambda s, m, a: s >= m),
    "connstorm-tls": ("TLS connection storm: TCP + TLS handshake (full, "
                      "ECDSA P-256) + CONNECT/CONNACK/DISCONNECT",
                      "connects_per_s", "connects/s",
                      "Starling connects/s >= Mosquitto's",
                      lambda s, m, a: s >= m),
    "pairs-q1-ws": ("QoS 1 pairs over WebSocket, unpaced", "delivered_per_s",
                    "msgs/s", "(no target; compare with pairs-q1)", None),
    "connstorm-ws": ("WebSocket connection storm: TCP + HTTP upgrade + "
                     "CONNECT/CONNACK/DISCONNECT", "connects_per_s",
                     "connects/s", "(no target; compare with connstorm)",
                     None),
    "idle": ("idle connections held", "rss_per_conn_bytes", "bytes/conn",
             "Starling memory per connection <= Mosquitto's",
             lambda s, m, a: s <= m),
    "persist": ("persistent QoS 1 fan-out, Starling's memory store",
                "persisted_per_s", "deliveries/s",
                "(no target; the store's share of the cost is persist-redis)",
                None),
    "persist-redis": ("persistent QoS 1 fan-out through a local redis-server",
                      "persisted_per_s", "deliveries/s",
                      "Starling >= 100,000 persisted deliveries/s",
                      lambda s, m, a: s >= 100000),
    "ppairs": ("persistent QoS 1 pairs, subscribers online, Starling's "
               "memory store", "delivered_per_s", "msgs/s",
               "(no target; the reference for ppairs-redis)", None),
    "ppairs-redis": ("persistent QoS 1 pairs, subscribers online, through a "
                     "local redis-server", "delivered_per_s", "msgs/s",
                     "(no target; against Starling's memory store: ppairs)",
                     None),
    "crossnode": ("cross-node pairs (Starling: 2 nodes + Redis; Mosquitto: "
                  "2 bridged brokers)", "delivered_per_s", "msgs/s",
                  "Starling cross-node >= 50% of Starling single-node QoS 0 "
                  "pairs", lambda s, m, a: (s >= 0.5 * a["pairs-q0"]
                                            if a.get("pairs-q0") else None)),
    "crossnode-nobatch": ("cross-node pairs with cluster_batch off",
                          "delivered_per_s", "msgs/s",
                          "(no target; what batching buys: compare with "
                          "crossnode)", None),
}

SECONDARY = [
    ("delivered_per_s", "delivered msgs/s", 0),
    ("msgs_per_cpu_s", "deliveries per broker CPU-second", 0),
    ("lat_p50_us", "latency p50 (ms)", 3),
    ("lat_p99_us", "latency p99 (ms)", 3),
    ("lat_p999_us", "latency p99.9 (ms)", 3),
    ("broker_cpu_s", "broker CPU (s)", 2),
    ("bench_cpu_s", "bench CPU (s)", 2),
    ("elapsed_s", "run time (s)", 2),
    ("store_calls_per_msg", "store calls (script calls) per delivered message",
     3),
    ("store_cmds_per_msg", "redis commands per delivered message (inside "
     "scripts included)", 2),
]


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def derived(run):
    cpu = run.get("broker_cpu_s") or 0
    run["msgs_per_cpu_s"] = run.get("received", 0) / cpu if cpu > 0 else None
    return run


def values(runs, key):
    return [r[key] for r in runs if r.get(key) is not None]


def triple(vals, digits=0, scale=1.0):
    if not vals:
        return "n/a"
    vals = [v * scale for v in vals]
    return " / ".join(fmt(x, digits) for x in
                      (min(vals), statistics.median(vals), max(vals)))


def median(vals):
    return statistics.median(vals) if vals else None


def ok_runs(rows, sid, broker):
    return [r for r in rows if r["id"] == sid and r["broker"] == broker
            and r.get("ok")]


def all_runs(rows, sid, broker):
    return [r for r in rows if r["id"] == sid and r["broker"] == broker]


def failures(runs):
    bad = [r for r in runs if not r.get("ok")]
    if not bad:
        return ""
    why = sorted({(r.get("verdict") or "failed") +
                  (": " + r["error"] if r.get("error") else "") for r in bad})
    return f"{len(bad)} of {len(runs)} runs failed ({'; '.join(why)})"


def scale_for(key):
    return 1e-3 if key.endswith("_us") else 1.0


def unit_for(key, unit):
    return "ms" if key.endswith("_us") else unit


def summary_row(rows, sid, medians):
    title, key, unit, target, check = SCENARIOS[sid]
    s = median(values(ok_runs(rows, sid, "starling"), key))
    m = median(values(ok_runs(rows, sid, "mosquitto"), key))
    sc = scale_for(key)
    ratio = f"{s / m:.2f}x" if s is not None and m else "n/a"
    met = "n/a"
    if check is not None and s is not None and (m or sid == "persist-redis"
                                                or sid == "crossnode"):
        res = check(s, m or 0, medians)
        met = "n/a" if res is None else ("yes" if res else "**no**")
    u = unit_for(key, unit)

    def cell(v, broker):
        if v is None:
            return "failed" if all_runs(rows, sid, broker) else "n/a"
        return f"{fmt(v * sc, 3 if sc != 1 else 0)} {u}"
    return (f"| {sid} | {target} | {cell(s, 'starling')} "
            f"| {cell(m, 'mosquitto')} | {ratio} | {met} |")


def scenario_section(rows, sid, commands):
    title, key, unit, target, _ = SCENARIOS[sid]
    out = [f"### {sid}: {title}", "", f"Target: {target}.", ""]
    st, mo = ok_runs(rows, sid, "starling"), ok_runs(rows, sid, "mosquitto")
    out.append("| figure | Starling min / median / max | "
               "Mosquitto min / median / max | Starling / Mosquitto |")
    out.append("|---|---|---|---|")
    keys = [(key, f"**{unit_for(key, unit)}** ({key})",
             3 if key.endswith("_us") else 0)]
    keys += [k for k in SECONDARY if k[0] != key]
    if sid.startswith("persist"):
        # Latency there includes the time the subscribers were away.
        keys = [k for k in keys if not k[0].startswith("lat_")]
    if sid in ("connstorm", "connstorm-tls", "connstorm-ws", "idle"):
        keys += [("connack_p50_us", "CONNACK p50 (ms)", 3),
                 ("connack_p99_us", "CONNACK p99 (ms)", 3)]
    for k, label, digits in keys:
        sv, mv = values(st, k), values(mo, k)
        if not sv and not mv:
            continue
        if all(v == 0 for v in sv + mv):
            continue
        sc = scale_for(k)
        ratio = (f"{median(sv) / median(mv):.2f}x"
                 if sv and mv and median(mv) else "n/a")
        out.append(f"| {label} | {triple(sv, digits, sc)} | "
                   f"{triple(mv, digits, sc)} | {ratio} |")
    for name, runs in (("Starling", all_runs(rows, sid, "starling")),
                       ("Mosquitto", all_runs(rows, sid, "mosquitto"))):
        lost = sum(r.get("lost", 0) for r in runs)
        dups = sum(r.get("dups", 0) for r in runs)
        exp = sum(r.get("expected", 0) for r in runs)
        line = f"- {name}: runs {len(runs)}"
        if exp:
            line += f", expected {exp:,} deliveries, lost {lost:,}, dups {dups:,}"
        f = failures(runs)
        if f:
            line += f"; {f}"
        out.append(line)
    if sid in commands:
        out += ["", "```", commands[sid], "```"]
    out.append("")
    return out


def main():
    rows = [derived(json.loads(l)) for l in open(sys.argv[1]) if l.strip()]
    facts = json.load(open(sys.argv[2]))
    ids = [i for i in facts.get("scenarios", []) if i in SCENARIOS]
    medians = {sid: median(values(ok_runs(rows, sid, "starling"),
                                  SCENARIOS[sid][1])) for sid in ids}
    p = []
    p += ["# Starling vs Mosquitto", "",
          "Generated by `bench/compare.sh`; do not edit by hand "
          "(re-run it instead).", ""]
    p += ["## Machine and settings", ""]
    for k, v in facts.get("machine", {}).items():
        p.append(f"- {k}: {v}")
    p.append("")
    p += ["## Summary (medians over the rounds)", "",
          "| scenario | target | Starling | Mosquitto | ratio | met |",
          "|---|---|---|---|---|---|"]
    for sid in ids:
        p.append(summary_row(rows, sid, medians))
    p.append("")
    notes = facts.get("notes", [])
    if notes:
        p += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    p += ["## Scenarios", ""]
    for sid in ids:
        p += scenario_section(rows, sid, facts.get("commands", {}))
    # What the profiles showed and what was changed for it: written by hand
    # in bench/PROFILE.md, carried into every report.
    prof = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "PROFILE.md")
    if os.path.exists(prof):
        p += ["", open(prof).read().rstrip(), ""]
    sys.stdout.write("\n".join(p))


if __name__ == "__main__":
    main()
