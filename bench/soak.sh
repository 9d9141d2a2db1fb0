#!/usr/bin/env bash
# Soak: SOAK_SECONDS (60) of `tcpkit bench --mode echo` with SOAK_CONNECTIONS
# (200) connections against a `tcpkit serve` this script starts on loopback,
# every echoed byte verified by the bench. The server's VmRSS is sampled from
# /proc/PID/status once a second. Fails unless the bench reports zero errors,
# zero verification failures and zero connect failures, every connection was
# established, and RSS stays flat: the mean of the first 10 samples of the
# measured window and of the last 10 differ by at most SOAK_RSS_PCT (10) %.
# A leak per message or per connection shows up as a rising RSS here.
#
# Env: TCPKIT (binary; default: build target/release/tcpkit).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-60}
connections=${SOAK_CONNECTIONS:-200}
rss_pct=${SOAK_RSS_PCT:-10}
warmup_s=2

if [[ -z ${TCPKIT:-} ]]; then
  timeout 1200 cargo build --release --quiet
  TCPKIT=target/release/tcpkit
fi

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
  if ((status == 0)); then echo "soak: PASS"; else echo "soak: FAIL (status $status)" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server holds 200 sockets; keep the soft limit well above that.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$TCPKIT" serve --listen 127.0.0.1:0 --mode echo >"$work/serve.out" 2>"$work/serve.err" &
server=$!
pids+=("$server")
if ! timeout 10 bash -c "until grep -qs '^listening on ' '$work/serve.out'; do sleep 0.1; done"; then
  echo "serve did not print its listening line:" >&2
  cat "$work/serve.out" "$work/serve.err" >&2
  exit 1
fi
endpoint=$(sed -n 's/^listening on \([^ ]*\) .*/\1/p' "$work/serve.out" | head -n1)
echo "== soak: ${seconds}s, $connections connections against $endpoint (pid $server)"

# One VmRSS sample (KiB) per second while the bench runs.
(
  while kill -0 "$server" 2>/dev/null; do
    awk '/^VmRSS:/ {print $2}' "/proc/$server/status" 2>/dev/null || true
    sleep 1
  done
) >"$work/rss" &
pids+=($!)

timeout $((seconds + warmup_s + 120)) "$TCPKIT" bench --mode echo --target "$endpoint" \
  --server-pid "$server" --connections "$connections" --duration "${seconds}s" \
  --warmup "${warmup_s}s" --json >"$work/report.json" || {
  echo "bench exited $? (a verification failure exits 8):" >&2
  cat "$work/report.json" >&2
  exit 1
}

kill -TERM "$server"
timeout 15 tail --pid="$server" -f /dev/null
status=0
wait "$server" || status=$?
if ((status != 0)); then
  echo "server exited $status after SIGTERM" >&2
  exit 1
fi

python3 - "$work/report.json" "$work/rss" "$connections" "$warmup_s" "$rss_pct" <<'EOF'
import json, sys

report_path, rss_path, connections, warmup_s, rss_pct = sys.argv[1:6]
report = json.load(open(report_path))
rss = [int(x) for x in open(rss_path).read().split()]
problems = []
for field in ("errors", "verification_failures", "connect_failures"):
    if report.get(field) != 0:
        problems.append(f"{field} = {report.get(field)}")
if report.get("connections_established", 0) < int(connections):
    problems.append(f"only {report.get('connections_established')} of {connections} connections established")
if not report.get("messages"):
    problems.append("no message was echoed")
window = rss[int(warmup_s):]
if len(window) < 20:
    problems.append(f"only {len(window)} RSS samples")
else:
    first = sum(window[:10]) / 10
    last = sum(window[-10:]) / 10
    drift = (last - first) / first * 100
    print(f"   server RSS: first 10 s mean {first:.0f} KiB, last 10 s mean {last:.0f} KiB "
          f"({drift:+.1f}%), peak {max(rss)} KiB, {len(rss)} samples")
    if abs(drift) > float(rss_pct):
        problems.append(f"server RSS drifted {drift:+.1f}% (limit {rss_pct}%)")
print(f"   bench: {report['messages']} messages, {report['bytes']} bytes verified, "
      f"{report['msgs_per_s']:.0f} msgs/s, p99 {report['latency_us'].get('p99', '?')} us, "
      f"errors {report['errors']}, verification failures {report['verification_failures']}")
if problems:
    sys.exit("soak: " + "; ".join(problems))
EOF
