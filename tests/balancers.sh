#!/usr/bin/env bash
# tcpkit behind real load balancers (issue 12 item 6): three
# `tcpkit serve --proxy-protocol` instances behind HAProxy (`mode tcp`,
# `send-proxy-v2`, `check` health checks), then three fresh ones behind
# nginx's `stream` module (`proxy_protocol on`). Through each balancer:
#   1. `tcpkit bench` verifies every echoed byte; each instance's log shows
#      the clients the PROXY header carried, and they are exactly the
#      bench's own local addresses (read with ss(8)), never the balancer's
#      side of the connection; /metrics shows every balancer connection
#      admitted (no rejection of any reason) and each instance echoing what
#      it read. (Metrics have no per-client labels: unbounded cardinality.)
#   2. One instance is killed (SIGKILL) mid-run: the balancer marks it down
#      (HAProxy: its stats socket says DOWN; nginx, which has no active
#      checks, logs "temporarily disabled" at the next connect and retries
#      the next server), the bench lists exactly the connections that broke
#      (by local address) and they are exactly the clients the killed
#      instance logged; every other connection ran to the end, every byte
#      verified; a connect-mode run afterwards loses nothing.
#   3. One surviving instance is restarted with `serve --upgrade-from`
#      (the listening socket handed over) while an echo run and a
#      connect-rate run go through the balancer: 0 broken, 0 failed
#      connects, the old process drains and exits 0, the new one serves.
# Then chat (issue 14): redis-server on a free loopback port, three
# `tcpkit serve --mode chat --bus redis://... --proxy-protocol` instances
# behind HAProxy (chat_haproxy_snippet: leastconn, long timeouts), and
# `tcpkit bench --mode chat` through HAProxy's one address verifies every
# line (exactly once, in its sender's order, exits non-zero otherwise);
# the clients landed on all three instances (each one's log names its
# PROXY clients; together they are the bench's 30) and every instance
# both published and received lines on the bus (/metrics).
#
# The balancer configs are generated into a `mktemp -d` directory from
# haproxy_snippet/nginx_snippet below; README's "Behind HAProxy and nginx"
# shows the same text (`tests/balancers.sh --print-snippets`, checked by
# tests/balancers_readme.rs). Loopback only; ports picked free (bind to
# port 0); every process started here is stopped by PID in the EXIT trap;
# every wait is bounded. Under TCPKIT_REQUIRE_INTEROP=1 (CI) a missing
# haproxy, nginx stream module, redis-server, ss or socat is a failure, otherwise a loud
# skip.
#
# Env: TCPKIT (binary; default: build target/release/tcpkit),
#      TCPKIT_REQUIRE_INTEROP.
set -euo pipefail
cd "$(dirname "$0")/.."

# The configuration an operator copies: balancer port $1, instances $2..$4.
# The script adds only process plumbing around it (pid and log files, the
# stats socket, nginx's module path).
haproxy_snippet() {
  cat <<EOF
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tcpkit
    bind 127.0.0.1:$1
    default_backend tcpkit

backend tcpkit
    balance roundrobin
    # send-proxy-v2 also puts a PROXY v2 LOCAL header on each health check
    default-server send-proxy-v2 check inter 500ms fall 2 rise 2
    server s1 127.0.0.1:$2
    server s2 127.0.0.1:$3
    server s3 127.0.0.1:$4
EOF
}

nginx_snippet() {
  cat <<EOF
stream {
    upstream tcpkit {
        server 127.0.0.1:$2 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$3 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$4 max_fails=1 fail_timeout=30s;
    }
    server {
        listen 127.0.0.1:$1;
        proxy_pass tcpkit;
        proxy_protocol on;
        proxy_connect_timeout 5s;
        proxy_timeout 60s;
    }
}
EOF
}

# Chat behind HAProxy: balancer port $1, instances $2..$4. leastconn, as
# chat connections live long; timeouts long enough for an idle chat client
# (the 60 s above, or the 50 s of Debian's stock haproxy.cfg, would cut one
# that says nothing for a minute).
chat_haproxy_snippet() {
  cat <<EOF
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 24h
    timeout server 24h

frontend chat
    bind 127.0.0.1:$1
    default_backend chat

backend chat
    balance leastconn
    # send-proxy-v2 also puts a PROXY v2 LOCAL header on each health check
    default-server send-proxy-v2 check inter 2s fall 2 rise 2
    server c1 127.0.0.1:$2
    server c2 127.0.0.1:$3
    server c3 127.0.0.1:$4
EOF
}

# Each instance: after --listen ADDR (or --upgrade-from PIDFILE); --metrics,
# --pidfile and -vv are added per instance.
SERVE_ARGS=(--mode echo --proxy-protocol --proxy-trusted 127.0.0.1/32 --shutdown-grace 60s)
# Chat instances: after --listen ADDR, then --bus redis://HOST:PORT.
CHAT_ARGS=(--mode chat --proxy-protocol --proxy-trusted 127.0.0.1/32)
# redis-server: after --port PORT.
REDIS_ARGS=(--bind 127.0.0.1 --save '' --appendonly no)
# The chat bench: after -t BALANCER. 4 rooms, so that rooms do not line
# up with the three instances: every room has members on several.
CHAT_BENCH_ARGS=(-c 30 --rooms 4 --lines 200)

# words ARG...: the arguments as a shell would need them typed.
words() {
  local out=() w
  for w in "$@"; do out+=("$(printf '%q' "$w")"); done
  echo "${out[*]}"
}

# The commands README's chat example runs (HAProxy's ports as below).
chat_commands() {
  echo "redis-server --port $1 $(words "${REDIS_ARGS[@]}") &"
  local p
  for p in "$3" "$4" "$5"; do
    echo "tcpkit serve --listen 127.0.0.1:$p $(words "${CHAT_ARGS[@]}") --bus redis://127.0.0.1:$1 &"
  done
  echo "haproxy -f chat.cfg &"
  echo "tcpkit bench --mode chat -t 127.0.0.1:$2 $(words "${CHAT_BENCH_ARGS[@]}")"
}

if [[ ${1:-} == --print-snippets ]]; then
  # README's example ports.
  echo "tcpkit serve --listen 127.0.0.1:4001 ${SERVE_ARGS[*]}"
  echo "---"
  haproxy_snippet 3333 4001 4002 4003
  echo "---"
  nginx_snippet 3333 4001 4002 4003
  echo "---"
  chat_commands 6379 3333 4001 4002 4003
  echo "---"
  chat_haproxy_snippet 3333 4001 4002 4003
  exit 0
fi

fail() {
  echo "balancers: FAIL: $*" >&2
  exit 1
}

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx)
stream_module=
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/lib64/nginx/modules/ngx_stream_module.so; do
  [[ -f $m ]] && stream_module=$m && break
done
[[ -n $stream_module ]] || missing+=("nginx stream module (Debian: libnginx-mod-stream)")
command -v redis-server >/dev/null || missing+=(redis-server)
for p in ss socat python3; do command -v "$p" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ ${TCPKIT_REQUIRE_INTEROP:-} == 1 ]]; then
    fail "missing ${missing[*]} (TCPKIT_REQUIRE_INTEROP=1)"
  fi
  echo "balancers: SKIPPED: missing ${missing[*]} (set TCPKIT_REQUIRE_INTEROP=1 to fail instead)" >&2
  exit 0
fi

if [[ -z ${TCPKIT:-} ]]; then
  timeout 1200 cargo build --release --quiet
  TCPKIT=target/release/tcpkit
fi
TCPKIT=$(realpath "$TCPKIT")

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  if ((status != 0)); then
    for log in "$work"/*.log "$work"/*.err; do
      [[ -s $log ]] || continue
      echo "--- $(basename "$log") (last 15 lines)" >&2
      tail -n 15 "$log" | sed 's/^/  /' >&2
    done
  fi
  rm -rf "$work"
  if ((status == 0)); then echo "balancers: PASS"; else echo "balancers: FAIL (status $status)" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on now (bound to 0, read, closed).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || fail "waited ${limit}s for $what"
    sleep 0.1
  done
}

# start_instance NAME [serve args]: starts `tcpkit serve`, waits for its
# listening and metrics lines; sets $port and $metrics (host:port), and
# pid_NAME, port_NAME, metrics_NAME.
# The instances' own arguments (the chat phase sets CHAT_ARGS).
instance_args=("${SERVE_ARGS[@]}")
start_instance() {
  local name=$1 log=$work/$1.log out=$work/$1.out
  shift
  "$TCPKIT" serve "$@" "${instance_args[@]}" --metrics 127.0.0.1:0 --pidfile "$work/$name.pid" -vv >"$out" 2>"$log" &
  pids+=($!)
  eval "pid_$name=$!"
  wait_until 15 "$name's listening line" grep -qs '^listening on ' "$out"
  wait_until 5 "$name's metrics line" grep -qs 'metrics on http://' "$log"
  port=$(sed -n 's/^listening on [^ ]*:\([0-9]*\) .*/\1/p' "$out" | head -n1)
  metrics=$(sed -n 's|.*metrics on http://\([^/]*\)/metrics.*|\1|p' "$log" | head -n1)
  eval "port_$name=$port metrics_$name=$metrics"
}

# The clients PROXY headers carried to an instance (one host:port a line,
# sorted): health checks' LOCAL headers, whose client is the TCP peer,
# are left out.
clients_of() {
  sed -n 's/.*PROXY header peer=\([^ ]*\) tcp_peer=\([^ ]*\) .*/\1 \2/p' "$@" |
    awk '$1 != $2 {print $1}' | sort -u
}

# enough_clients N LOG...: the instances' logs carry N clients or more.
enough_clients() {
  local n=$1
  shift
  (($(clients_of "$@" | wc -l) >= n))
}

# The bench's connections to the balancer (local host:port a line, sorted).
bench_sockets() {
  ss -Htn state established "( dport = :$1 )" | awk '{print $3}' | sort -u
}

# Every bench socket to balancer port $1 has received echoes ($2 of them).
all_bench_sockets_echoed() {
  local n
  n=$(ss -Htni state established "( dport = :$1 )" | grep -o 'bytes_received:[1-9][0-9]*' | wc -l)
  ((n >= $2))
}

# metric NAME HOST:PORT: the sum of a family's samples.
metric() {
  python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
name, at = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://{at}/metrics", timeout=5).read().decode()
total = 0
for line in text.splitlines():
    if line.startswith(name) and line[len(name)] in " {":
        total += float(line.rsplit(" ", 1)[1])
print(int(total))
EOF
}

# check_metrics NAME: the instance admitted every connection the balancer
# made and echoed what it read (within one message per client still in
# flight when the bench stopped).
check_metrics() {
  local name=$1 at rejected received sent clients
  at=$(eval echo "\$metrics_$name")
  rejected=$(metric tcpkit_connections_rejected_total "$at")
  received=$(metric tcpkit_received_bytes_total "$at")
  sent=$(metric tcpkit_sent_bytes_total "$at")
  clients=$(clients_of "$work/$name.log" | wc -l)
  ((rejected == 0)) || fail "$name /metrics: $rejected connections rejected (the balancer's PROXY headers must all be admitted)"
  ((sent > 0 && received >= sent && received - sent <= 64 * clients)) ||
    fail "$name /metrics: received $received B, sent $sent B for $clients clients: not an echo of what it read"
  echo "   $name /metrics: 0 rejected, $received B in, $sent B out"
}

# field FILE KEY: one field of a bench report.
field() {
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(json.dumps(v) if isinstance(v, (list, dict)) else v)' "$1" "$2"
}

# run_bench NAME LB_PORT ARGS...: in the background; sets $bench_pid.
run_bench() {
  local name=$1 lb=$2
  shift 2
  timeout 90 "$TCPKIT" bench -q -t "127.0.0.1:$lb" --threads 1 --warmup 0s --json "$@" \
    >"$work/$name.json" 2>"$work/$name.err" &
  bench_pid=$!
  pids+=("$bench_pid")
}

# finish_bench NAME PID EXPECTED_STATUS
finish_bench() {
  local name=$1 pid=$2 want=$3 status=0
  wait "$pid" || status=$?
  ((status == want)) || fail "bench $name exited $status, expected $want: $(cat "$work/$name.err")"
}

# ---------------------------------------------------------------- balancers

# Which HAProxy: its config function, backend and servers, and the name of
# its files in $work (the chat phase runs a second HAProxy beside the first).
hp=haproxy snippet=haproxy_snippet backend=tcpkit servers=(s1 s2 s3)

haproxy_up() { # starts HAProxy on $lb before instances $1..$3 (names)
  local cfg=$work/$hp.cfg
  {
    cat <<EOF
global
    stats socket $work/$hp.sock mode 600 level admin
    log stderr format raw local0 info

EOF
    "$snippet" "$lb" "$(eval echo "\$port_$1")" "$(eval echo "\$port_$2")" "$(eval echo "\$port_$3")"
  } >"$cfg"
  haproxy -c -q -f "$cfg" || fail "haproxy -c rejected $cfg"
  haproxy -db -f "$cfg" >"$work/$hp.out" 2>"$work/$hp.log" &
  pids+=($!)
  balancer_pid=$!
  wait_until 10 "HAProxy's stats socket" test -S "$work/$hp.sock"
  for s in "${servers[@]}"; do wait_until 15 "HAProxy to see $s UP" haproxy_state_is "$s" UP; done
}

haproxy_state_is() { # server state
  echo "show stat" | socat -t 2 - "UNIX-CONNECT:$work/$hp.sock" 2>/dev/null |
    awk -F, -v b="$backend" -v s="$1" '$1 == b && $2 == s {print $18}' | grep -q "^$2"
}

nginx_up() {
  local cfg=$work/nginx.conf
  {
    cat <<EOF
load_module $stream_module;
pid $work/nginx.pid;
error_log $work/nginx.log info;
worker_processes 1;
EOF
    # Workers drop root; they need no file of their own.
    if [[ $(id -u) -eq 0 ]]; then echo "user nobody nogroup;"; fi
    echo "events { worker_connections 1024; }"
    echo
    nginx_snippet "$lb" "$(eval echo "\$port_$1")" "$(eval echo "\$port_$2")" "$(eval echo "\$port_$3")"
  } >"$cfg"
  nginx -t -q -p "$work" -e "$work/nginx.log" -c "$cfg" || fail "nginx -t rejected $cfg"
  nginx -p "$work" -e "$work/nginx.log" -c "$cfg" -g 'daemon off;' >"$work/nginx.out" 2>"$work/nginx.err" &
  pids+=($!)
  balancer_pid=$!
  wait_until 10 "nginx to listen on $lb" bash -c "ss -Htln '( sport = :$lb )' | grep -q ."
}

# ---------------------------------------------------------------- one run

# through BALANCER PREFIX: the three checks through one balancer, with
# instances PREFIX1..PREFIX3.
through() {
  local kind=$1 a=${2}1 b=${2}2 c=${2}3 conns=30
  echo "== $kind: three instances"
  for n in "$a" "$b" "$c"; do
    start_instance "$n" --listen 127.0.0.1:0
    echo "   $n: 127.0.0.1:$port, metrics $metrics"
  done
  lb=$(free_port)
  "${kind}_up" "$a" "$b" "$c"
  echo "   $kind on 127.0.0.1:$lb (pid $balancer_pid)"

  echo "== $kind: every byte verified, the clients' own addresses at the instances"
  run_bench "$kind-clean" "$lb" -c "$conns" -d 4s
  local clean=$bench_pid
  wait_until 20 "$conns clients at the instances" \
    enough_clients "$conns" "$work/$a.log" "$work/$b.log" "$work/$c.log"
  bench_sockets "$lb" >"$work/$kind-sockets"
  clients_of "$work/$a.log" "$work/$b.log" "$work/$c.log" >"$work/$kind-clients"
  finish_bench "$kind-clean" "$clean" 0
  [[ $(wc -l <"$work/$kind-sockets") -eq $conns ]] ||
    fail "ss saw $(wc -l <"$work/$kind-sockets") bench connections to $lb, not $conns"
  diff -u "$work/$kind-sockets" "$work/$kind-clients" >&2 ||
    fail "the clients the instances logged are not the bench's own addresses (diff above: - bench, + logged)"
  for n in "$a" "$b" "$c"; do
    local k
    k=$(clients_of "$work/$n.log" | wc -l)
    ((k == conns / 3)) || fail "$n served $k of $conns clients, not an even third"
  done
  local r=$work/$kind-clean.json
  [[ $(field "$r" errors) == 0 && $(field "$r" verification_failures) == 0 &&
    $(field "$r" connections_established) == "$conns" && $(field "$r" messages) -gt 0 ]] ||
    fail "clean run through $kind: $(cat "$r")"
  echo "   $(field "$r" messages) messages, $(field "$r" bytes) bytes verified; $conns clients logged as their own addresses"
  for n in "$a" "$b" "$c"; do check_metrics "$n"; done

  echo "== $kind: $b killed mid-run"
  # Only this run's lines of each log (a client port may recur).
  local n
  for n in "$a" "$b" "$c"; do eval "seen_$n=$(wc -l <"$work/$n.log")"; done
  run_bench "$kind-kill" "$lb" -c "$conns" -d 8s
  local kill_run=$bench_pid
  wait_until 20 "$conns bench connections echoing" all_bench_sockets_echoed "$lb" "$conns"
  bench_sockets "$lb" >"$work/$kind-kill-sockets"
  local victim
  victim=$(eval echo "\$pid_$b")
  kill -KILL "$victim"
  wait "$victim" 2>/dev/null || true
  local killed_at=$SECONDS
  if [[ $kind == haproxy ]]; then
    wait_until 15 "HAProxy to mark s2 DOWN" haproxy_state_is s2 DOWN
    grep -q "tcpkit/s2 is DOWN" "$work/haproxy.log" || fail "HAProxy's log has no 'tcpkit/s2 is DOWN'"
    echo "   HAProxy: s2 DOWN $((SECONDS - killed_at)) s after the kill (stats socket and log)"
  fi
  finish_bench "$kind-kill" "$kill_run" 6
  r=$work/$kind-kill.json
  # The clients the killed instance logged during this run only.
  for n in "$a" "$b" "$c"; do tail -n +$(($(eval echo "\$seen_$n") + 1)) "$work/$n.log" >"$work/$n.run"; done
  clients_of "$work/$b.run" >"$work/$kind-victims"
  # Every bench connection was on one instance: the victim's and the others'.
  sort -u "$work/$kind-victims" <(clients_of "$work/$a.run" "$work/$c.run") |
    diff -u "$work/$kind-kill-sockets" - >&2 ||
    fail "the bench's connections (-) are not the clients the three instances logged (+)"
  python3 -c 'import json, sys
for b in json.load(open(sys.argv[1]))["broken"]:
    print(b["local"])' "$r" | sort -u >"$work/$kind-broken"
  [[ -s $work/$kind-victims ]] || fail "$b logged no client in the kill run"
  diff -u "$work/$kind-broken" "$work/$kind-victims" >&2 ||
    fail "the broken connections (-) are not exactly $b's clients (+)"
  local broken
  broken=$(wc -l <"$work/$kind-broken")
  [[ $(field "$r" broken_connections) == "$broken" && $(field "$r" errors) == "$broken" &&
    $(field "$r" verification_failures) == 0 && $(field "$r" connections_established) == "$conns" ]] ||
    fail "kill run through $kind: $(cat "$r")"
  echo "   bench: $broken of $conns connections broke, exactly $b's clients; the other $((conns - broken)) ran to the end, every byte verified"
  python3 - "$r" <<'PY'
import json, sys
broken = json.load(open(sys.argv[1]))["broken"]
print("   broken:", ", ".join("%s after %d B verified" % (b["local"], b["verified_bytes"]) for b in broken[:3]), "...")
PY
  # The survivors' instances echoed everything they read.
  check_metrics "$a"
  check_metrics "$c"

  # New connections after the kill: none lost (nginx finds out here).
  run_bench "$kind-after" "$lb" -m connect -c 4 --rate 200 -d 2s
  finish_bench "$kind-after" "$bench_pid" 0
  r=$work/$kind-after.json
  [[ $(field "$r" connect_failures) == 0 && $(field "$r" errors) == 0 && $(field "$r" messages) -gt 0 ]] ||
    fail "connect run after the kill through $kind: $(cat "$r")"
  if [[ $kind == nginx ]]; then
    grep -q "upstream server temporarily disabled.*127.0.0.1:$(eval echo "\$port_$b")" "$work/nginx.log" ||
      fail "nginx's error log does not say $b (127.0.0.1:$(eval echo "\$port_$b")) was disabled"
    echo "   nginx: $b temporarily disabled at the first connect it refused, retried on the next server"
  fi
  echo "   then $(field "$r" messages) new connections, 0 failed"

  echo "== $kind: $c handed over to a new process mid-run"
  run_bench "$kind-echo" "$lb" -c "$conns" -d 8s
  local echo_run=$bench_pid
  run_bench "$kind-conn" "$lb" -m connect -c 4 --rate 200 -d 8s
  local conn_run=$bench_pid
  wait_until 20 "$conns echo connections echoing" all_bench_sockets_echoed "$lb" "$conns"
  local old
  old=$(eval echo "\$pid_$c")
  start_instance "${c}new" --upgrade-from "$work/$c.pid"
  # Mid-run: both benches still going once the new process serves.
  kill -0 "$echo_run" 2>/dev/null && kill -0 "$conn_run" 2>/dev/null ||
    fail "the handover of $c outlasted the benches: not tested under load"
  echo "   ${c}new (pid $(eval echo "\$pid_${c}new")) took over 127.0.0.1:$port from pid $old"
  finish_bench "$kind-echo" "$echo_run" 0
  finish_bench "$kind-conn" "$conn_run" 0
  # The old process drains (its connections end with the bench) and exits 0.
  timeout 20 tail --pid="$old" -f /dev/null || fail "the old $c (pid $old) did not exit after draining"
  local status=0
  wait "$old" || status=$?
  ((status == 0)) || fail "the old $c exited $status"
  r=$work/$kind-echo.json
  [[ $(field "$r" broken_connections) == 0 && $(field "$r" errors) == 0 &&
    $(field "$r" connections_established) == "$conns" ]] || fail "echo run across the handover: $(cat "$r")"
  local rc=$work/$kind-conn.json
  [[ $(field "$rc" connect_failures) == 0 && $(field "$rc" errors) == 0 ]] ||
    fail "connect run across the handover: $(cat "$rc")"
  local served
  served=$(clients_of "$work/${c}new.log" | wc -l)
  ((served > 0)) || fail "${c}new served no client after the handover"
  echo "   echo: $(field "$r" messages) messages verified, 0 broken; connect: $(field "$rc" messages) connections, 0 failed"
  echo "   ${c}new served $served clients; the old $c drained and exited 0"
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# ---------------------------------------------------------------- chat

# chat_through_haproxy: redis-server, three chat instances on its bus, HAProxy
# in front (README's chat example), and `tcpkit bench --mode chat` through it.
chat_through_haproxy() {
  echo "== chat: redis-server, three --bus instances behind HAProxy"
  local rport started=$SECONDS
  rport=$(free_port)
  redis-server --port "$rport" "${REDIS_ARGS[@]}" --dir "$work" >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_until 15 "redis-server's ready line" grep -qs 'Ready to accept connections' "$work/redis.log"
  instance_args=("${CHAT_ARGS[@]}" --bus "redis://127.0.0.1:$rport")
  local n
  for n in k1 k2 k3; do
    start_instance "$n" --listen 127.0.0.1:0
    grep -q 'chat bus up' "$work/$n.log" || fail "$n did not say 'chat bus up' before listening"
    echo "   $n: 127.0.0.1:$port, metrics $metrics"
  done
  lb=$(free_port)
  hp=chat-haproxy snippet=chat_haproxy_snippet backend=chat servers=(c1 c2 c3)
  haproxy_up k1 k2 k3
  echo "   HAProxy on 127.0.0.1:$lb (pid $balancer_pid), redis-server on 127.0.0.1:$rport"

  echo "== chat: every line verified through HAProxy"
  local r=$work/chat.json status=0 conns=30
  timeout 60 "$TCPKIT" bench --mode chat -t "127.0.0.1:$lb" "${CHAT_BENCH_ARGS[@]}" \
    --json --connect-timeout 10s >"$r" 2>"$work/chat.err" || status=$?
  ((status == 0)) || fail "bench --mode chat through HAProxy exited $status: $(cat "$work/chat.err") $(cat "$r")"
  [[ $(field "$r" connections_established) == "$conns" && $(field "$r" lines_sent) == 6000 &&
    $(field "$r" delivered) == "$(field "$r" expected_deliveries)" && $(field "$r" delivered) -gt 0 &&
    $(field "$r" lost) == 0 && $(field "$r" duplicated) == 0 && $(field "$r" reordered) == 0 &&
    $(field "$r" misrouted) == 0 && $(field "$r" verification_failures) == 0 ]] ||
    fail "chat run through HAProxy: $(cat "$r")"
  echo "   $(field "$r" lines_sent) lines said, $(field "$r" delivered) delivered: each exactly once, in its sender's order"

  # Where the clients landed: each instance names its PROXY clients (-vv);
  # together they are the bench's 30, and each instance had some.
  local spread=() k
  for n in k1 k2 k3; do
    k=$(clients_of "$work/$n.log" | wc -l)
    ((k > 0)) || fail "$n served no chat client: HAProxy did not spread them"
    spread+=("$n: $k")
  done
  k=$(clients_of "$work/k1.log" "$work/k2.log" "$work/k3.log" | wc -l)
  ((k == conns)) || fail "the instances logged $k distinct clients, not the bench's $conns"
  echo "   clients per instance: ${spread[*]}"
  # And the rooms spanned them: every instance put lines on the bus and
  # took lines off it.
  local at pub rec
  for n in k1 k2 k3; do
    at=$(eval echo "\$metrics_$n")
    pub=$(metric tcpkit_chat_bus_published_total "$at")
    rec=$(metric tcpkit_chat_bus_received_total "$at")
    ((pub > 0 && rec > 0)) || fail "$n: bus published $pub, received $rec: its rooms did not span instances"
    (($(metric tcpkit_chat_bus_dropped_total "$at") == 0)) || fail "$n dropped lines for the other instances"
    echo "   $n bus: $pub published, $rec received, 0 dropped"
  done
  echo "   chat phase: $((SECONDS - started)) s"
}

through haproxy h
through nginx n
chat_through_haproxy
