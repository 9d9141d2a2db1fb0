#!/usr/bin/env bash
# The restart table (issue 12 item 5): `tcpkit bench --mode connect` at a
# steady open-loop rate against a server restarted RESTARTS times back to
# back, once per restart method:
#
#   handover   serve --upgrade-from PIDFILE: the successor takes the old
#              server's listening socket over a UNIX socket (SCM_RIGHTS),
#              confirms, and the old one stops accepting and drains.
#   stopstart  SIGTERM the old server, wait for it to exit, start a new one
#              on the same port (refused while nobody listens).
#   reuseport  naive SO_REUSEPORT handover: the new server binds its own
#              socket on the port (`--engine per-core --workers 1` sets
#              SO_REUSEPORT), then the old one gets SIGTERM and closes its
#              listener, resetting whatever was queued on it.
#
# Each method's row: the bench's failed connects and reset connections
# (`connect_failures`, `connection_resets` in its JSON) over the whole run.
#
# Usage: bench/restart.sh
# Environment: RATE (2000 connects/s), RESTARTS (10), GAP (0.5 s between
#              restarts), METHODS ("handover stopstart reuseport"),
#              TCPKIT (default: this repo's release build)
# Prints a markdown table on stdout; progress on stderr. Every process it
# starts is stopped by PID; each wait is bounded.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-2000}
RESTARTS=${RESTARTS:-10}
GAP=${GAP:-0.5}
METHODS=${METHODS:-handover stopstart reuseport}
if [[ -z ${TCPKIT:-} ]]; then
  (cd "$REPO" && cargo build --release --quiet)
  TCPKIT=$REPO/target/release/tcpkit
fi
# Servers on CPU 0, the load generator on CPU 1 when there are two.
server_cpu=() bench_cpu=()
if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 0) bench_cpu=(taskset -c 1)
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# wait_line FILE: until the server's `listening on` line (10 s at most).
wait_line() {
  timeout 10 bash -c "until grep -qs '^listening on ' '$1'; do sleep 0.01; done"
}
# wait_exit PID: until the process has exited (30 s at most: drain + exit).
wait_exit() {
  timeout 30 tail -s 0.01 --pid="$1" -f /dev/null
}
# start N ARGS...: a server writing to $work/serve.N.out; sets $pid.
start() {
  local n=$1
  shift
  "${server_cpu[@]}" "$TCPKIT" serve -q --workers 1 --backlog 1024 --shutdown-grace 5s \
    "$@" >"$work/serve.$n.out" 2>"$work/serve.$n.err" &
  pid=$!
  pids+=("$pid")
  wait_line "$work/serve.$n.out"
}

echo "| method | restarts | connects/s | established | failed connects | reset connections | other errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for method in $METHODS; do
  rm -f "$work"/serve.* "$work/pid" "$work/pid.sock"
  case $method in
  handover) start 0 --listen 127.0.0.1:0 --pidfile "$work/pid" ;;
  stopstart) start 0 --listen 127.0.0.1:0 ;;
  reuseport) start 0 --listen 127.0.0.1:0 --engine per-core ;;
  *) echo "unknown method $method" >&2 && exit 2 ;;
  esac
  old=$pid
  addr=$(sed -n 's/^listening on \([^ ]*\) .*/\1/p' "$work/serve.0.out")
  # Long enough for every restart with a second of load on each side.
  duration=$(python3 -c "print(int(2 + $RESTARTS * ($GAP + 0.3)))")
  "${bench_cpu[@]}" "$TCPKIT" bench -q -t "$addr" --mode connect --rate "$RATE" -c 64 \
    -d "${duration}s" --warmup 0s --connect-timeout 5s --json >"$work/bench.json" &
  bench=$!
  pids+=("$bench")
  sleep 1
  for ((i = 1; i <= RESTARTS; i++)); do
    echo "restart: $method $i/$RESTARTS" >&2
    case $method in
    handover)
      start "$i" --upgrade-from "$work/pid" --pidfile "$work/pid"
      wait_exit "$old"
      ;;
    stopstart)
      kill -TERM "$old"
      wait_exit "$old"
      start "$i" --listen "$addr"
      ;;
    reuseport)
      start "$i" --listen "$addr" --engine per-core
      kill -TERM "$old"
      wait_exit "$old"
      ;;
    esac
    old=$pid
    sleep "$GAP"
  done
  timeout $((duration + 30)) tail --pid="$bench" -f /dev/null
  wait "$bench" || true # a bench with failures exits non-zero: counted below
  kill -TERM "$old"
  wait_exit "$old"
  python3 - "$work/bench.json" "$method" "$RESTARTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
other = r["errors"] - r["connection_resets"]
for sample in r["error_samples"]:
    print(f"restart: {sys.argv[2]}: {sample}", file=sys.stderr)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['msgs_per_s']:.0f} | {r['connections_established']} "
      f"| {r['connect_failures']} | {r['connection_resets']} | {other} |")
PY
done
