#!/usr/bin/env bash
# What `serve --metrics` costs on the data path: echo server CPU per message
# (and per connection) with the exporter on and scraped, off, and (if
# TCPKIT_BASE is set) an older build, in the same run, the way
# bench/compare.sh measures: the server pinned to CPU 0 with `taskset -c 0`,
# `tcpkit bench --json` pinned to CPU 1, server CPU time from /proc/PID/stat.
# Configurations alternate within each round (order reversed every other
# round); every cell is the median of the rounds.
#
# Usage: bench/metrics_overhead.sh [--table=FILE]
#   --table=FILE only print the table of an earlier run's results (JSON lines)
# Environment:
#   ROUNDS       rounds (default 7); DURATION / WARMUP (default 3s / 1s)
#   TCPKIT_BASE  an older tcpkit binary, measured as "base" (no --metrics)
#   ONLY         run only workloads whose name matches this grep -E pattern ('64 B', 'connect')
#   SCRAPE       seconds between scrapes of /metrics while "on" runs (default 1)
#   RESULTS      JSON lines of every run (default target/metrics_overhead/results.jsonl)
# Prints one markdown table on stdout; progress on stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_NAME=metrics_overhead
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
SCRAPE=${SCRAPE:-1}
RESULTS=${RESULTS:-$REPO/target/metrics_overhead/results.jsonl}
mkdir -p "$(dirname "$RESULTS")"
TABLE_ONLY=
for arg in "$@"; do
  case $arg in
    --table=*) TABLE_ONLY=${arg#--table=} ;;
    -h|--help) sed -n "2,17p" "$0"; exit 0 ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done
print_table() { # results.jsonl
python3 - "$1" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
workloads, configs = [], []
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["workload"], r["config"])].append(r)
    if r["workload"] not in workloads:
        workloads.append(r["workload"])
    if r["config"] not in configs:
        configs.append(r["config"])
configs = [c for c in ("base", "off", "on") if c in configs]
label = {"base": "older build (TCPKIT_BASE), no --metrics", "off": "no --metrics",
         "on": "--metrics, scraped"}
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
# Two ways to read a noisy host: the medians, and the ratio to "off" within
# each round (runs minutes apart drift together, runs seconds apart less).
def paired(w, c):
    off = {r["round"]: r["server_cpu_us_per_msg"] for r in runs.get((w, "off"), [])}
    ratios = sorted(r["server_cpu_us_per_msg"] / off[r["round"]]
                    for r in runs.get((w, c), []) if r["round"] in off)
    if not ratios:
        return "—"
    return f"{statistics.median(ratios):.3f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"
print("| workload | server | runs | msgs/s | server µs/msg, median (min–max) | median ÷ off | min ÷ off | per-round ÷ off, median (min–max) | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for w in workloads:
    offs = sorted(r["server_cpu_us_per_msg"] for r in runs.get((w, "off"), []))
    off, off_min = (statistics.median(offs), offs[0]) if offs else (None, None)
    for c in configs:
        rs = runs.get((w, c), [])
        if not rs:
            continue
        vals = sorted(r["server_cpu_us_per_msg"] for r in rs)
        m = statistics.median(vals)
        ratio = f"{m / off:.3f}" if off else "—"
        ratio_min = f"{vals[0] / off_min:.3f}" if off_min else "—"
        errors = sum(r["errors"] + r["connect_failures"] for r in rs)
        print(f"| {w} | {label[c]} | {len(rs)} | {med(rs, 'msgs_per_s'):,.0f} "
              f"| {m:.3f} ({vals[0]:.3f}–{vals[-1]:.3f}) | {ratio} | {ratio_min} | {paired(w, c)} | {errors} |")
PY
}

if [[ -n $TABLE_ONLY ]]; then
  print_table "$TABLE_ONLY"
  exit 0
fi

need_tools taskset:util-linux jq:jq python3:python3
need_cpus 2

log "building tcpkit (release)"
cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
TCPKIT=$REPO/target/release/tcpkit
CONFIGS=(off on)
if [[ -n ${TCPKIT_BASE:-} ]]; then CONFIGS=(base off on); fi
: >"$RESULTS"

# --- processes we start, stopped by PID on any exit (bench/lib.sh) -------------
trap stop_all EXIT
trap 'exit 130' INT TERM

# The server command of configuration $1 on port $2 (metrics on port $3).
server_cmd() {
  local common="serve --listen 127.0.0.1:$2 --mode echo --workers 1 --backlog 1024"
  case $1 in
    base) echo "$TCPKIT_BASE $common" ;;
    off) echo "$TCPKIT $common" ;;
    on) echo "$TCPKIT $common --metrics 127.0.0.1:$3" ;;
  esac
}

stop() { stop_pid "$1"; } # SIGTERM, 5 s to exit, then SIGKILL

# A Prometheus stand-in on CPU 1: GET /metrics every $SCRAPE s; the server
# answers on its own CPU, so the scrapes are in its CPU time.
scraper() { # port
  while :; do
    if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
      printf 'GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n' >&3
      # Builtins only: the stand-in costs its CPU 1 next to nothing.
      while IFS= read -r -u 3 _; do :; done
      exec 3<&-
    fi
    sleep "$SCRAPE"
  done
}

WORKLOADS=(
  "50 × 64 B|-c 50 -s 64"
  "connect rate|--mode connect -c 50 -s 64"
)

mapfile -t WORKLOADS < <(keep_only "${ONLY:-}" "${WORKLOADS[@]}")

started=$(date +%s)
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name args <<<"$w"
    mapfile -t order < <(reversed_if_even "$round" "${CONFIGS[@]}")
    for c in "${order[@]}"; do
      port=$(free_port)
      mport=$(free_port)
      # shellcheck disable=SC2046
      taskset -c 0 $(server_cmd "$c" "$port" "$mport") >/dev/null 2>&1 &
      server=$!
      track "$server"
      if ! wait_port "$port" "$server"; then
        log "round $round: $c did not start"
        stop "$server"
        continue
      fi
      scrape=
      if [[ $c == on ]]; then
        taskset -c 1 bash -c "$(declare -f scraper); SCRAPE=$SCRAPE scraper $mport" >/dev/null 2>&1 &
        scrape=$!
        track "$scrape"
      fi
      log "round $round/$ROUNDS  $name  $c"
      # shellcheck disable=SC2086
      if json=$(taskset -c 1 "$TCPKIT" -q bench --target "127.0.0.1:$port" --server-pid "$server" \
        --client-cpu 1 --json -d "$DURATION" --warmup "$WARMUP" $args); then
        jq -c --arg config "$c" --arg workload "$name" --argjson round "$round" \
          '. + {config: $config, workload: $workload, round: $round}' <<<"$json" >>"$RESULTS"
      else
        log "round $round: bench against $c failed (exit $?)"
      fi
      if [[ -n $scrape ]]; then stop "$scrape"; fi
      stop "$server"
    done
  done
done
log "done in $(($(date +%s) - started)) s; raw results in $RESULTS"
print_table "$RESULTS"
