#!/usr/bin/env bash
# Work per message for one server under `tcpkit bench` (echo, 50 × 64 B by
# default): syscalls per message (strace -c over a short window; strace slows
# the server, so only its *counts* are used), user vs system CPU per message
# from /proc/PID/stat, and `perf stat` software events, in a second run
# without strace. Server on CPU 0, load on CPU 1.
# Usage: bench/count.sh NAME "SERVER COMMAND WITH {PORT}" [bench args...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TCPKIT=${TCPKIT:-$REPO/target/release/tcpkit}
name=$1; cmd=$2; shift 2
args=("$@"); ((${#args[@]})) || args=(-c 50 -s 64)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run_server() {
  # shellcheck disable=SC2046
  taskset -c 0 ${cmd//\{PORT\}/$port} >/dev/null 2>&1 &
  SPID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.05; done
}
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
out=$(mktemp -d)
# 1) strace counts over 2 s of a 4 s run.
run_server
taskset -c 1 "$TCPKIT" -q bench --target "127.0.0.1:$port" --client-cpu 1 --json -d 4s --warmup 0s "${args[@]}" >"$out/b1.json" &
BP=$!
sleep 1
timeout -s INT 2 strace -c -f -p "$SPID" -o "$out/strace.txt" 2>/dev/null || true
wait $BP
kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
# 2) CPU split and perf stat, no strace.
run_server
taskset -c 1 "$TCPKIT" -q bench --target "127.0.0.1:$port" --client-cpu 1 --json -d 3s --warmup 1s "${args[@]}" >"$out/b2.json" &
BP=$!
sleep 1
read -r u0 s0 < <(ticks "$SPID")
perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -p "$SPID" -o "$out/perf.txt" -- sleep 2 2>/dev/null || true
read -r u1 s1 < <(ticks "$SPID")
wait $BP
kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
python3 - "$name" "$out" "$u0" "$s0" "$u1" "$s1" "$hz" <<'PY'
import json, re, sys
name, out, u0, s0, u1, s1, hz = sys.argv[1:]
u = (int(u1) - int(u0)) / int(hz); s = (int(s1) - int(s0)) / int(hz)
b1 = json.load(open(f"{out}/b1.json")); b2 = json.load(open(f"{out}/b2.json"))
sc = {}
for line in open(f"{out}/strace.txt"):
    m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)$", line)
    if m and m.group(3) != "total":
        sc[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
# strace slows the server, so the window's message count is taken from the
# server's own writes: at 64 B every echoed message is exactly one write.
smsgs = max(1, sum(sc.get(k, (0, 0))[0] for k in ("write", "sendto", "writev", "sendmsg")))
perf = {}
for line in open(f"{out}/perf.txt"):
    parts = line.strip().split(",")
    if len(parts) > 3 and parts[0] and parts[0][0].isdigit():
        perf[parts[2]] = float(parts[0])
m2 = b2["msgs_per_s"] * 2  # the 2 s perf/stat window
per = {k: round(v[0] / smsgs, 3) for k, v in sorted(sc.items(), key=lambda kv: -kv[1][0])}
errs = {k: v[1] for k, v in sc.items() if v[1]}
print(json.dumps({"server": name, "msgs_per_s": round(b2["msgs_per_s"]),
  "syscalls_per_msg": round(sum(v[0] for v in sc.values()) / smsgs, 3), "by_call": per, "errors_by_call": errs,
  "user_us_per_msg": round(u * 1e6 / m2, 2), "sys_us_per_msg": round(s * 1e6 / m2, 2),
  "user_share": round(u / (u + s), 3) if u + s else None,
  "ctx_switches_per_msg": round(perf.get("context-switches", 0) / m2, 4),
  "task_clock_us_per_msg": round(perf.get("task-clock", 0) * 1e3 / m2, 2)}))
PY
rm -rf "$out"
