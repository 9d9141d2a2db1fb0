#!/usr/bin/env python3
"""Clients for tests/netem.sh, on plain sockets (IP literals only, no DNS).

  echo HOST PORT IN OUT TIMEOUT_S
      send file IN while reading what comes back into OUT; after the last
      byte, shut down writing and read until the server closes (what
      `tcpkit connect` does with stdin/stdout).
  chat HOST PORT LINES TIMEOUT_S
      two chat clients: a receiver and a sender. The receiver says hello; the
      sender waits to see it (so both are in the room), then sends LINES
      numbered lines. The receiver must get every one of them, in order, with
      no gap and no duplicate, whatever prefix the server adds.

Every socket operation has a deadline; exit status 0 only on success.
"""

import socket
import sys
import threading
import time


def connect(host, port, deadline):
    sock = socket.create_connection((host, int(port)), timeout=max(1.0, deadline - time.monotonic()))
    sock.settimeout(max(1.0, deadline - time.monotonic()))
    return sock


def echo(host, port, path_in, path_out, timeout_s):
    deadline = time.monotonic() + float(timeout_s)
    sock = connect(host, port, deadline)
    failure = []

    def send():
        try:
            with open(path_in, "rb") as src:
                while chunk := src.read(1 << 16):
                    sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except OSError as err:
            failure.append(err)

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    received = 0
    with open(path_out, "wb") as dst:
        while True:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            dst.write(chunk)
            received += len(chunk)
    writer.join(max(0.1, deadline - time.monotonic()))
    if failure or writer.is_alive():
        sys.exit(f"echo: sending failed: {failure or 'timed out'}")
    print(f"echo: received {received} bytes")


def read_lines(sock, buf):
    """Yields complete lines (bytes without the newline), reading as needed."""
    while True:
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            yield line.rstrip(b"\r")
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        buf.extend(chunk)


def chat(host, port, lines, timeout_s):
    lines = int(lines)
    deadline = time.monotonic() + float(timeout_s)
    sender = connect(host, port, deadline)
    sender_lines = read_lines(sender, bytearray())
    # Wait for the sender's welcome before the receiver speaks: connect()
    # returns once the client has ACKed, but if that ACK is lost (5% loss)
    # the server accepts the sender only after a SYN-ACK retransmit, a second
    # later. A hello sent in that window reached a room without the sender,
    # and the sender then waited for it until the idle timeout.
    for line in sender_lines:
        if line.startswith(b"* welcome"):
            break
    else:
        sys.exit("chat: the sender got no welcome")
    receiver = connect(host, port, deadline)
    receiver.sendall(b"netem-receiver-hello\n")
    for line in sender_lines:
        if b"netem-receiver-hello" in line:
            break
    else:
        sys.exit("chat: the sender never saw the receiver join")

    def send():
        # Paced like a chatty user (200 lines/s), not pasted: a paste of more
        # lines than the server's per-client queue is a different test
        # (tests/hostile.rs, chat bursts).
        for i in range(lines):
            sender.sendall(b"netem-chat-seq-%06d payload\n" % i)
            time.sleep(0.005)

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    expected = 0
    for line in read_lines(receiver, bytearray()):
        marker = line.find(b"netem-chat-seq-")
        if marker < 0:
            continue  # join/leave notices and the like
        seq = int(line[marker + 15 : marker + 21])
        if seq != expected:
            sys.exit(f"chat: expected line {expected}, got {seq}: {line!r}")
        expected += 1
        if expected == lines:
            break
    writer.join(max(0.1, deadline - time.monotonic()))
    if expected != lines:
        sys.exit(f"chat: received {expected} of {lines} lines before the server closed")
    sender.close()
    receiver.close()
    print(f"chat: {lines} lines arrived in order")


if __name__ == "__main__":
    try:
        {"echo": echo, "chat": chat}[sys.argv[1]](*sys.argv[2:])
    except (OSError, KeyError, TypeError) as err:
        sys.exit(f"netem_peer {' '.join(sys.argv[1:2])}: {err!r}")
