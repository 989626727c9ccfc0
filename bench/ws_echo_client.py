#!/usr/bin/env python3
"""Exactly N 64-byte text messages echoed over one WebSocket, one in flight (a closed loop), to
ws://127.0.0.1:PORT/PATH: the fixed amount of work bench/ws_server_instructions.sh counts a
server's instructions for (bench/wsload.py runs for a time instead, so its count varies).

    python3 bench/ws_echo_client.py PORT PATH N
"""

import base64
import os
import socket
import sys

from wsload import masked_frame

SIZE = 64


def main():
    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("ws_echo_client: the server closed during the handshake")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"ws_echo_client: no upgrade: {head[:80]!r}")
    frame = masked_frame(0x1, b"x" * SIZE)
    echo = 2 + SIZE  # an unmasked server frame: two header bytes and the payload
    for _ in range(n):
        sock.sendall(frame)
        while len(buf) < echo:
            chunk = sock.recv(4096)
            if not chunk:
                sys.exit("ws_echo_client: the server closed mid-run")
            buf += chunk
        buf = buf[echo:]
    sock.close()
    print(f"{n} messages echoed")


if __name__ == "__main__":
    main()
