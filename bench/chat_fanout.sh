#!/usr/bin/env bash
# Chat fan-out (issue 14 item 1): `tcpkit serve --mode chat --workers 1`
# pinned to CPU 0 with `taskset -c 0`, `tcpkit bench --mode chat --json`
# pinned to CPU 1 with --server-pid, in two shapes: 1 room × 100 clients and
# 100 rooms × 10 clients, each closed loop (1 line in flight per sender) and
# open loop (RATE_1 / RATE_100 lines/s in total). Every line is verified by
# every receiver; a failed run stops the script (bench exits non-zero).
#
# The server is started once per run (start_server), so rooms and queues
# start empty. The anchors (ncat --chat, the Boost.Asio chat example behind
# an adapter) are not run yet: they will be further cases of start_server
# (issue 14 item 2).
#
# Usage: bench/chat_fanout.sh
# Environment:
#   DURATION / WARMUP  window and warm-up (default 5s / 1s)
#   RATE_1 / RATE_100  open-loop lines/s for 1 room / 100 rooms (default 1000 / 10000)
#   RESULTS            JSON lines of every run (default target/chat_fanout/results.jsonl)
# Prints one markdown table on stdout; progress on stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RATE_1=${RATE_1:-1000}
RATE_100=${RATE_100:-10000}
RESULTS=${RESULTS:-$REPO/target/chat_fanout/results.jsonl}
TCPKIT=${TCPKIT:-$REPO/target/release/tcpkit}
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
log() { echo "chat_fanout: $*" >&2; }

start_server() { # stdout-file; runs in the background, pinned to CPU 0
  taskset -c 0 "$TCPKIT" serve --listen 127.0.0.1:0 --mode chat --workers 1 \
    --backlog 1024 >"$1" 2>/dev/null &
}

run() { # label rooms clients [bench args...]
  local label=$1 rooms=$2 clients=$3
  shift 3
  local out pid addr
  out=$(mktemp)
  start_server "$out"
  pid=$!
  for _ in $(seq 100); do
    addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$out" | awk '{print $3}' || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { log "server did not start"; kill "$pid"; exit 1; }
  log "$label: $rooms room(s) × $((clients / rooms)) clients on $addr (pid $pid)"
  taskset -c 1 "$TCPKIT" bench --mode chat --target "$addr" --server-pid "$pid" \
    -c "$clients" --rooms "$rooms" -d "$DURATION" --warmup "$WARMUP" --threads 1 \
    --json "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]=sys.argv[1]; print(json.dumps(r))' "$label" \
      >>"$RESULTS"
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$out"
}

run "1 × 100 closed" 1 100
run "1 × 100 open" 1 100 --rate "$RATE_1"
run "100 × 10 closed" 100 1000
run "100 × 10 open" 100 1000 --rate "$RATE_100"

python3 - "$RESULTS" <<'PY'
import json, sys
print("| run | lines/s sent | delivered lines/s | p50 µs | p99 µs | p99.9 µs | server µs CPU / delivered line | server CPU % | slow drops | failures |")
print("|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    l = r["latency_us"]
    print(f"| {r['label']} | {r['lines_sent_in_window'] / r['duration_s']:.0f} | {r['delivered_per_s']:.0f} "
          f"| {l['p50']:.0f} | {l['p99']:.0f} | {l['p999']:.0f} | {r['server_cpu_us_per_delivered']:.3f} "
          f"| {r['server_cpu_pct']:.0f} | {r['slow_consumer_drops']} | {r['verification_failures']} |")
PY
