#!/usr/bin/env python3
"""A userspace netem for kernels built without sch_netem: loss, delay, jitter
and reordering for the packets an nftables rule sends to NFQUEUE.

tests/netem.sh uses `tc qdisc ... netem` when the kernel has it and falls back
to this otherwise. Run inside a network namespace, it binds queue QUEUE over
nfnetlink (raw netlink, no third-party module), and for each packet:

  * drops it with probability LOSS,
  * with probability REORDER accepts it at once (it overtakes those waiting,
    as netem's `reorder`),
  * otherwise holds it DELAY +/- JITTER ms (uniform), then accepts it; packets
    with different delays leave out of order, as netem's jitter does.

On SIGTERM it prints one line of counters to stderr and exits 0. Only packet
metadata is copied to userspace (NFQNL_COPY_META), never payloads.

usage: netem_impair.py QUEUE LOSS DELAY_MS JITTER_MS REORDER SEED
"""

import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
SO_RCVBUFFORCE = 33


def attr(kind, data):
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


class Queue:
    def __init__(self, num):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.config(attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self.config(attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        self.config(attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536)))

    def send(self, msg_type, attrs, flags=NLM_F_REQUEST):
        self.seq += 1
        payload = struct.pack("!BBH", socket.AF_UNSPEC, 0, self.num) + attrs
        header = struct.pack(
            "=IHHII", 16 + len(payload), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, self.seq, 0
        )
        self.sock.send(header + payload)

    def config(self, attrs):
        self.send(NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK)
        for msg_type, body in self.messages(self.sock.recv(65536)):
            if msg_type == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", body)
                if err != 0:
                    raise OSError(-err, "nfqueue config: " + os.strerror(-err))

    def verdict(self, packet_id, verdict):
        self.send(NFQNL_MSG_VERDICT, attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id)))

    @staticmethod
    def messages(buf):
        off = 0
        while off + 16 <= len(buf):
            length, msg_type, _flags, _seq, _pid = struct.unpack_from("=IHHII", buf, off)
            if length < 16:
                break
            yield msg_type, buf[off + 16 : off + length]
            off += (length + 3) & ~3

    def packet_ids(self, buf):
        for msg_type, body in self.messages(buf):
            if msg_type != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            off = 4  # nfgenmsg
            while off + 4 <= len(body):
                length, kind = struct.unpack_from("=HH", body, off)
                if length < 4:
                    break
                if kind & 0x7FFF == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", body, off + 4)[0]
                    break
                off += (length + 3) & ~3


def main():
    num, loss, delay_ms, jitter_ms, reorder, seed = sys.argv[1:7]
    num, loss, reorder = int(num), float(loss), float(reorder)
    delay, jitter = float(delay_ms) / 1000, float(jitter_ms) / 1000
    rng = random.Random(int(seed))
    queue = Queue(num)
    counts = {"packets": 0, "dropped": 0, "reordered": 0, "delayed": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    held = []  # (release time, order, packet id)
    order = 0
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            queue.verdict(heapq.heappop(held)[2], NF_ACCEPT)
        timeout = max(0.0, held[0][0] - now) if held else 0.5
        try:
            readable, _, _ = select.select([queue.sock], [], [], timeout)
        except InterruptedError:
            continue
        if not readable:
            continue
        try:
            buf = queue.sock.recv(1 << 20)
        except OSError as err:  # ENOBUFS: the kernel dropped queue messages
            print(f"netem_impair: recv: {err}", file=sys.stderr)
            continue
        now = time.monotonic()
        for packet_id in queue.packet_ids(buf):
            counts["packets"] += 1
            roll = rng.random()
            if roll < loss:
                counts["dropped"] += 1
                queue.verdict(packet_id, NF_DROP)
            elif roll < loss + reorder * (1 - loss):
                counts["reordered"] += 1
                queue.verdict(packet_id, NF_ACCEPT)
            else:
                counts["delayed"] += 1
                order += 1
                release = now + delay + rng.uniform(-jitter, jitter)
                heapq.heappush(held, (release, order, packet_id))
    for _, _, packet_id in held:
        queue.verdict(packet_id, NF_ACCEPT)
    print("netem_impair: " + " ".join(f"{k}={v}" for k, v in counts.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
