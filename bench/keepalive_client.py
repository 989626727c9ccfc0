#!/usr/bin/env python3
"""Exactly N requests over C keep-alive connections, one in flight on each (a closed loop), to
127.0.0.1:PORT: the fixed amount of work bench/server_instructions.sh counts a server's
instructions for. Standard library only; responses are framed by Content-Length.

    python3 bench/keepalive_client.py PORT N C [PATH [METHOD]]   # PATH /q... adds x-token, POST a 1 KiB body

A ``{n}`` in PATH is replaced by each request's number (``/user/{n}``: every request a new
target, for costs that a repeated request might hide, e.g. the access log's).
"""

import selectors
import socket
import sys
import time


def main():
    port, n, c = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "/"
    method = sys.argv[5] if len(sys.argv) > 5 else "GET"
    extra, body = b"", b""
    if path.startswith("/q"):
        extra = b"x-token: abc123\r\n"
    if method == "POST":
        body = b"x" * 1024
        extra += b"content-type: text/plain\r\ncontent-length: 1024\r\n"
    request = b"%s %s HTTP/1.1\r\nhost: 127.0.0.1\r\n%s\r\n%s" % (method.encode(), path.encode(), extra, body)
    if "{n}" in path:
        template = request.replace(b"%", b"%%").replace(b"{n}", b"%d")
        numbered = iter(range(10 ** 9))

        def request_for() -> bytes:
            return template % next(numbered)
    else:
        def request_for() -> bytes:
            return request
    sel = selectors.DefaultSelector()
    pending = {}
    sent = done = 0
    for _ in range(min(c, n)):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
        s.send(request_for())
        sent += 1
    deadline = time.monotonic() + 600
    while done < n and time.monotonic() < deadline:
        for key, _ in sel.select(5):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit("the server closed a connection")
            buf = pending[s] + data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].lower()
                at = head.find(b"content-length:")
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15:stop if stop > 0 else None]) if at >= 0 else 0
                if len(buf) < end + 4 + length:
                    break
                buf = buf[end + 4 + length:]
                done += 1
                if sent < n:
                    s.send(request_for())
                    sent += 1
            pending[s] = buf
    for s in pending:
        s.close()
    print("done", done)
    sys.exit(0 if done == n else 1)


if __name__ == "__main__":
    main()
