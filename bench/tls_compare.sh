#!/usr/bin/env bash
# Compares tcpkit's TLS with the TLS anchors of ../shared/anchors/README.md,
# side by side in one run (issue 11, item 7):
#   rustls   tls_echo PORT CERT KEY shared        the rustls floor (one thread)
#   stunnel  stunnel4 in front of `epoll_echo UPSTREAM once`
#   haproxy  HAProxy, mode tcp, bind ... ssl crt, nbthread 1, in front of the same C echo
#   tcpkit   tcpkit serve --mode echo --workers 1 --tls-cert CERT --tls-key KEY
# and the plain-TCP A/B: this build's `tcpkit serve` (TLS compiled in, unused)
# against the commit before TLS (BASE_COMMIT), built from `git archive` in a
# temp dir.
#
# Every server process is pinned to CPU 0 (`taskset -c 0`); a two-process
# terminator runs under one wrapper shell, so the load generator's
# --server-pid sums the CPU and RSS of both. The load runs on CPU 1. Servers
# alternate within each round (order reversed every other round); each cell
# is the median over the rounds. Certificates (ECDSA P-256, and RSA 2048 for
# one row) are made at run time with `openssl req` in a temp dir.
#
# Usage: bench/tls_compare.sh [--quick] [--table=FILE]
#   --quick      3 rounds of 1 s windows, idle and RSA in one round, no stunnel idle row
#                (~3 minutes once built)
#   --table=FILE only print the tables of an earlier run's results (JSON lines)
# Environment:
#   ANCHORS      directory with build.sh (default: ../shared/anchors of the repository)
#   ROUNDS       rounds (default 3); DURATION / WARMUP (default 3s / 1s)
#   IDLE_TLS_DURATION / IDLE_STUNNEL_DURATION  the idle TLS window, opening included (15s, quick 10s / 45s)
#   SERVERS      subset of: rustls stunnel haproxy tcpkit (default: all)
#   ONLY         only workloads whose name matches this grep -E pattern
#   BASE_COMMIT  the plain-TCP "before" commit (default 8784738, main just before the tls feature)
#   RESULTS      JSON lines of every run (default target/tls_compare/results.jsonl)
# Prints markdown tables on stdout; progress on stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${ANCHORS:-} ]]; then
  for d in "$REPO/../shared/anchors" "$REPO/../../shared/anchors"; do
    if [[ -f $d/build.sh ]]; then ANCHORS=$(cd "$d" && pwd); break; fi
  done
fi
QUICK=0
TABLE_ONLY=
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    --table=*) TABLE_ONLY=${arg#--table=} ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "tls_compare.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
ROUNDS=${ROUNDS:-3}
if ((QUICK)); then
  DURATION=${DURATION:-1s}; WARMUP=${WARMUP:-300ms}
else
  DURATION=${DURATION:-3s}; WARMUP=${WARMUP:-1s}
fi
SERVERS=${SERVERS:-rustls stunnel haproxy tcpkit}
if ((QUICK)); then IDLE_TLS_DURATION=${IDLE_TLS_DURATION:-10s}; else IDLE_TLS_DURATION=${IDLE_TLS_DURATION:-15s}; fi
IDLE_STUNNEL_DURATION=${IDLE_STUNNEL_DURATION:-45s}
BASE_COMMIT=${BASE_COMMIT:-8784738}
RESULTS=${RESULTS:-$REPO/target/tls_compare/results.jsonl}
mkdir -p "$(dirname "$RESULTS")"
log() { echo "tls_compare: $*" >&2; }

print_table() { # results.jsonl
  python3 - "$1" <<'PY'
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
workloads, servers = [], []
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["workload"], r["server"])].append(r)
    if r["workload"] not in workloads:
        workloads.append(r["workload"])
    if r["server"] not in servers:
        servers.append(r["server"])

label = {"rustls": "`tls_echo` (rustls floor)", "stunnel": "stunnel4 + C echo",
         "haproxy": "HAProxy + C echo", "tcpkit": "`tcpkit serve --tls-cert`",
         "plain_tcpkit": "`tcpkit serve` (TLS built in, unused)",
         "plain_base": "`tcpkit serve` before TLS", "plain_epoll": "`epoll_echo` (no TLS)"}

def vals(rs, key):
    return sorted(r[key] for r in rs if r.get(key) is not None)

def med(rs, key):
    v = vals(rs, key)
    return statistics.median(v) if v else None

def cell(rs, key, spec):
    v = vals(rs, key)
    if not v:
        return "—"
    m = statistics.median(v)
    return f"{m:{spec}} ({v[0]:{spec}}–{v[-1]:{spec}})" if len(v) > 1 else f"{m:{spec}}"

def key_of(w):
    if "idle" in w:
        return "server_rss_per_conn_kib", "server RSS KiB/conn", ".2f"
    if "handshake" in w:
        return "hs_cpu_us", "server µs/handshake", ".1f"
    if "connect" in w:
        return "server_cpu_us_per_msg", "server µs/conn", ".1f"
    return "server_cpu_us_per_msg", "server µs/msg", ".2f"

for title, pick in (("TLS", lambda s: not s.startswith("plain_")),
                    ("plain TCP A/B", lambda s: s.startswith("plain_"))):
    ws = [w for w in workloads if any(pick(s) and runs.get((w, s)) for s in servers)]
    if not ws:
        continue
    ref = "rustls" if title == "TLS" else "plain_base"
    me = "tcpkit" if title == "TLS" else "plain_tcpkit"
    print(f"\n{title}: median (min–max) over rounds\n")
    print(f"| workload | server | runs | figure, median (min–max) | rate /s | server CPU % | errors | {me} ÷ this |")
    print("|---|---|---|---|---|---|---|---|")
    for w in ws:
        key, what, spec = key_of(w)
        ours = med(runs.get((w, me), []), key)
        for s in servers:
            rs = runs.get((w, s), [])
            if not pick(s) or not rs:
                continue
            mine = med(rs, key)
            if s == me:
                ratio = "1.00" if mine is not None else "—"
            elif ours is not None and mine is not None and mine < 0.05:
                ratio = "— (≈ 0)"
            elif ours is not None and mine:
                ratio = f"{ours / mine:.2f}"
            else:
                ratio = "—"
            rate = None if "idle" in w else med(rs, "per_s")
            cpu = None if "idle" in w else med(rs, "server_cpu_pct")
            errors = sum(int(r.get("errors", 0)) + int(r.get("connect_failures", 0))
                         + int(r.get("verification_failures", 0)) for r in rs)
            extra = ""
            if "resumed" in w:
                share = [r["resumed_handshakes"] / r["handshakes"] for r in rs if r.get("handshakes")]
                if share:
                    extra = f", {100 * statistics.median(share):.0f} % resumed"
            print(f"| {w} | {label.get(s, s)} | {len(rs)} | {what}: {cell(rs, key, spec)}{extra} "
                  f"| {'—' if rate is None else format(rate, ',.0f')} "
                  f"| {'—' if cpu is None else format(cpu, '.0f')} | {errors} | {ratio} |")
PY
}

if [[ -n $TABLE_ONLY ]]; then
  print_table "$TABLE_ONLY"
  exit 0
fi
[[ -n ${ANCHORS:-} ]] || { log "no ../shared/anchors/build.sh found: set ANCHORS"; exit 1; }

# --- packages -------------------------------------------------------------------
need=()
command -v taskset >/dev/null || need+=(util-linux)
command -v jq >/dev/null || need+=(jq)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
command -v stunnel4 >/dev/null || need+=(stunnel4)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq
  # The Debian haproxy package would start a service: policy-rc.d keeps
  # services down where one exists; otherwise stop only what we started.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if (($(nproc) < 2)); then log "need 2 CPUs (server on 0, load on 1)"; exit 1; fi

# --- processes we start, stopped by PID on any exit ----------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tls_compare.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

: >"$RESULTS"

# --- build ----------------------------------------------------------------------
OUT=$REPO/target/anchors
log "building the anchors into $OUT"
OUT=$OUT bash "$ANCHORS/build.sh" >/dev/null
log "building tcpkit (release)"
cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
TCPKIT=$REPO/target/release/tcpkit
# The plain-TCP "before": BASE_COMMIT's tree from git archive (no worktree
# metadata), built in its own target dir under target/ so reruns are quick.
BASE_DIR=$REPO/target/tls_compare/base-src
BASE_TARGET=$REPO/target/tls_compare/base-target
base_sha=$(git -C "$REPO" rev-parse --verify "$BASE_COMMIT^{commit}")
TCPKIT_BASE=$BASE_TARGET/release/tcpkit
if [[ ! -x $TCPKIT_BASE || $(cat "$BASE_TARGET/commit" 2>/dev/null) != "$base_sha" ]]; then
  log "building tcpkit at $BASE_COMMIT (${base_sha:0:12}) for the plain-TCP A/B"
  rm -rf "$BASE_DIR"
  mkdir -p "$BASE_DIR" "$BASE_TARGET"
  git -C "$REPO" archive "$base_sha" | tar -x -C "$BASE_DIR"
  CARGO_TARGET_DIR=$BASE_TARGET cargo build --release --quiet --manifest-path "$BASE_DIR/Cargo.toml" --bin tcpkit
  echo "$base_sha" >"$BASE_TARGET/commit"
fi
# 5,000 connections need descriptors on both sides (servers inherit this).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- the load generator ---------------------------------------------------------
if ! "$TCPKIT" bench --help 2>/dev/null | grep -q -- '--tls-resume'; then
  log "this tcpkit has no bench --tls (issue 11 item 4): nothing to measure TLS with"
  exit 1
fi

# --- certificates, made here, never kept ----------------------------------------
mkdir -p "$TMP/ec" "$TMP/rsa"
for kind in ec rsa; do
  if [[ $kind == ec ]]; then newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); else newkey=(-newkey rsa:2048); fi
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$TMP/$kind/key.pem" -out "$TMP/$kind/cert.pem" 2>/dev/null
  cat "$TMP/$kind/cert.pem" "$TMP/$kind/key.pem" >"$TMP/$kind/combined.pem"
  # The load pins the certificate (as `serve --tls` users do): a real check,
  # without a CA (webpki refuses a CA:TRUE self-signed certificate as a leaf).
  openssl x509 -in "$TMP/$kind/cert.pem" -noout -fingerprint -sha256 | sed 's/.*=//' >"$TMP/$kind/pin"
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Writes the config of terminator $1 (stunnel|haproxy) for port $2, upstream
# $3, certificate set $4 (ec|rsa) and prints its path: the anchors' configs.
terminator_config() {
  local f=$TMP/$1-$2.cfg
  case $1 in
    stunnel)
      cat >"$f" <<EOF
foreground = quiet
pid =
syslog = no
debug = 0
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[echo]
accept = 127.0.0.1:$2
connect = 127.0.0.1:$3
cert = $TMP/$4/cert.pem
key = $TMP/$4/key.pem
EOF
      ;;
    haproxy)
      cat >"$f" <<EOF
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend tls
    bind 127.0.0.1:$2 ssl crt $TMP/$4/combined.pem
    default_backend echo
backend echo
    server echo 127.0.0.1:$3
EOF
      ;;
  esac
  echo "$f"
}

# Starts server $1 on port $2 with certificate set $3, pinned to CPU 0;
# SERVER_PID is the process whose tree the load measures.
SERVER_PID=
start_server() {
  local name=$1 port=$2 certs=${3:-ec} up cfg
  case $name in
    rustls) taskset -c 0 "$OUT/tls_echo" "$port" "$TMP/$certs/cert.pem" "$TMP/$certs/key.pem" shared >"$TMP/$name.log" 2>&1 & ;;
    tcpkit) taskset -c 0 "$TCPKIT" serve --listen "127.0.0.1:$port" --mode echo --workers 1 --backlog 1024 \
      --tls-cert "$TMP/$certs/cert.pem" --tls-key "$TMP/$certs/key.pem" >"$TMP/$name.log" 2>&1 & ;;
    plain_tcpkit) taskset -c 0 "$TCPKIT" serve --listen "127.0.0.1:$port" --mode echo --workers 1 --backlog 1024 >"$TMP/$name.log" 2>&1 & ;;
    plain_base) taskset -c 0 "$TCPKIT_BASE" serve --listen "127.0.0.1:$port" --mode echo --workers 1 --backlog 1024 >"$TMP/$name.log" 2>&1 & ;;
    plain_epoll) taskset -c 0 "$OUT/epoll_echo" "$port" once >"$TMP/$name.log" 2>&1 & ;;
    stunnel|haproxy)
      up=$(free_port)
      cfg=$(terminator_config "$name" "$port" "$up" "$certs")
      local term
      if [[ $name == stunnel ]]; then term="stunnel4 $cfg"; else term="haproxy -db -f $cfg"; fi
      # One tree: the wrapper shell, the C echo and the terminator, all on
      # CPU 0; the wrapper stops both by PID when it is stopped.
      # shellcheck disable=SC2016
      taskset -c 0 bash -c 'trap "kill \$t \$e 2>/dev/null; wait; exit 0" TERM INT
        "$1" "$2" once & e=$!; $3 & t=$!; wait' wrapper "$OUT/epoll_echo" "$up" "$term" >"$TMP/$name.log" 2>&1 &
      ;;
    *) log "unknown server $name"; return 1 ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      # The upstream of a terminator must be up too: the first connection
      # through it may otherwise be refused.
      sleep 0.1
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$name exited: $(tail -3 "$TMP/$name.log")"; return 1; }
    sleep 0.05
  done
  return 1
}

stop_server() { # pid: SIGTERM, 5 s to exit, then SIGKILL
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}


# Runs load kind $1 (echo|connect|resume|idle) against $2 (port), server PID
# $3, with bench args $4 (plus --tls for TLS servers when $5 is tls); prints
# one JSON line.
run_load() {
  local kind=$1 port=$2 pid=$3 args=$4 tls=$5 dur=$6 warm=$7 certs=$8
  local mode=() extra=()
  case $kind in
    connect|resume) mode=(--mode connect) ;;
    idle) mode=(--mode idle) ;;
  esac
  [[ $kind == resume ]] && extra+=(--tls-resume)
  [[ $tls == tls ]] && extra+=(--tls --pin "$(cat "$TMP/$certs/pin")")
  # shellcheck disable=SC2086
  taskset -c 1 "$TCPKIT" -q bench --target "127.0.0.1:$port" --server-pid "$pid" \
    --client-cpu 1 --json -d "$dur" --warmup "$warm" "${mode[@]}" "${extra[@]}" $args
}

# --- workloads: name | kind | bench arguments | tls or plain | certs | rounds ---
# (rounds: "all" or "first" for the slow, steady ones: idle RSS, RSA)
WORKLOADS=(
  "echo 50 × 64 B|echo|-c 50 -s 64|tls|ec|all"
  "echo 10 × 64 KiB|echo|-c 10 -s 65536|tls|ec|all"
  "full handshake + 64 B echo (connect, 50 in flight)|connect|-c 50 -s 64|tls|ec|all"
  "resumed handshake + 64 B echo|resume|-c 50 -s 64|tls|ec|all"
  "full handshake, RSA 2048|connect|-c 50 -s 64|tls|rsa|first"
  "5,000 idle TLS connections|idle|-c 5000|tls|ec|first"
  "plain echo 50 × 64 B|echo|-c 50 -s 64|plain|ec|all"
  "plain echo 10 × 64 KiB|echo|-c 10 -s 65536|plain|ec|all"
  "plain connect (50 in flight)|connect|-c 50 -s 64|plain|ec|all"
  "plain 5,000 idle|idle|-c 5000|plain|ec|first"
)
((QUICK)) || WORKLOADS=("${WORKLOADS[@]/%|first/|all}")
if [[ -n ${ONLY:-} ]]; then
  kept=()
  for w in "${WORKLOADS[@]}"; do
    if grep -qE -- "$ONLY" <<<"${w%%|*}"; then kept+=("$w"); fi
  done
  WORKLOADS=("${kept[@]}")
fi

# tcpkit serve --tls-cert may not exist yet in this build: probe once.
tls_servers=()
for s in $SERVERS; do
  port=$(free_port)
  if start_server "$s" "$port" ec; then
    tls_servers+=("$s")
    # What each server picks from a rustls client's default offer (TLS 1.3
    # suites and groups in rustls' order): the same for all, or say so.
    got=$(openssl s_client -connect "127.0.0.1:$port" -tls1_3 \
      -ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256 \
      -groups X25519:P-256:P-384 </dev/null 2>/dev/null |
      sed -nE 's/^(New, )?(TLSv1\.3), Cipher is (.*)$/\2 \3/p; s/^(Server|Peer) Temp Key: ([^,]*).*/\2/p' | sort -u | tr '\n' ' ')
    log "$s negotiates: ${got:-nothing (no TLS 1.3?)}"
  else
    log "$s did not start (tcpkit: no serve --tls-cert in this build?): its rows are skipped"
  fi
  stop_server "$SERVER_PID"
done
plain_servers=(plain_base plain_tcpkit)

started=$(date +%s)
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name kind args tls certs which <<<"$w"
    [[ $which == first && $round -gt 1 ]] && continue
    dur=$DURATION
    warm=$WARMUP
    if [[ $kind == idle ]]; then
      # bench opens the idle connections inside its window, and 5,000 full
      # handshakes take a terminator several seconds (stunnel, a thread per
      # connection, ~5x longer); the window is held to its end either way.
      warm=0s
      dur=3s
      if [[ $tls == tls ]]; then dur=$IDLE_TLS_DURATION; fi
    fi
    if [[ $tls == tls ]]; then servers=("${tls_servers[@]}"); else servers=("${plain_servers[@]}"); fi
    order=("${servers[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
    fi
    for s in "${order[@]}"; do
      d=$dur
      if [[ $kind == idle && $tls == tls && $s == stunnel ]]; then
        # Quick mode leaves stunnel's idle row out: its handshakes alone
        # take ~30 s here (a thread per connection; ~80 KiB each, see the
        # anchors README).
        ((QUICK)) && continue
        d=$IDLE_STUNNEL_DURATION
      fi
      port=$(free_port)
      if ! start_server "$s" "$port" "$certs"; then
        log "round $round: $s did not start on port $port"
        stop_server "$SERVER_PID"
        continue
      fi
      log "round $round/$ROUNDS  $name  $s"
      if json=$(run_load "$kind" "$port" "$SERVER_PID" "$args" "$tls" "$d" "$warm" "$certs"); then
        jq -c --arg server "$s" --arg workload "$name" --argjson round "$round" \
          '. + {server: $server, workload: $workload, round: $round,
                per_s: (.handshakes_per_s // .msgs_per_s),
                hs_cpu_us: (.server_cpu_us_per_handshake // .server_cpu_us_per_msg)}' <<<"$json" >>"$RESULTS"
      else
        log "round $round: load against $s failed or not available (exit $?)"
      fi
      stop_server "$SERVER_PID"
    done
  done
done
log "done in $(($(date +%s) - started)) s; raw results in $RESULTS"
print_table "$RESULTS"
