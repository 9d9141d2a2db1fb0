#!/usr/bin/env bash
# Builds the Boost.Asio chat server example (issue 14 item 2's anchor) into
# OUT (default: target/anchors under the repository), as
# /work/shared/anchors/build.sh builds the echo anchors:
#   OUT/asio_chat_server PORT [PORT ...]   one thread, one room per port
# The source is Debian's libboost1.81-doc copy of
# examples/libs/asio/example/cpp11/chat (chat_server.cpp, chat_message.hpp),
# unchanged but for asio_chat_server.patch beside this script: bind
# 127.0.0.1 instead of 0.0.0.0 (loopback only), TCP_NODELAY on each accepted
# socket (as the echo anchors set), and print `listening on 127.0.0.1:PORT`
# per port so that port 0 works. Framing, rooms, queues and history are the
# example's own. Installs g++, libboost1.81-dev, libboost1.81-doc with
# apt-get if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/../../target/anchors}
SRC=${SRC:-/usr/share/doc/libboost1.81-doc/examples/libs/asio/example/cpp11/chat}
mkdir -p "$OUT"
need=()
for p in g++ libboost1.81-dev libboost1.81-doc; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bin=$OUT/asio_chat_server
if [[ ! -x $bin || $bin -ot $here/asio_chat_server.patch || $bin -ot $0 ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp "$SRC/chat_server.cpp" "$SRC/chat_message.hpp" "$work/"
  patch -s -d "$work" -p0 <"$here/asio_chat_server.patch"
  g++ -O2 -std=c++17 -pthread -o "$bin" "$work/chat_server.cpp"
fi
echo "$bin"
