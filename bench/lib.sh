# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts (sourced, not run): the packages a
# script needs, free loopback ports chosen at run time, processes started in
# the background and stopped by PID (never by name), and waiting for a port.
#
#   . "$(dirname "$0")/lib.sh"
#   BENCH_NAME=relay_compare          # prefix of log lines
#   need_tools taskset:util-linux jq:jq python3:python3
#   need_cpus 2
#   trap stop_all EXIT; trap 'exit 130' INT TERM
#   taskset -c 0 some-server "$port" & track $!
#   wait_port "$port" "$!" || ...
#   stop_pid "$pid"                   # SIGTERM, 5 s, then SIGKILL; forgets it
#
# Pinning is the caller's: `taskset -c CPU` on each command, and `tcpkit
# bench --client-cpu 1`; CPU time comes from /proc/PID/stat through `tcpkit
# bench --server-pid PID` (the PID and its descendants).

# Processes started by the script, stopped by stop_all.
PIDS=()

log() { echo "${BENCH_NAME:-bench}: $*" >&2; }

# need_tools CMD:PACKAGE...: installs (apt-get) the packages of the commands
# that are missing.
need_tools() {
  local need=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || need+=("${spec#*:}")
  done
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# need_cpus N: exits unless the machine has N CPUs (one for the server, one
# for the load).
need_cpus() {
  if (($(nproc) < $1)); then
    log "need $1 CPUs (server on CPU 0, load on CPU 1)"
    exit 1
  fi
}

# A free loopback TCP port, chosen now (never a fixed one).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# track PID: stop_all stops it.
track() { PIDS+=("$1"); }

# forget PID: stopped elsewhere.
forget() {
  local kept=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# wait_port PORT PID [TRIES]: until 127.0.0.1:PORT accepts a connection (50 ms
# apart, 100 tries by default); fails at once if PID has exited.
wait_port() {
  local _
  for _ in $(seq "${3:-100}"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaps and forgets it.
stop_pid() {
  local pid=$1 _
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

# stop_all: SIGTERM to every tracked PID, then reap them (the EXIT trap).
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

# keep_only PATTERN NAME...: the NAMEs (workload lines "name|...") whose name
# part matches the grep -E PATTERN; all of them when PATTERN is empty.
keep_only() {
  local pattern=$1 w
  shift
  for w in "$@"; do
    if [[ -z $pattern ]] || grep -qE -- "$pattern" <<<"${w%%|*}"; then printf '%s\n' "$w"; fi
  done
}

# reversed_if_even ROUND NAME...: the NAMEs, in reverse order in even rounds
# (alternating order between rounds), one a line.
reversed_if_even() {
  local round=$1 i
  shift
  local items=("$@")
  if ((round % 2 == 0)); then
    for ((i = ${#items[@]} - 1; i >= 0; i--)); do printf '%s\n' "${items[i]}"; done
  else
    printf '%s\n' "${items[@]}"
  fi
}
