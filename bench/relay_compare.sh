#!/usr/bin/env bash
# Compares `tcpkit relay` with HAProxy (mode tcp, without and with
# `option splice-auto`), nginx `stream` and socat (`fork`), side by side in
# one run (issue 13, item 6), and with no relay at all ("direct"):
#
#   bench (CPU 1) -> relay under test (CPU 0) -> upstream (CPU 1)
#
# The upstream is the C epoll echo of ../shared/anchors (`epoll_echo PORT
# once`, compiled with cc into a temp dir); the one-way bulk workload needs a
# reader that does not answer, so there the upstream is `tcpkit serve --mode
# discard --workers 1` (also on CPU 1). Each relay is one process tree pinned
# to CPU 0 with `taskset -c 0` (nginx: its master and one worker; socat: the
# listener and a child per pair), and `tcpkit bench --server-pid` reads its
# CPU time and RSS from /proc (the tree). Every run starts a fresh upstream
# and relay on free loopback ports chosen at run time, and stops both by PID.
# Configurations alternate within each round (order reversed every other
# round); every cell is the median over the rounds.
#
# Workloads (64 B messages verified byte for byte by the bench):
#   bulk      one connection, 64 KiB writes one way (bench --mode throughput)
#   echo      50 connections × 64 B closed-loop echo
#   connect   connect, 64 B echo, close, 50 in flight (two handshakes per client)
#   idle      5,000 idle pairs (each echoed one byte): RSS per pair (not socat:
#             a process per pair)
#   lat1      1 connection × 64 B closed loop: p50/p99
#   lat1000   1,000 connections × 64 B, open loop at LAT_RATE msgs/s in all: p50/p99
#
# Usage: bench/relay_compare.sh [--table=FILE]
#   --table=FILE only print the tables of an earlier run's results (JSON lines)
# Environment:
#   ANCHORS      directory with c/epoll_echo.c (default: ../shared/anchors of the repository)
#   ROUNDS       rounds (default 3); DURATION / WARMUP (default 2s / 1s)
#   CONFIGS      subset of: direct haproxy haproxy_splice nginx socat tcpkit (default: all)
#   ONLY         only workloads whose name matches this grep -E pattern
#   LAT_RATE     total msgs/s of the 1,000-connection latency run (default 2000)
#   IDLE_DURATION  the idle window, opening the 5,000 pairs included (default 6s)
#   TCPKIT       the tcpkit binary (default: this repository's release build, built here)
#   RESULTS      JSON lines of every run (default target/relay_compare/results.jsonl)
# Prints markdown tables on stdout; progress on stderr. About 8 minutes with
# the defaults on a 2-core machine.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_NAME=relay_compare
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
if [[ -z ${ANCHORS:-} ]]; then
  for d in "$REPO/../shared/anchors" "$REPO/../../shared/anchors"; do
    if [[ -f $d/c/epoll_echo.c ]]; then ANCHORS=$(cd "$d" && pwd); break; fi
  done
fi
TABLE_ONLY=
for arg in "$@"; do
  case $arg in
    --table=*) TABLE_ONLY=${arg#--table=} ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-2s}
WARMUP=${WARMUP:-1s}
LAT_RATE=${LAT_RATE:-2000}
IDLE_DURATION=${IDLE_DURATION:-6s}
CONFIGS=${CONFIGS:-direct haproxy haproxy_splice nginx socat tcpkit}
RESULTS=${RESULTS:-$REPO/target/relay_compare/results.jsonl}

print_table() { # results.jsonl
  python3 - "$1" <<'PY'
import json, os, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
configs = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["kind"], r["config"])].append(r)
    if r["config"] not in configs:
        configs.append(r["config"])
# Runs whose bench failed (connections broke, ...): kept apart, counted here.
failed = defaultdict(list)
if os.path.exists(sys.argv[1] + ".failed"):
    for line in open(sys.argv[1] + ".failed"):
        r = json.loads(line)
        failed[r["config"]].append(r["kind"])
order = ["tcpkit", "haproxy", "haproxy_splice", "nginx", "socat", "direct"]
configs = [c for c in order if c in configs] + [c for c in configs if c not in order]
label = {"tcpkit": "`tcpkit relay --workers 1`", "haproxy": "HAProxy `mode tcp`",
         "haproxy_splice": "HAProxy `mode tcp` + `option splice-auto`",
         "nginx": "nginx `stream` (1 worker)", "socat": "socat `fork`",
         "direct": "direct (no relay: the upstream's own figures)"}

def figure(r, what):
    if what == "cpu_gb":  # CPU seconds per 10^9 bytes relayed
        v = r.get("server_cpu_us_per_msg")
        return None if v is None else v * 1e3 / r["size_bytes"]
    if what in ("p50", "p99"):
        lat = r["latency_us"]
        return lat[what] if lat["count"] else None
    return r.get(what)

def vals(kind, config, what):
    return sorted(v for v in (figure(r, what) for r in runs.get((kind, config), [])) if v is not None)

def med(kind, config, what):
    v = vals(kind, config, what)
    return statistics.median(v) if v else None

def cell(kind, config, what, spec, rng=True):
    v = vals(kind, config, what)
    if not v:
        return "—"
    m = statistics.median(v)
    if rng and len(v) > 1:
        return f"{m:{spec}} ({v[0]:{spec}}–{v[-1]:{spec}})"
    return f"{m:{spec}}"

def errors(config):
    n = 0
    for (kind, c), rs in runs.items():
        if c == config:
            n += sum(int(r.get("errors", 0)) + int(r.get("connect_failures", 0))
                     + int(r.get("idle_connect_failures", 0)) + int(r.get("verification_failures", 0))
                     for r in rs)
    return n

def nruns(config):
    return max((len(rs) for (k, c), rs in runs.items() if c == config), default=0)

print("\nRelay CPU and memory: median (min–max) over rounds; the relay's process tree on CPU 0\n")
print("| relay | runs | bulk MB/s | bulk CPU s/GB | 50 × 64 B: µs/msg | connect: µs/conn | conns/s | idle KiB/pair | errors | failed runs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in configs:
    print(f"| {label.get(c, c)} | {nruns(c)} | {cell('bulk', c, 'mb_per_s', ',.0f')} | {cell('bulk', c, 'cpu_gb', '.3f')} "
          f"| {cell('echo', c, 'server_cpu_us_per_msg', '.2f')} | {cell('connect', c, 'server_cpu_us_per_msg', '.1f')} "
          f"| {cell('connect', c, 'msgs_per_s', ',.0f', False)} | {cell('idle', c, 'server_rss_per_conn_kib', '.2f')} | {errors(c)} "
          f"| {', '.join(f'{k} ×{failed[c].count(k)}' for k in dict.fromkeys(failed[c])) or 0} |")

print("\nLatency (µs, medians over rounds; round trip through the relay to the echo and back)\n")
print("| relay | 1 conn p50 | 1 conn p99 | 1 conn msgs/s | 1,000 conns p50 | 1,000 conns p99 | 1,000 conns msgs/s | p50 added (1 / 1,000) | p99 added (1 / 1,000) |")
print("|---|---|---|---|---|---|---|---|---|")
def added(c, kind, what):
    a, d = med(kind, c, what), med(kind, "direct", what)
    return "—" if a is None or d is None else f"{a - d:+.0f}"
for c in configs:
    print(f"| {label.get(c, c)} | {cell('lat1', c, 'p50', '.0f', False)} | {cell('lat1', c, 'p99', '.0f', False)} "
          f"| {cell('lat1', c, 'msgs_per_s', ',.0f', False)} "
          f"| {cell('lat1000', c, 'p50', '.0f', False)} | {cell('lat1000', c, 'p99', '.0f', False)} "
          f"| {cell('lat1000', c, 'msgs_per_s', ',.0f', False)} "
          f"| {added(c, 'lat1', 'p50')} / {added(c, 'lat1000', 'p50')} | {added(c, 'lat1', 'p99')} / {added(c, 'lat1000', 'p99')} |")

print("\nTargets (tcpkit relay ÷ the reference, medians of the same run)\n")
print("| target | tcpkit | reference | ratio of medians | met | per-round ratio, median (min–max) |")
print("|---|---|---|---|---|---|")
# The same ratio taken within each round (runs seconds apart drift less
# together than runs minutes apart): the spread says how firm the verdict is.
def paired(kind, what, ref):
    mine = {r["round"]: figure(r, what) for r in runs.get((kind, "tcpkit"), [])}
    rs = sorted(mine[r["round"]] / figure(r, what) for r in runs.get((kind, ref), [])
                if mine.get(r["round"]) is not None and figure(r, what))
    if not rs:
        return "—"
    return f"{statistics.median(rs):.2f} ({rs[0]:.2f}–{rs[-1]:.2f})"
def target(name, kind, what, ref, limit, spec, higher_better=False):
    ours, theirs = med(kind, "tcpkit", what), med(kind, ref, what)
    if ours is None or theirs is None or theirs == 0:
        print(f"| {name} | {'—' if ours is None else format(ours, spec)} | {label.get(ref, ref)}: — | — | not measured | — |")
        return
    ratio = ours / theirs
    met = ratio >= limit if higher_better else ratio <= limit
    print(f"| {name} | {ours:{spec}} | {label.get(ref, ref)}: {theirs:{spec}} | {ratio:.3f} | {'yes' if met else '**no**'} | {paired(kind, what, ref)} |")
for ref in ("haproxy", "haproxy_splice"):
    target("bulk CPU/GB ≤ 0.9 × HAProxy", "bulk", "cpu_gb", ref, 0.9, ".3f")
    target("bulk MB/s ≥ 1.0 × HAProxy", "bulk", "mb_per_s", ref, 1.0, ",.0f", higher_better=True)
for ref in ("haproxy", "haproxy_splice", "nginx"):
    target("50 × 64 B CPU/msg ≤ 1.0 ×", "echo", "server_cpu_us_per_msg", ref, 1.0, ".2f")
for ref in ("haproxy", "haproxy_splice"):
    target("connect CPU/conn ≤ 1.0 × HAProxy", "connect", "server_cpu_us_per_msg", ref, 1.0, ".1f")
rss = med("idle", "tcpkit", "server_rss_per_conn_kib")
print(f"| idle RSS/pair ≤ 3 KiB | {'—' if rss is None else format(rss, '.2f')} KiB | 3 KiB | — | "
      f"{'not measured' if rss is None else ('yes' if rss <= 3 else '**no**')} | — |")
PY
}

if [[ -n $TABLE_ONLY ]]; then
  print_table "$TABLE_ONLY"
  exit 0
fi
[[ -n ${ANCHORS:-} ]] || { log "no ../shared/anchors/c/epoll_echo.c found: set ANCHORS"; exit 1; }

# --- packages, machine ------------------------------------------------------------
need_tools taskset:util-linux jq:jq python3:python3 cc:gcc haproxy:haproxy nginx:nginx socat:socat
need_cpus 2
STREAM_MODULE=
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/lib64/nginx/modules/ngx_stream_module.so; do
  [[ -f $m ]] && STREAM_MODULE=$m && break
done
if [[ -z $STREAM_MODULE ]] && ! nginx -V 2>&1 | grep -q -- '--with-stream\b'; then
  need_tools x:libnginx-mod-stream
  STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/relay_compare.XXXXXX")
on_exit() {
  stop_all
  rm -rf "$TMP"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
: >"$RESULTS.failed"

# --- build ------------------------------------------------------------------------
cc -O2 -o "$TMP/epoll_echo" "$ANCHORS/c/epoll_echo.c"
if [[ -z ${TCPKIT:-} ]]; then
  log "building tcpkit (release)"
  cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
  TCPKIT=$REPO/target/release/tcpkit
fi
# 5,000 pairs are 10,000 sockets in the relay: every process inherits this.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
log "open-file limit $NOFILE; tcpkit $("$TCPKIT" --version); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1); $(socat -V | sed -n 's/^socat version \([^ ]*\).*/socat \1/p')"

# --- upstream (CPU 1) and relay (CPU 0) --------------------------------------------
UP_PID=
start_upstream() { # kind port
  if [[ $1 == bulk ]]; then
    taskset -c 1 "$TCPKIT" -q serve --listen "127.0.0.1:$2" --mode discard --workers 1 --backlog 1024 \
      >"$TMP/upstream.log" 2>&1 &
  else
    taskset -c 1 "$TMP/epoll_echo" "$2" once >"$TMP/upstream.log" 2>&1 &
  fi
  UP_PID=$!
  track "$UP_PID"
  wait_port "$2" "$UP_PID"
}

# Writes the config of relay $1 listening on $2, forwarding to $3; prints its path.
relay_config() {
  local f=$TMP/$1-$2.cfg
  case $1 in
    haproxy|haproxy_splice)
      # maxconn: 5,000 idle pairs fit; HAProxy reserves 2 descriptors per
      # connection and, with splicing, 2 per pipe (maxpipes = maxconn / 4),
      # which must fit the open-file limit (20,000 here).
      cat >"$f" <<EOF
global
    nbthread 1
    maxconn 6000
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
$([[ $1 == haproxy_splice ]] && echo "    option splice-auto")
frontend relay
    bind 127.0.0.1:$2 backlog 1024
    default_backend upstream
backend upstream
    server up 127.0.0.1:$3
EOF
      ;;
    nginx)
      mkdir -p "$TMP/nginx-$2/logs"
      cat >"$f" <<EOF
$([[ -n $STREAM_MODULE ]] && echo "load_module $STREAM_MODULE;")
daemon off;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $TMP/nginx-$2/nginx.pid;
error_log stderr error;
events {
    worker_connections $((NOFILE - 100));
}
stream {
    server {
        listen 127.0.0.1:$2 backlog=1024;
        proxy_pass 127.0.0.1:$3;
        proxy_timeout 5m;
    }
}
EOF
      ;;
  esac
  echo "$f"
}

RELAY_PID=
start_relay() { # config port upstream-port
  local cfg
  case $1 in
    tcpkit)
      taskset -c 0 "$TCPKIT" -q relay --listen "127.0.0.1:$2" --to "127.0.0.1:$3" --workers 1 --backlog 1024 \
        >"$TMP/relay.log" 2>&1 & ;;
    haproxy|haproxy_splice)
      cfg=$(relay_config "$1" "$2" "$3")
      taskset -c 0 haproxy -db -f "$cfg" >"$TMP/relay.log" 2>&1 & ;;
    nginx)
      cfg=$(relay_config nginx "$2" "$3")
      taskset -c 0 nginx -p "$TMP/nginx-$2" -c "$cfg" -e stderr >"$TMP/relay.log" 2>&1 & ;;
    socat)
      # nodelay on both sides, as the others do: a 64 B reply must not wait for Nagle.
      taskset -c 0 socat "TCP-LISTEN:$2,bind=127.0.0.1,fork,reuseaddr,backlog=1024,nodelay" \
        "TCP:127.0.0.1:$3,nodelay" >"$TMP/relay.log" 2>&1 & ;;
    *) log "unknown relay $1"; return 1 ;;
  esac
  RELAY_PID=$!
  track "$RELAY_PID"
  wait_port "$2" "$RELAY_PID" || { log "$1 did not start: $(tail -3 "$TMP/relay.log")"; return 1; }
}

# --- workloads: name | kind | bench arguments | duration | warm-up | configs left out ---
WORKLOADS=(
  "bulk: 1 connection × 64 KiB writes, one way|bulk|--mode throughput -c 1 -s 65536|||"
  "echo: 50 connections × 64 B|echo|-c 50 -s 64|||"
  "connect rate: connect, 64 B echo, close, 50 in flight|connect|--mode connect -c 50 -s 64|||"
  "5,000 idle pairs|idle|--mode idle -c 5000|$IDLE_DURATION|0s|socat"
  "latency: 1 connection × 64 B|lat1|-c 1 -s 64|||"
  "latency: 1,000 connections × 64 B, open loop|lat1000|-c 1000 -s 64 --rate $LAT_RATE|||"
)
mapfile -t WORKLOADS < <(keep_only "${ONLY:-}" "${WORKLOADS[@]}")

read -r -a configs <<<"$CONFIGS"
started=$(date +%s)
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name kind args dur warm skip <<<"$w"
    dur=${dur:-$DURATION}
    warm=${warm:-$WARMUP}
    mapfile -t order < <(reversed_if_even "$round" "${configs[@]}")
    for c in "${order[@]}"; do
      if [[ " $skip " == *" $c "* ]]; then continue; fi
      up=$(free_port)
      if ! start_upstream "$kind" "$up"; then
        log "round $round: upstream did not start: $(tail -3 "$TMP/upstream.log")"
        stop_pid "$UP_PID"
        continue
      fi
      target=$up
      pid=$UP_PID
      if [[ $c != direct ]]; then
        target=$(free_port)
        if ! start_relay "$c" "$target" "$up"; then
          stop_pid "$RELAY_PID"
          stop_pid "$UP_PID"
          continue
        fi
        pid=$RELAY_PID
      fi
      log "round $round/$ROUNDS  $kind  $c"
      # shellcheck disable=SC2086
      if json=$(taskset -c 1 "$TCPKIT" -q bench --target "127.0.0.1:$target" --server-pid "$pid" \
        --client-cpu 1 --json -d "$dur" --warmup "$warm" $args); then
        jq -c --arg config "$c" --arg workload "$name" --arg kind "$kind" --argjson round "$round" \
          '. + {config: $config, workload: $workload, kind: $kind, round: $round}' <<<"$json" >>"$RESULTS"
      else
        log "round $round: bench through $c failed (exit $?)"
        # What a failed run reported (the bench prints its JSON either way)
        # goes beside the results, not into the medians.
        if [[ -n $json ]]; then
          jq -c --arg config "$c" --arg workload "$name" --arg kind "$kind" --argjson round "$round" \
            '. + {config: $config, workload: $workload, kind: $kind, round: $round, failed: true}' <<<"$json" \
            >>"$RESULTS.failed" 2>/dev/null || true
        fi
      fi
      [[ $c != direct ]] && stop_pid "$RELAY_PID"
      stop_pid "$UP_PID"
    done
  done
done
log "done in $(($(date +%s) - started)) s; raw results in $RESULTS"
print_table "$RESULTS"
