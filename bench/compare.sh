#!/usr/bin/env bash
# Compares `tcpkit serve` with the reference echo servers (see
# ../shared/anchors/README.md), the anchors' way: each server pinned to CPU 0
# with `taskset -c 0`, the same `tcpkit bench --json` workloads pinned to CPU 1,
# server CPU time per message from /proc/PID/stat. Servers alternate within
# each round; every cell is the median of the rounds (>= 3).
#
# Usage: bench/compare.sh [--quick]
#   --quick      4 workloads, 1 s windows (under 2 minutes)
#   --table=FILE only print the table of an earlier run's results (JSON lines)
# Environment:
#   ANCHORS      directory with build.sh (default: $REPO/../shared/anchors)
#   ROUNDS       rounds (default 3); DURATION / WARMUP (default 3s / 1s)
#   SERVERS      space-separated subset of: asio asio_blocking tokio epoll tcpkit tcpkit_base
#   ONLY         run only workloads whose name matches this grep -E pattern (e.g. '64 KiB',
#                '1 % active' for 10,000 connections of which 100 are active)
#   TCPKIT_SERVE tcpkit binary whose `serve` is measured (default: this repo's release build)
#   TCPKIT_BASE  another tcpkit binary, measured as server "tcpkit_base" (before/after in one run)
#   RESULTS      JSON lines of every run go here (default target/compare/results.jsonl)
# Prints one markdown table on stdout; progress on stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_NAME=compare
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
ANCHORS=${ANCHORS:-$REPO/../shared/anchors}
QUICK=0
TABLE_ONLY=
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    --table=*) TABLE_ONLY=${arg#--table=} ;;
    -h|--help) sed -n "2,20p" "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
ROUNDS=${ROUNDS:-3}
if ((QUICK)); then
  DURATION=${DURATION:-1s}; WARMUP=${WARMUP:-300ms}
else
  DURATION=${DURATION:-3s}; WARMUP=${WARMUP:-1s}
fi
SERVERS=${SERVERS:-asio asio_blocking tokio epoll tcpkit}
RESULTS=${RESULTS:-$REPO/target/compare/results.jsonl}
mkdir -p "$(dirname "$RESULTS")"

print_table() { # results.jsonl "servers..."
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
from collections import defaultdict

path, servers = sys.argv[1], sys.argv[2].split()
runs = defaultdict(list)
workloads = []
for line in open(path):
    r = json.loads(line)
    runs[(r["workload"], r["server"])].append(r)
    if r["workload"] not in workloads:
        workloads.append(r["workload"])

label = {"asio": "asio_echo (1 thread)", "asio_blocking": "asio_blocking_echo",
         "tokio": "tokio_echo (1 worker)", "epoll": "epoll_echo once (C)",
         "tcpkit": "tcpkit serve --workers 1", "tcpkit_base": "tcpkit serve, before (TCPKIT_BASE)"}

def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None

def p99(rs):
    vals = [r["latency_us"]["p99"] for r in rs if r["latency_us"]["count"]]
    return statistics.median(vals) if vals else None

def spread(rs, key):
    vals = sorted(r[key] for r in rs if r.get(key) is not None)
    if not vals:
        return "—"
    m = statistics.median(vals)
    return f"{m:.2f} ({vals[0]:.1f}–{vals[-1]:.1f})" if len(vals) > 1 else f"{m:.2f}"

def fmt(v, spec):
    return "—" if v is None else format(v, spec)

print("| workload | server | runs | msgs/s | MB/s | p99 µs | server µs/msg, median (min–max) | client µs/msg | RSS/conn KiB | errors | tcpkit ÷ this |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for w in workloads:
    idle = "idle" in w
    key = "server_rss_per_conn_kib" if idle else "server_cpu_us_per_msg"
    ours = med(runs.get((w, "tcpkit"), []), key)
    for s in servers:
        rs = runs.get((w, s), [])
        if not rs:
            continue
        mine = med(rs, key)
        if s == "tcpkit":
            ratio = "1.00"
        elif ours is not None and mine is not None and mine < 0.05:
            ratio = "— (≈ 0)"
        elif ours is not None and mine:
            ratio = f"{ours / mine:.2f}"
        else:
            ratio = "pending"
        errors = sum(r["errors"] + r["connect_failures"] + r.get("idle_connect_failures", 0) for r in rs)
        # Idle runs count connections, not traffic: only RSS/conn means something.
        traffic = (lambda v: None) if idle else (lambda v: v)
        print(f"| {w} | {label.get(s, s)} | {len(rs)} | {fmt(traffic(med(rs, 'msgs_per_s')), ',.0f')} "
              f"| {fmt(traffic(med(rs, 'mb_per_s')), ',.1f')} | {fmt(traffic(p99(rs)), '.0f')} "
              f"| {spread(rs, 'server_cpu_us_per_msg') if not idle else '—'} "
              f"| {fmt(traffic(med(rs, 'client_cpu_us_per_msg')), '.2f')} "
              f"| {fmt(med(rs, 'server_rss_per_conn_kib') if idle else None, '.2f')} | {errors} | {ratio} |")
PY
}

if [[ -n $TABLE_ONLY ]]; then
  print_table "$TABLE_ONLY" "${SERVERS}"
  exit 0
fi

# --- packages (taskset, jq, python3; build.sh installs g++ and Boost) ---------
need_tools taskset:util-linux jq:jq python3:python3
need_cpus 2

: >"$RESULTS"

# --- build ----------------------------------------------------------------------
OUT=$REPO/target/anchors
log "building reference servers into $OUT"
OUT=$OUT bash "$ANCHORS/build.sh" >/dev/null
log "building tcpkit (release)"
cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
TCPKIT=$REPO/target/release/tcpkit
TCPKIT_SERVE=${TCPKIT_SERVE:-$TCPKIT}
# 10,000 connections need descriptors on both sides (servers inherit this;
# tcpkit serve sizes its default --max-connections from it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- processes we start, stopped by PID on any exit (bench/lib.sh) -------------
trap stop_all EXIT
trap 'exit 130' INT TERM

# The command line of server $1 on port $2 (one thread/worker each).
server_cmd() {
  case $1 in
    asio) echo "$OUT/asio_echo $2 1" ;;
    asio_blocking) echo "$OUT/asio_blocking_echo $2" ;;
    tokio) echo "$OUT/tokio_echo $2 1" ;;
    epoll) echo "$OUT/epoll_echo $2 once" ;;
    tcpkit) echo "$TCPKIT_SERVE serve --listen 127.0.0.1:$2 --mode echo --workers 1 --backlog 1024" ;;
    tcpkit_base) echo "${TCPKIT_BASE:?set TCPKIT_BASE} serve --listen 127.0.0.1:$2 --mode echo --workers 1 --backlog 1024" ;;
  esac
}

SERVER_PID=
start_server() { # name port
  # shellcheck disable=SC2046
  taskset -c 0 $(server_cmd "$1" "$2") >/dev/null 2>&1 &
  SERVER_PID=$!
  track "$SERVER_PID"
  wait_port "$2" "$SERVER_PID"
}

stop_server() { stop_pid "$1"; } # SIGTERM, 5 s to exit, then SIGKILL

# --- workloads: name | bench arguments [| duration | warm-up] ---------------------
if ((QUICK)); then
  WORKLOADS=(
    "50 × 64 B|-c 50 -s 64"
    "10 × 64 KiB|-c 10 -s 65536"
    "connect rate|--mode connect -c 50 -s 64"
    "5,000 idle|--mode idle -c 5000|1s|0s"
  )
else
  WORKLOADS=(
    "1 × 64 B|-c 1 -s 64"
    "50 × 64 B|-c 50 -s 64"
    "50 × 4 KiB|-c 50 -s 4096"
    "10 × 64 KiB|-c 10 -s 65536"
    "1,000 × 64 B|-c 1000 -s 64"
    "connect rate|--mode connect -c 50 -s 64"
    "5,000 idle|--mode idle -c 5000|2s|0s"
    # Issue 6: 9,900 connections echo one byte and stay silent (opened
    # before the warm-up, not counted) beside 100 in a closed 64 B loop.
    "10,000 × 1 % active|-c 100 --idle-connections 9900 -s 64"
  )
fi

mapfile -t WORKLOADS < <(keep_only "${ONLY:-}" "${WORKLOADS[@]}")

# tcpkit serve may not exist yet in this build: probe once.
servers=()
for s in $SERVERS; do
  if [[ $s == tcpkit ]]; then
    port=$(free_port)
    if start_server tcpkit "$port"; then
      servers+=(tcpkit)
    else
      log "tcpkit serve did not start (not in this build?): its rows are skipped"
    fi
    stop_server "$SERVER_PID"
  else
    servers+=("$s")
  fi
done

started=$(date +%s)
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name args dur warm <<<"$w"
    dur=${dur:-$DURATION}
    warm=${warm:-$WARMUP}
    # Alternate the order of servers from round to round.
    mapfile -t order < <(reversed_if_even "$round" "${servers[@]}")
    for s in "${order[@]}"; do
      port=$(free_port)
      if ! start_server "$s" "$port"; then
        log "round $round: $s did not start on port $port"
        stop_server "$SERVER_PID"
        continue
      fi
      log "round $round/$ROUNDS  $name  $s"
      # shellcheck disable=SC2086
      if json=$(taskset -c 1 "$TCPKIT" -q bench --target "127.0.0.1:$port" --server-pid "$SERVER_PID" \
        --client-cpu 1 --json -d "$dur" --warmup "$warm" $args); then
        jq -c --arg server "$s" --arg workload "$name" --argjson round "$round" \
          '. + {server: $server, workload: $workload, round: $round}' <<<"$json" >>"$RESULTS"
      else
        log "round $round: bench against $s failed (exit $?)"
      fi
      stop_server "$SERVER_PID"
    done
  done
done
log "done in $(($(date +%s) - started)) s; raw results in $RESULTS"

print_table "$RESULTS" "${servers[*]}"
