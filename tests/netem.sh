#!/usr/bin/env bash
# tcpkit over a bad network: two network namespaces joined by a veth pair,
# both ends impaired with 5% loss, 20 ms +/- 5 ms delay and reordering.
# `tcpkit serve` runs in one namespace; from the other,
#   * NETEM_BYTES (default 64 MiB) of random data must come back byte-exact
#     from `--mode echo` (via `tcpkit connect` when the binary has it, else a
#     Python socket client), and
#   * NETEM_LINES (default 1000) chat lines from one client must reach another
#     in order, with no gap or duplicate, through `--mode chat`.
#
# Impairment: `tc qdisc ... netem` when the kernel has sch_netem; otherwise an
# iptables NFQUEUE rule hands each outgoing packet to tests/netem_impair.py (NFQUEUE),
# which drops, delays and reorders with the same parameters.
#
# Root only. Traffic stays inside the two namespaces (10.x/30 addresses exist
# only there). Every step has a timeout; the EXIT trap kills what it started
# (by PID) and deletes the namespaces even on failure.
#
# The veth pair runs at NETEM_MTU (default 9000, jumbo frames): TCP's
# throughput under random loss grows with the segment size (Mathis et al.:
# MSS / (RTT * sqrt(p))), so 64 MiB takes about 65 s instead of 6.5 min at
# 1500, with the same 5% of packets lost, delayed and reordered. Set
# NETEM_MTU=1500 for Ethernet-sized segments.
#
# Env: TCPKIT (binary to use; default: build target/release/tcpkit),
#      NETEM_BYTES, NETEM_LINES, NETEM_MTU, NETEM_TIMEOUT (seconds per
#      transfer, 900).
set -euo pipefail
cd "$(dirname "$0")/.."

bytes=${NETEM_BYTES:-$((64 * 1024 * 1024))}
lines=${NETEM_LINES:-1000}
mtu=${NETEM_MTU:-9000}
transfer_timeout=${NETEM_TIMEOUT:-900}
loss=5 delay_ms=20 jitter_ms=5 reorder=25

if [[ $(id -u) -ne 0 ]]; then
  echo "netem: needs root (network namespaces)" >&2
  exit 1
fi

if [[ -z ${TCPKIT:-} ]]; then
  timeout 1200 cargo build --release --quiet
  TCPKIT=target/release/tcpkit
fi
TCPKIT=$(realpath "$TCPKIT")

ns_srv=tkns$$s ns_cli=tkns$$c
veth_srv=tkv$$s veth_cli=tkv$$c
addr_srv=10.213.7.1 addr_cli=10.213.7.2
work=$(mktemp -d)
pids=()

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  for log in "$work"/impair-*.log; do
    [[ -s $log ]] && sed 's/^/  /' "$log" >&2
  done
  ip netns del "$ns_srv" 2>/dev/null || true
  ip netns del "$ns_cli" 2>/dev/null || true
  rm -rf "$work"
  if ((status == 0)); then echo "netem: PASS"; else echo "netem: FAIL (status $status)" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_srv() { ip netns exec "$ns_srv" "$@"; }
in_cli() { ip netns exec "$ns_cli" "$@"; }

echo "== namespaces $ns_srv ($addr_srv) <-> $ns_cli ($addr_cli)"
ip netns add "$ns_srv"
ip netns add "$ns_cli"
ip link add "$veth_srv" type veth peer name "$veth_cli"
ip link set "$veth_srv" netns "$ns_srv"
ip link set "$veth_cli" netns "$ns_cli"
in_srv ip addr add "$addr_srv/30" dev "$veth_srv"
in_cli ip addr add "$addr_cli/30" dev "$veth_cli"
for ns in "$ns_srv" "$ns_cli"; do ip -n "$ns" link set lo up; done
in_srv ip link set "$veth_srv" up
in_cli ip link set "$veth_cli" up
# One skb per wire-sized packet (no GSO/GRO super-packets), so loss and
# reordering hit individual segments as they would on a real link.
for pair in "$ns_srv:$veth_srv" "$ns_cli:$veth_cli"; do
  ip -n "${pair%%:*}" link set "${pair#*:}" mtu "$mtu"
  ip -n "${pair%%:*}" link set "${pair#*:}" gso_max_segs 1 gso_max_size "$mtu" gro_max_size "$mtu" ||
    echo "   (could not limit GSO on ${pair#*:}: impairment hits whole super-packets)"
done

impair() { # namespace device seed
  local ns=$1 dev=$2 seed=$3
  if ip netns exec "$ns" tc qdisc add dev "$dev" root netem \
    loss "$loss%" delay "${delay_ms}ms" "${jitter_ms}ms" reorder "$reorder%" 50% 2>/dev/null; then
    echo "   $dev: tc netem loss $loss% delay ${delay_ms}ms ${jitter_ms}ms reorder $reorder% 50%"
    return
  fi
  if ! command -v iptables >/dev/null; then
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq iptables >/dev/null ||
      { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq iptables >/dev/null; }
  fi
  local ready=$work/impair-$dev.ready
  ip netns exec "$ns" python3 -u tests/netem_impair.py 0 "0.0$loss" "$delay_ms" "$jitter_ms" \
    "0.$reorder" "$seed" >"$ready" 2>"$work/impair-$dev.log" &
  pids+=($!)
  timeout 10 bash -c "until grep -qs ready '$ready'; do sleep 0.1; done"
  # The NFQUEUE target (xtables; nftables' own `queue` may not be built in).
  # Without --queue-bypass a dead impairer blackholes the link: a loud failure.
  local rule=(-t mangle -A POSTROUTING -o "$dev" -j NFQUEUE --queue-num 0)
  ip netns exec "$ns" iptables "${rule[@]}" 2>/dev/null ||
    ip netns exec "$ns" iptables-legacy "${rule[@]}"
  echo "   $dev: no sch_netem in this kernel; NFQUEUE impairer: loss $loss% delay ${delay_ms}ms +/-${jitter_ms}ms reorder $reorder%"
}
echo "== impairing both ends (MTU $mtu)"
impair "$ns_srv" "$veth_srv" 1
impair "$ns_cli" "$veth_cli" 2

serve() { # mode -> sets $port
  local mode=$1 out=$work/serve-$1.out
  # `ip netns exec` execs the server, so $! is the server's own PID.
  ip netns exec "$ns_srv" "$TCPKIT" serve --listen "$addr_srv:0" --mode "$mode" >"$out" 2>"$work/serve-$mode.err" &
  pids+=($!)
  serve_pid=$!
  if ! timeout 10 bash -c "until grep -qs '^listening on ' '$out'; do sleep 0.1; done"; then
    echo "serve --mode $mode did not print its listening line:" >&2
    cat "$out" "$work/serve-$mode.err" >&2
    return 1
  fi
  port=$(sed -n 's/^listening on [^ ]*:\([0-9]*\) .*/\1/p' "$out" | head -n1)
  echo "   $(head -n1 "$out")"
}

stop_server() { # pid: SIGTERM must end it with status 0
  local pid=$1 status=0
  kill -TERM "$pid"
  timeout 15 tail --pid="$pid" -f /dev/null || { echo "server $pid ignored SIGTERM" >&2; return 1; }
  wait "$pid" || status=$?
  if ((status != 0)); then echo "server exited $status after SIGTERM" >&2; return 1; fi
}

echo "== echo: $bytes random bytes through $addr_srv"
serve echo
head -c "$bytes" /dev/urandom >"$work/sent"
start_ns=$(date +%s%N)
if "$TCPKIT" connect --help >/dev/null 2>&1; then
  via="tcpkit connect"
  timeout "$transfer_timeout" ip netns exec "$ns_cli" "$TCPKIT" connect "$addr_srv:$port" \
    <"$work/sent" >"$work/received"
else
  via="python3 socket client (no tcpkit connect in this build)"
  timeout "$transfer_timeout" ip netns exec "$ns_cli" python3 tests/netem_peer.py echo \
    "$addr_srv" "$port" "$work/sent" "$work/received" "$transfer_timeout"
fi
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
cmp "$work/sent" "$work/received"
echo "   $bytes bytes echoed byte-exact in ${elapsed_ms} ms via $via"
stop_server "$serve_pid"

echo "== chat: $lines lines from one client to another"
serve chat
timeout "$transfer_timeout" ip netns exec "$ns_cli" python3 tests/netem_peer.py chat \
  "$addr_srv" "$port" "$lines" "$transfer_timeout" | sed 's/^/   /'
stop_server "$serve_pid"
