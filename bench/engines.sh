#!/usr/bin/env bash
# `serve --engine shared` (one listener, work-stealing runtime) against
# `--engine per-core` (one SO_REUSEPORT listener and single-threaded runtime
# per worker), both with --workers = every core and unpinned: this is the one
# comparison the pinned bench/compare.sh cannot make, since a server pinned
# to one core has nothing to spread over. The load generator is unpinned
# too, so on a small machine it competes with the server for the same cores
# (equally for both engines). Engines alternate within each round; every
# cell is the median of the rounds.
#
# Usage: bench/engines.sh
# Environment: ROUNDS (5), DURATION (5s), WARMUP (1s), WORKERS (all cores),
#              TCPKIT (default: this repo's release build),
#              RESULTS (JSON lines; default target/engines/results.jsonl)
# Prints a markdown table on stdout; progress on stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
WORKERS=${WORKERS:-$(nproc)}
RESULTS=${RESULTS:-$REPO/target/engines/results.jsonl}
if [[ -z ${TCPKIT:-} ]]; then
  (cd "$REPO" && cargo build --release --quiet)
  TCPKIT=$REPO/target/release/tcpkit
fi
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

workloads=(
  "50 x 64 B|--mode echo -c 50 -s 64"
  "1,000 x 64 B|--mode echo -c 1000 -s 64"
  "connect rate|--mode connect -c 50 -s 64"
)

for ((round = 1; round <= ROUNDS; round++)); do
  for w in "${workloads[@]}"; do
    name=${w%%|*} flags=${w#*|}
    for engine in shared per-core; do
      echo "engines: round $round/$ROUNDS, $name, $engine" >&2
      "$TCPKIT" serve -q --listen 127.0.0.1:0 --backlog 4096 --workers "$WORKERS" \
        --engine "$engine" >"$work/serve.out" &
      server_pid=$!
      timeout 10 bash -c "until grep -qs '^listening on ' '$work/serve.out'; do sleep 0.05; done"
      addr=$(sed -n 's/^listening on \([^ ]*\) .*/\1/p' "$work/serve.out")
      # shellcheck disable=SC2086 # flags are words
      timeout 120 "$TCPKIT" bench -q -t "$addr" --server-pid "$server_pid" $flags \
        -d "$DURATION" --warmup "$WARMUP" --json >"$work/run.json"
      kill -TERM "$server_pid"
      timeout 20 tail --pid="$server_pid" -f /dev/null
      server_pid=
      python3 - "$work/run.json" "$name" "$engine" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["workload"], r["engine"] = sys.argv[2], sys.argv[3]
print(json.dumps(r))
PY
    done
  done
done

python3 - "$RESULTS" "$WORKERS" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
order = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["workload"], r["engine"])].append(r)
    if r["workload"] not in order:
        order.append(r["workload"])
med = lambda rs, f: statistics.median(f(r) for r in rs)
print(f"| workload | engine (--workers {sys.argv[2]}) | runs | msgs/s | server µs/msg (min–max) | p99 µs | errors |")
print("|---|---|---|---|---|---|---|")
for w in order:
    base = None
    for e in ("shared", "per-core"):
        rs = runs[(w, e)]
        cpu = [r["server_cpu_us_per_msg"] for r in rs]
        m = statistics.median(cpu)
        base = base or m
        ratio = "" if e == "shared" else f" = {m / base:.2f} × shared"
        print(f"| {w} | {e} | {len(rs)} | {med(rs, lambda r: r['msgs_per_s']):,.0f} | "
              f"{m:.2f} ({min(cpu):.2f}–{max(cpu):.2f}){ratio} | "
              f"{med(rs, lambda r: r['latency_us']['p99']):,.0f} | "
              f"{sum(r['errors'] + r['verification_failures'] for r in rs)} |")
PY
