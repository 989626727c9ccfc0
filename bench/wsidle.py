#!/usr/bin/env python3
"""Idle WebSocket client for bench/memory.py (standard library only).

Holds many WebSocket connections open and idle, driven by line commands on stdin:

    open N          open N more connections: handshake (Sec-WebSocket-Accept checked), then one
                    64-byte text message each and its echo, so every server-side handler has run
                    and is back waiting in receive_text(); answers `OPENED {json}`
    pings-reset     forget the pings seen so far (start of a keepalive window); answers `RESET`
    pings-report    `PINGS {json}`: per connection, the gaps between the pings it received since
                    the reset, plus connections that got none and ones the server closed
    status          `STATUS {json}`: open / closed counts
    quit            close everything (close frame, then the socket) and exit

Between commands it keeps serving every socket: a ping gets its pong at once (the arrival time
is recorded), a close frame or EOF counts as closed by the server. Handshakes run in a window
of at most --window at a time so the server's listen backlog is never overrun. Sockets bind
to --source (a 127.0.0.x address) so several clients never compete for ephemeral ports.

Raises its RLIMIT_NOFILE to the hard limit; refuses targets other than 127.0.0.1; holds at
most 20,000 connections per process.
"""

import argparse
import base64
import errno
import hashlib
import json
import os
import resource
import select
import socket
import sys
import time
from urllib.parse import urlsplit

MAX_CONNECTIONS = 20_000
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAYLOAD = (b"stonechat-idle-" * 5)[:64]

CONNECTING, HANDSHAKE, ECHO, IDLE = range(4)


def masked_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
    return head + mask + body


def parse_frames(buf):
    """Complete server frames (opcode, payload) at the front of buf, and the rest."""
    frames, pos, end = [], 0, len(buf)
    while end - pos >= 2:
        n = buf[pos + 1] & 0x7F
        i = pos + 2
        if n == 126:
            if end - i < 2:
                break
            n = int.from_bytes(buf[i:i + 2], "big")
            i += 2
        elif n == 127:
            if end - i < 8:
                break
            n = int.from_bytes(buf[i:i + 8], "big")
            i += 8
        if end - i < n:
            break
        frames.append((buf[pos] & 0x0F, bytes(buf[i:i + n])))
        pos = i + n
    return frames, buf[pos:]


class Conn:
    __slots__ = ("sock", "state", "key", "buf", "pings", "started")

    def __init__(self, sock, key):
        self.sock, self.key = sock, key
        self.state = CONNECTING
        self.buf = b""
        self.pings = []
        self.started = time.monotonic()


class Client:
    def __init__(self, host, port, path, source, window):
        self.host, self.port, self.path, self.source, self.window = host, port, path, source, window
        self.ep = select.epoll()
        self.conns = {}
        self.closed = 0
        self.failed = []
        self.unexpected = 0
        self.reset_at = time.monotonic()

    # -- opening ---------------------------------------------------------------------------------
    def start_one(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((self.source, 0))
        s.setblocking(False)
        err = s.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, os.strerror(err))
        c = Conn(s, base64.b64encode(os.urandom(16)))
        self.conns[s.fileno()] = c
        self.ep.register(s.fileno(), select.EPOLLOUT)
        return c

    def fail(self, fd, why):
        c = self.conns.pop(fd)
        self.ep.unregister(fd)
        c.sock.close()
        self.failed.append(why)

    def open(self, n, timeout):
        target = len([c for c in self.conns.values() if c.state == IDLE]) + n
        started = 0
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            busy = sum(1 for c in self.conns.values() if c.state != IDLE) if started else 0
            while started < n and busy < self.window:
                try:
                    self.start_one()
                except OSError as exc:
                    self.failed.append(f"connect: {exc}")
                started += 1
                busy += 1
            idle = sum(1 for c in self.conns.values() if c.state == IDLE)
            if started >= n and busy == 0:
                break
            if time.monotonic() > deadline:
                for fd, c in list(self.conns.items()):
                    if c.state != IDLE:
                        self.fail(fd, "timed out opening")
                break
            self.step(0.2)
        idle = sum(1 for c in self.conns.values() if c.state == IDLE)
        return {"open": idle, "wanted": target, "failed": len(self.failed),
                "first_failures": self.failed[:5], "seconds": round(time.monotonic() - t0, 2),
                "closed_by_server": self.closed}

    # -- the loop --------------------------------------------------------------------------------
    def step(self, timeout):
        for fd, ev in self.ep.poll(timeout):
            c = self.conns.get(fd)
            if c is None:
                continue
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.fail(fd, f"connect: {os.strerror(err)}")
                    continue
                req = (f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {c.key.decode()}\r\n"
                       f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
                try:
                    c.sock.send(req)
                except OSError as exc:
                    self.fail(fd, f"send handshake: {exc}")
                    continue
                c.state = HANDSHAKE
                self.ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                if c.state == IDLE:
                    self.closed += 1
                    self.conns.pop(fd)
                    self.ep.unregister(fd)
                    c.sock.close()
                else:
                    self.fail(fd, "closed by the server while opening")
                continue
            c.buf += data
            if c.state == HANDSHAKE:
                if b"\r\n\r\n" not in c.buf:
                    continue
                head, _, c.buf = c.buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                if lines[0].split(b" ")[1:2] != [b"101"]:
                    self.fail(fd, f"handshake answered {lines[0][:60]!r}")
                    continue
                want = base64.b64encode(hashlib.sha1(c.key + WS_GUID).digest())
                got = [line.split(b":", 1)[1].strip() for line in lines[1:]
                       if line.lower().startswith(b"sec-websocket-accept:")]
                if got != [want]:
                    self.fail(fd, "wrong Sec-WebSocket-Accept")
                    continue
                c.state = ECHO
                c.sock.send(masked_frame(0x1, PAYLOAD))
            frames, c.buf = parse_frames(c.buf)
            for op, payload in frames:
                if op == 0x9:
                    c.pings.append(time.monotonic())
                    try:
                        c.sock.send(masked_frame(0xA, payload))
                    except OSError:
                        pass
                elif op == 0x8:
                    if c.state == IDLE:
                        self.closed += 1
                        self.conns.pop(fd)
                        self.ep.unregister(fd)
                        c.sock.close()
                    else:
                        self.fail(fd, f"close frame while opening: {payload[:40]!r}")
                    break
                elif op == 0x1 and c.state == ECHO:
                    if payload != PAYLOAD:
                        self.fail(fd, "echo did not match")
                        break
                    c.state = IDLE
                elif op != 0xA:
                    self.unexpected += 1

    def pings_report(self):
        gaps, counts, none = [], [], 0
        for c in self.conns.values():
            if c.state != IDLE:
                continue
            p = [t for t in c.pings if t >= self.reset_at]
            counts.append(len(p))
            if not p:
                none += 1
            gaps.extend(round(b - a, 4) for a, b in zip(p, p[1:]))
        return {"connections": len(counts), "no_ping": none, "gaps_s": gaps,
                "min_pings": min(counts) if counts else 0, "max_pings": max(counts) if counts else 0,
                "window_s": round(time.monotonic() - self.reset_at, 2), "closed_by_server": self.closed,
                "unexpected_frames": self.unexpected}

    def quit(self):
        frame = masked_frame(0x8, (1000).to_bytes(2, "big"))
        for c in self.conns.values():
            try:
                c.sock.send(frame)
            except OSError:
                pass
        time.sleep(0.2)
        for c in self.conns.values():
            c.sock.close()
        self.conns.clear()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="ws://127.0.0.1:PORT/PATH")
    ap.add_argument("--source", default="127.0.0.1", help="local address to bind (127.0.0.x)")
    ap.add_argument("--window", type=int, default=256, help="handshakes in progress at once")
    ap.add_argument("--open-timeout", type=float, default=180.0, help="seconds for one `open` command")
    args = ap.parse_args(argv)
    parts = urlsplit(args.url)
    if parts.scheme != "ws" or parts.hostname != "127.0.0.1":
        ap.error("only ws://127.0.0.1 URLs")
    if not args.source.startswith("127."):
        ap.error("--source must be a loopback address")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    client = Client("127.0.0.1", parts.port or 80, parts.path or "/", args.source, args.window)
    stdin = sys.stdin.fileno()
    client.ep.register(stdin, select.EPOLLIN)
    pending = b""
    out = sys.stdout

    def reply(word, obj=None):
        out.write(word + ("" if obj is None else " " + json.dumps(obj)) + "\n")
        out.flush()

    while True:
        events = client.ep.poll(1.0)
        if any(fd == stdin for fd, _ in events):
            chunk = os.read(stdin, 4096)
            if not chunk:
                client.quit()
                return 0
            pending += chunk
        # serve sockets (events for stdin are skipped inside step, which polls again: cheap)
        client.step(0)
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            cmd = line.decode().split()
            if not cmd:
                continue
            if cmd[0] == "open":
                n = int(cmd[1])
                if len(client.conns) + n > MAX_CONNECTIONS:
                    reply("OPENED", {"error": f"more than {MAX_CONNECTIONS} connections in one process"})
                    continue
                reply("OPENED", client.open(n, args.open_timeout))
            elif cmd[0] == "pings-reset":
                client.reset_at = time.monotonic()
                reply("RESET")
            elif cmd[0] == "pings-report":
                reply("PINGS", client.pings_report())
            elif cmd[0] == "status":
                reply("STATUS", {"open": sum(1 for c in client.conns.values() if c.state == IDLE),
                                 "closed_by_server": client.closed})
            elif cmd[0] == "quit":
                client.quit()
                reply("BYE")
                return 0


if __name__ == "__main__":
    sys.exit(main())
