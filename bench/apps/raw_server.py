"""The ceiling, not a framework: the least a Python server on uvloop + httptools does per scenario.

bench/run.py runs it beside the frameworks to show the floor of server CPU per request that
Python on uvloop + httptools can reach at all. It stays honest, so that the gap to it means
something:

- HTTP/1.1 through httptools' parser: keep-alive (closed on `Connection: close` and for
  HTTP/1.0 without keep-alive), pipelined requests answered in order, a 400 for a request the
  parser rejects, a 404/405 for unknown routes, a Date header refreshed once a second, and an
  exact Content-Length on every response.
- Real work per scenario: JSON encoded per request with orjson, the query string split and
  percent-decoded (urllib.parse.parse_qsl) per request, headers collected per request, the
  POST body read to its end before it is echoed.
- WebSocket /ws: the RFC 6455 handshake checked (Upgrade, Connection, Version 13, a 16-byte
  key), frames parsed in full (7/16/64-bit lengths, client masking required, frames split
  across reads, fragmented messages reassembled), text echoed as text and binary as binary,
  ping answered with pong, close answered and the connection closed.

No routing table, no request or response objects, no handler task: that is the point.
Port from env BENCH_PORT; host 127.0.0.1. Needs uvloop, httptools, orjson and websockets
(only for its C `apply_mask`), in bench/.venv-raw.
"""

import asyncio
import base64
import hashlib
import os
import signal
from email.utils import formatdate
from urllib.parse import parse_qsl

import httptools
import orjson
import uvloop
from websockets.speedups import apply_mask

HELLO = b"Hello, world!"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024

DATE = [b""]


def refresh_date(loop):
    DATE[0] = b"date: " + formatdate(usegmt=True).encode() + b"\r\nserver: raw\r\n"
    loop.call_later(1.0, refresh_date, loop)


def response(status, ctype, body, keep_alive):
    return b"".join((
        b"HTTP/1.1 ", status, b"\r\ncontent-type: ", ctype, b"\r\ncontent-length: ",
        str(len(body)).encode(), b"\r\n", DATE[0],
        b"" if keep_alive else b"connection: close\r\n", b"\r\n", body))


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "headers", "body", "ws")

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers = {}
        self.body = []
        self.ws = None

    def data_received(self, data):
        if self.ws is not None:
            self.ws.feed(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrade(data[exc.args[0]:] if exc.args else b"")
        except httptools.HttpParserError:
            self.transport.write(response(b"400 Bad Request", b"text/plain", b"malformed request", False))
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self):
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.lower()] = value

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        if self.parser.should_upgrade():
            return  # answered in upgrade()
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        url = httptools.parse_url(self.url)
        path = url.path
        if method == b"GET":
            if path == b"/":
                out = response(b"200 OK", b"text/plain; charset=utf-8", HELLO, keep)
            elif path == b"/json":
                out = response(b"200 OK", b"application/json", orjson.dumps({"message": "Hello, world!"}), keep)
            elif path.startswith(b"/user/") and len(path) > 6 and b"/" not in path[6:]:
                out = response(b"200 OK", b"application/json", orjson.dumps({"id": path[6:].decode()}), keep)
            elif path == b"/q":
                query = dict(parse_qsl(url.query.decode("latin-1"))) if url.query else {}
                token = self.headers.get(b"x-token")
                out = response(b"200 OK", b"application/json", orjson.dumps({
                    "name": query.get("name", ""),
                    "token": token.decode("latin-1") if token is not None else None}), keep)
            else:
                out = response(b"404 Not Found", b"text/plain", b"not found", keep)
        elif path == b"/echo":
            if method == b"POST":
                body = b"".join(self.body)
                ctype = self.headers.get(b"content-type", b"application/octet-stream")
                out = response(b"200 OK", ctype, body, keep)
            else:
                out = response(b"405 Method Not Allowed", b"text/plain", b"method not allowed", keep)
        else:
            out = response(b"404 Not Found", b"text/plain", b"not found", keep)
        self.transport.write(out)
        if not keep:
            self.transport.close()

    def upgrade(self, rest):
        h = self.headers
        key = h.get(b"sec-websocket-key", b"")
        ok = (httptools.parse_url(self.url).path == b"/ws"
              and self.parser.get_method() == b"GET"
              and h.get(b"upgrade", b"").lower() == b"websocket"
              and b"upgrade" in h.get(b"connection", b"").lower()
              and h.get(b"sec-websocket-version") == b"13")
        try:
            ok = ok and len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            ok = False
        if not ok:
            self.transport.write(response(b"400 Bad Request", b"text/plain", b"bad websocket handshake", False))
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                             b"connection: Upgrade\r\nsec-websocket-accept: " + accept + b"\r\n\r\n")
        self.ws = WsEcho(self.transport)
        if rest:
            self.ws.feed(rest)


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


class WsEcho:
    __slots__ = ("transport", "buf", "parts", "msg_op", "closed")

    def __init__(self, transport):
        self.transport = transport
        self.buf = b""
        self.parts = []
        self.msg_op = 0
        self.closed = False

    def fail(self, code):
        if not self.closed:
            self.closed = True
            self.transport.write(frame(0x8, code.to_bytes(2, "big")))
            self.transport.close()

    def feed(self, data):
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        out = []
        while end - pos >= 2 and not self.closed:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
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
            if not b1 & 0x80 or b0 & 0x70:
                self.fail(1002)  # unmasked client frame, or reserved bits without an extension
                return
            if n > MAX_MESSAGE:
                self.fail(1009)
                return
            if end - i < 4 + n:
                break
            payload = apply_mask(buf[i + 4:i + 4 + n], buf[i:i + 4]) if n else b""
            pos = i + 4 + n
            fin, op = b0 & 0x80, b0 & 0x0F
            if op >= 0x8:  # control frame
                if not fin or n > 125:
                    self.fail(1002)
                    return
                if op == 0x9:
                    out.append(frame(0xA, payload))
                elif op == 0x8:
                    out.append(frame(0x8, payload[:2]))
                    self.transport.write(b"".join(out))
                    self.closed = True
                    self.transport.close()
                    return
                continue  # pong: nothing to do
            if op == 0x0:
                if not self.parts:
                    self.fail(1002)
                    return
                self.parts.append(payload)
            elif op in (0x1, 0x2):
                if self.parts:
                    self.fail(1002)
                    return
                self.msg_op = op
                self.parts.append(payload)
            else:
                self.fail(1002)
                return
            if fin:
                msg = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
                self.parts = []
                if self.msg_op == 0x1:
                    try:
                        msg.decode()
                    except UnicodeDecodeError:
                        self.fail(1007)
                        return
                out.append(frame(self.msg_op, msg))
        self.buf = buf[pos:]
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))


async def main():
    loop = asyncio.get_running_loop()
    refresh_date(loop)
    server = await loop.create_server(HttpProtocol, "127.0.0.1", int(os.environ["BENCH_PORT"]), backlog=2048)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()


if __name__ == "__main__":
    uvloop.run(main())
