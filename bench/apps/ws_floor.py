"""Calibration, not a framework: the least a Python server can do per WebSocket echo.

A bare uvloop protocol that answers the handshake and echoes each (small, masked, complete)
frame: no validation, no routing, no handler task. It tells how close stonechat is to what
Python on uvloop can do at all (the HTTP issue's "practical ceiling" idea, applied to the
WebSocket echo). Measured by hand, as bench/README.md ("Calibration") shows:

    BENCH_PORT=18096 taskset -c 0 .venv/bin/python bench/apps/ws_floor.py &
    taskset -c 1 python3 bench/wsload.py ws://127.0.0.1:18096/ws -c 1 -d 5
    # server CPU: utime+stime of the server from /proc/PID/stat before and after
"""

import asyncio
import base64
import hashlib
import os

import uvloop
from websockets.speedups import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.upgraded = False
        self.buf = b""

    def data_received(self, data):
        if not self.upgraded:
            self.buf += data
            if b"\r\n\r\n" not in self.buf:
                return
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.upgraded = True
            data, self.buf = self.buf, b""
            if not data:
                return
        buf = self.buf + data if self.buf else data
        pos = 0
        out = []
        while len(buf) - pos >= 6:
            n = buf[pos + 1] & 0x7F  # small frames only (the bench sends 64 bytes)
            end = pos + 6 + n
            if end > len(buf):
                break
            payload = apply_mask(buf[pos + 6:end], buf[pos + 2:pos + 6])
            out.append(bytes((buf[pos], n)) + payload)
            pos = end
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", int(os.environ["BENCH_PORT"]))
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
