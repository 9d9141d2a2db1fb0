# shellcheck shell=bash
# Shared by bench/chat_compare.sh and bench/chat_scaleout.sh (sourced).

# The loopback ports (hex in /proc/net/tcp) that PID and its descendants
# listen on, one a line.
ports_of() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
kids = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(p))
tree, todo = [], [root]
while todo:
    p = todo.pop()
    tree.append(p)
    todo.extend(kids.get(p, []))
inodes = set()
for p in tree:
    try:
        for fd in os.listdir(f"/proc/{p}/fd"):
            link = os.readlink(f"/proc/{p}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
for line in open("/proc/net/tcp").readlines()[1:]:
    f = line.split()
    if f[3] == "0A" and f[9] in inodes:
        print(int(f[1].split(":")[1], 16))
PY
}

# A loopback port free right now (bound on port 0 and released), for
# servers that cannot listen on port 0 and say which port they got
# (redis-server). A bench script's race, not a test's: nothing else here
# binds fixed ports.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_tree PID: TERM to PID's children, then PID; waits for PID.
stop_tree() {
  local kids
  kids=$(pgrep -P "$1" || true)
  if [[ -n $kids ]]; then
    # shellcheck disable=SC2086 # one PID a word
    kill -TERM $kids 2>/dev/null || true
  fi
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
