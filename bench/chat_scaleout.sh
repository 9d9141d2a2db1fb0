#!/usr/bin/env bash
# Chat scale-out (issue 14 item 6): 1 instance of `tcpkit serve --mode chat`
# vs 1 instance with `--bus` vs 3 instances sharing rooms over Redis
# (`--bus redis://127.0.0.1:PORT`), same load, same verifier.
#
# All server processes (the instances and redis-server, started by this
# script on a free loopback port with no persistence and stopped by PID)
# run under one shell pinned to CPU 0; the load generator (`tcpkit bench
# --mode chat --threads 1`) on CPU 1, with --server-pid of that shell, so
# server CPU is the instances and Redis together. Clients are spread
# round-robin over the instances (--target A,B,C), so with 3 instances every
# room has members on all three: every line crosses the bus.
#
# On this 2-core machine, 3 instances share one core with Redis: the table
# shows what the bus costs per delivered line and in latency, not what 3
# cores would gain.
#
# Usage: bench/chat_scaleout.sh     (about 3 minutes with the defaults)
# Environment:
#   ROUNDS (3) DURATION (4s) WARMUP (1s) RATE_1 (200) RATE_100 (2000)
#   RESULTS (target/chat_scaleout/results.jsonl)
# Prints a markdown table on stdout; progress on stderr. Not run by CI.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-1s}
RATE_1=${RATE_1:-200}
RATE_100=${RATE_100:-2000}
RESULTS=${RESULTS:-$REPO/target/chat_scaleout/results.jsonl}
TCPKIT=${TCPKIT:-$REPO/target/release/tcpkit}
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
log() { echo "chat_scaleout: $*" >&2; }
[[ -x $TCPKIT ]] || { log "build $TCPKIT first (cargo build --release)"; exit 1; }
command -v redis-server >/dev/null || { log "redis-server is not installed (apt-get install redis-server)"; exit 1; }
"$TCPKIT" serve --help | grep -q -- '--bus' || { log "$TCPKIT has no serve --bus (issue 14 item 3)"; exit 1; }
# shellcheck source=bench/chat_lib.sh
. "$REPO/bench/chat_lib.sh"

# start SETUP: sets PID (the shell on CPU 0 whose tree is measured) and
# TARGETS. SETUP is `1`, `1bus` or `3bus`.
start() {
  local setup=$1 n=1 bus="" redis_port="" ports
  case $setup in
    1) ;;
    1bus) redis_port=$(free_port) ;;
    3bus) n=3 redis_port=$(free_port) ;;
  esac
  [[ -n $redis_port ]] && bus="redis://127.0.0.1:$redis_port"
  # shellcheck disable=SC2016 # expanded by the inner shell
  taskset -c 0 bash -c '
    tcpkit=$1 n=$2 bus=$3 port=$4
    if [[ -n $port ]]; then
      redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null &
    fi
    for _ in $(seq "$n"); do
      if [[ -n $bus ]]; then
        "$tcpkit" serve --listen 127.0.0.1:0 --mode chat --workers 1 --backlog 1024 --bus "$bus" >/dev/null 2>&1 &
      else
        "$tcpkit" serve --listen 127.0.0.1:0 --mode chat --workers 1 --backlog 1024 >/dev/null 2>&1 &
      fi
    done
    wait' _ "$TCPKIT" "$n" "$bus" "$redis_port" &
  PID=$!
  for _ in $(seq 200); do
    ports=$(ports_of "$PID" | grep -vx "${redis_port:-none}" || true)
    [[ $(grep -c . <<<"$ports") -ge $n ]] && break
    sleep 0.05
  done
  [[ $(grep -c . <<<"$ports") -ge $n ]] || { log "$setup did not listen"; stop_tree "$PID"; exit 1; }
  TARGETS=$(awk '{print "127.0.0.1:" $1}' <<<"$ports" | paste -sd,)
}

run() { # LABEL SETUP ROOMS CLIENTS [bench args...]
  local label=$1 setup=$2 rooms=$3 clients=$4 out
  shift 4
  start "$setup"
  log "$label / $setup: on $TARGETS (pid $PID)"
  out=$(taskset -c 1 "$TCPKIT" bench --mode chat --target "$TARGETS" --server-pid "$PID" \
    -c "$clients" --rooms "$rooms" --threads 1 --connect-timeout 20s --json "$@" || true)
  stop_tree "$PID"
  [[ -n $out ]] || { log "$label / $setup: no report"; return; }
  python3 -c 'import json,sys; r=json.loads(sys.argv[3]); r["label"]=sys.argv[1]; r["setup"]=sys.argv[2]; print(json.dumps(r))' \
    "$label" "$setup" "$out" >>"$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  for setup in 1 1bus 3bus; do
    run "1 × 100 open $RATE_1/s" "$setup" 1 100 -d "$DURATION" --warmup "$WARMUP" --rate "$RATE_1"
    run "100 × 10 open $RATE_100/s" "$setup" 100 1000 -d "$DURATION" --warmup "$WARMUP" --rate "$RATE_100"
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
names = {"1": "1 instance", "1bus": "1 instance + Redis bus", "3bus": "3 instances + Redis bus"}
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["label"], r["setup"])].append(r)
med = lambda rs, f: statistics.median(f(r) for r in rs)
print("| case | setup | runs | delivered lines/s | p50 µs | p99 µs | server µs CPU / delivered line (instances + Redis) | server CPU % | verification failures |")
print("|---|---|---|---|---|---|---|---|---|")
for (label, setup), rs in runs.items():
    print(f"| {label} | {names[setup]} | {len(rs)} | {med(rs, lambda r: r['delivered_per_s']):.0f} "
          f"| {med(rs, lambda r: r['latency_us']['p50']):.0f} | {med(rs, lambda r: r['latency_us']['p99']):.0f} "
          f"| {med(rs, lambda r: r['server_cpu_us_per_delivered'] or 0):.2f} | {med(rs, lambda r: r['server_cpu_pct'] or 0):.0f} "
          f"| {sum(r['verification_failures'] for r in rs)} |")
PY
