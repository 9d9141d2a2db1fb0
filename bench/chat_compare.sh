#!/usr/bin/env bash
# Chat fan-out against the anchors (issue 14 item 2): tcpkit serve --mode
# chat vs `ncat --chat` (Debian 7.93) vs the Boost.Asio chat example
# (bench/anchors/build_chat.sh), same load, same verifier.
#
# Every server runs pinned to CPU 0 (`taskset -c 0`), the load generator
# (`tcpkit bench --mode chat --threads 1`) to CPU 1. Shapes: 1 room × 100
# clients and 100 rooms × 10 clients. ncat and Asio have one room per
# server: ncat runs one process per room (100 processes, their CPU summed:
# they are children of one shell whose PID goes to --server-pid, and the
# bench sums a PID's descendants); the Asio example takes one port per room
# in one process and thread. tcpkit runs one process and names the rooms.
#
# Load: open loop at a fixed rate every server sustains (RATE_1 / RATE_100
# lines said per second over all senders), so that CPU per delivered line
# and latency compare at the same work; and closed loop (1 line in flight
# per sender) for the most each delivers. Each case ROUNDS times,
# servers alternating within a round; medians. Then the slow-reader case:
# 1 room of SLOW_CLIENTS of which client 0 joins and never reads (4 KiB
# receive buffer), open loop at RATE_SLOW lines/s of SLOW_SIZE bytes for
# SLOW_DURATION: big lines, so that even a server whose kernel send buffer
# toward the slow reader grows to 4 MiB (tcp_wmem's maximum here) fills it
# within the run.
#
# Usage: bench/chat_compare.sh        (about 6 minutes with the defaults)
# Environment:
#   ROUNDS (3) DURATION (4s) WARMUP (1s) RATE_1 (200) RATE_100 (2000)
#   SLOW_CLIENTS (20) RATE_SLOW (2000) SLOW_SIZE (500) SLOW_DURATION (10s)
#   SERVERS ("tcpkit ncat asio")
#   RESULTS (target/chat_compare/results.jsonl)
# Prints markdown tables on stdout; progress on stderr. Not run by CI.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-1s}
RATE_1=${RATE_1:-200}
RATE_100=${RATE_100:-2000}
SLOW_CLIENTS=${SLOW_CLIENTS:-20}
RATE_SLOW=${RATE_SLOW:-2000}
SLOW_SIZE=${SLOW_SIZE:-500}
SLOW_DURATION=${SLOW_DURATION:-10s}
SERVERS=${SERVERS:-tcpkit ncat asio}
RESULTS=${RESULTS:-$REPO/target/chat_compare/results.jsonl}
TCPKIT=${TCPKIT:-$REPO/target/release/tcpkit}
ASIO=${ASIO:-$(bash "$REPO/bench/anchors/build_chat.sh" | tail -1)}
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
log() { echo "chat_compare: $*" >&2; }
[[ -x $TCPKIT ]] || { log "build $TCPKIT first (cargo build --release)"; exit 1; }
command -v ncat >/dev/null || { log "ncat is not installed (apt-get install ncat)"; exit 1; }

# shellcheck source=bench/chat_lib.sh
. "$REPO/bench/chat_lib.sh"

# start SERVER ROOMS: starts the server(s) on CPU 0 in the background; sets
# PID (whose process tree is measured) and TARGETS (comma-separated).
start() {
  local server=$1 rooms=$2 want=1 ports
  case $server in
    tcpkit)
      taskset -c 0 "$TCPKIT" serve --listen 127.0.0.1:0 --mode chat --workers 1 \
        --backlog 1024 >/dev/null 2>&1 &
      ;;
    ncat)
      want=$rooms
      # shellcheck disable=SC2016 # expanded by the inner shell
  taskset -c 0 bash -c 'for _ in $(seq "$1"); do
          ncat --chat --max-conns 1000 -l 127.0.0.1 0 </dev/null >/dev/null 2>&1 &
        done; wait' _ "$rooms" &
      ;;
    asio)
      want=$rooms
      # shellcheck disable=SC2046
      taskset -c 0 "$ASIO" $(yes 0 | head -n "$rooms") >/dev/null 2>&1 &
      ;;
  esac
  PID=$!
  for _ in $(seq 200); do
    ports=$(ports_of "$PID")
    [[ $(grep -c . <<<"$ports") -ge $want ]] && break
    sleep 0.05
  done
  [[ $(grep -c . <<<"$ports") -ge $want ]] || { log "$server did not listen"; stop; exit 1; }
  TARGETS=$(awk '{print "127.0.0.1:" $1}' <<<"$ports" | paste -sd,)
}

stop() { stop_tree "$PID"; }

# run LABEL SERVER ROOMS CLIENTS [bench args...]: one run, its JSON
# report (with label and server) appended to RESULTS.
run() {
  local label=$1 server=$2 rooms=$3 clients=$4 out
  shift 4
  start "$server" "$rooms"
  log "$label / $server: $rooms room(s) × $((clients / rooms)) on ${TARGETS:0:60}... (pid $PID)"
  out=$(taskset -c 1 "$TCPKIT" bench --mode chat --chat-protocol "$server" \
    --target "$TARGETS" --server-pid "$PID" -c "$clients" --rooms "$rooms" \
    --threads 1 --connect-timeout 20s --json "$@" || true)
  stop
  [[ -n $out ]] || { log "$label / $server: no report"; return; }
  python3 -c 'import json,sys; r=json.loads(sys.argv[3]); r["label"]=sys.argv[1]; r["server"]=sys.argv[2]; print(json.dumps(r))' \
    "$label" "$server" "$out" >>"$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  for s in $SERVERS; do
    run "1 × 100 open $RATE_1/s" "$s" 1 100 -d "$DURATION" --warmup "$WARMUP" --rate "$RATE_1"
    run "100 × 10 open $RATE_100/s" "$s" 100 1000 -d "$DURATION" --warmup "$WARMUP" --rate "$RATE_100"
    run "1 × 100 closed" "$s" 1 100 -d "$DURATION" --warmup "$WARMUP"
    run "100 × 10 closed" "$s" 100 1000 -d "$DURATION" --warmup "$WARMUP"
  done
done
for s in $SERVERS; do
  run "slow reader: 1 × $SLOW_CLIENTS, 1 never reads, $RATE_SLOW × $SLOW_SIZE B/s" "$s" 1 "$SLOW_CLIENTS" \
    --slow-readers 1 -s "$SLOW_SIZE" -d "$SLOW_DURATION" --warmup 0s --rate "$RATE_SLOW"
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["label"], r["server"])].append(r)
def med(rs, f):
    return statistics.median(f(r) for r in rs)
labels = list(dict.fromkeys(k[0] for k in runs))
print("| case | server | runs | delivered lines/s | p50 µs | p99 µs | server µs CPU / delivered line | server CPU % | verification failures |")
print("|---|---|---|---|---|---|---|---|---|")
for label in labels:
    if label.startswith("slow"):
        continue
    for (l, s), rs in runs.items():
        if l != label:
            continue
        print(f"| {label} | {s} | {len(rs)} | {med(rs, lambda r: r['delivered_per_s']):.0f} "
              f"| {med(rs, lambda r: r['latency_us']['p50']):.0f} | {med(rs, lambda r: r['latency_us']['p99']):.0f} "
              f"| {med(rs, lambda r: r['server_cpu_us_per_delivered'] or 0):.2f} "
              f"| {med(rs, lambda r: r['server_cpu_pct'] or 0):.0f} | {sum(r['verification_failures'] for r in rs)} |")
print()
print("| slow reader | server | lines said | deliveries owed to the others | received | lost | p99 µs | slow reader dropped (notices) | stalled senders | server RSS KiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (l, s), rs in runs.items():
    if not l.startswith("slow"):
        continue
    for r in rs:
        print(f"| {l} | {s} | {r['lines_sent']} | {r['expected_deliveries']} | {r['delivered']} | {r['lost']} "
              f"| {r['latency_us']['p99']:.0f} | {'yes' if r['slow_drop_notices'] else 'no'} ({r['slow_drop_notices']}) "
              f"| {r['stalled_senders']} | {r['server_rss_kib']} |")
PY
