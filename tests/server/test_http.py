"""Issue #2, the HTTP/1.1 server on the wire (raw sockets): keep-alive, pipelining, chunked
bodies, 100-continue, HTTP/1.0, framing of responses, limits (431/414/413, connections),
timeouts (slowloris, idle keep-alive), ambiguous framing (400 + close), flow control.

After every malformed-input or limit case a normal request on a fresh connection must still
answer 200.
"""

from __future__ import annotations

import socket
import time
from typing import Optional

import pytest

from conftest import rss_kib

MAX_BODY = 100_000
APP = r'''
import asyncio
from stonechat import Robyn, Response, StreamingResponse

app = Robyn(__file__)
BIG = b"x" * (1024 * 1024)

@app.get("/")
def index():
    return "Hello, world!"

@app.post("/echo")
def echo(request):
    return request.body

@app.get("/slow")
async def slow():
    await asyncio.sleep(0.3)
    return "slow"

@app.get("/fast/:n")
def fast(n):
    return n

@app.get("/big")
def big():
    return BIG

@app.get("/stream")
async def stream():
    async def gen():
        for i in range(5):
            yield f"chunk{i}\n"
            await asyncio.sleep(0)
    return StreamingResponse(gen(), media_type="text/plain")

@app.get("/nocontent")
def nocontent():
    return Response(204, {"x-kind": "204"}, "")

@app.get("/notmodified")
def notmodified():
    return Response(304, {"etag": '"e"'}, "")

@app.get("/crash")
def crash():
    raise RuntimeError("crash")

if __name__ == "__main__":
    app.start()
'''
ENV = {
    "STONECHAT_MAX_BODY_SIZE": str(MAX_BODY),
    "STONECHAT_MAX_HEAD_SIZE": "8192",
    "STONECHAT_MAX_HEADER_COUNT": "30",
    "STONECHAT_HEADER_TIMEOUT": "2",
    "STONECHAT_KEEP_ALIVE_TIMEOUT": "2",
    "STONECHAT_BODY_TIMEOUT": "2",
    "STONECHAT_BODY_DEADLINE": "3",
}


class Resp:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, head: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.body = body
        self.head = head

    def get(self, name: str) -> Optional[str]:
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.header_list if n == name.lower()]


class Conn:
    """A raw HTTP/1.1 client connection that reads exactly one response at a time."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read(self, method: str = "GET") -> Resp:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        version, status, *_ = lines[0].split(b" ", 2)
        assert version == b"HTTP/1.1", lines[0]
        status_code = int(status)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode().strip().lower(), value.decode().strip()))
        resp = Resp(status_code, headers, b"", head)
        cl, te = resp.all("content-length"), resp.all("transfer-encoding")
        assert not (cl and te), f"both Content-Length and Transfer-Encoding: {head!r}"
        if method == "HEAD" or status_code in (204, 304) or 100 <= status_code < 200:
            return resp
        if te:
            assert te == ["chunked"]
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n"
            resp.body = b"".join(parts)
        elif cl:
            resp.body = self._take(int(cl[0]))
        else:  # close-delimited
            try:
                while True:
                    self._fill()
            except (EOFError, ConnectionResetError):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes the connection within ``timeout`` (no more bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def req(method: str, path: str, *headers: str, body: bytes = b"", version: str = "HTTP/1.1",
        host: bool = True) -> bytes:
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append("Host: test")
    lines.extend(headers)
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP, env=ENV)


@pytest.fixture
def conn(server):
    c = Conn(server.port)
    yield c
    c.close()


def fresh_ok(server) -> None:
    c = Conn(server.port)
    try:
        c.send(req("GET", "/"))
        r = c.read()
        assert r.status == 200 and r.body == b"Hello, world!"
    finally:
        c.close()


def expect_reject(server, data: bytes, status: int, *, send_all: bool = True) -> Resp:
    """Send ``data``; the server must answer ``status`` and close; then a fresh request works."""
    c = Conn(server.port)
    try:
        c.send(data)
        r = c.read()
        assert r.status == status, (r.status, r.body)
        assert r.get("connection") == "close"
        assert c.closed()
    finally:
        c.close()
    fresh_ok(server)
    return r


# -- keep-alive, pipelining, versions ---------------------------------------------------------

def test_keep_alive_and_standard_headers(conn):
    for _ in range(3):
        conn.send(req("GET", "/"))
        r = conn.read()
        assert r.status == 200 and r.body == b"Hello, world!"
        assert r.get("connection") is None
        assert r.get("server") == "stonechat"
        assert r.get("date").endswith("GMT")
        assert r.get("content-length") == "13"


def test_an_unknown_method_token_is_405(server):
    r = expect_reject(server, b"NONSTANDARD / HTTP/1.1\r\nHost: x\r\n\r\n", 405)
    assert r.body.startswith(b"Method not allowed") and r.get("content-type").startswith("text/plain")


def test_an_app_wide_server_header_replaces_ours(serve):
    server = serve('''
from stonechat import Robyn, Response
app = Robyn(__file__)
app.set_response_header("server", "robyn")

@app.get("/")
def index():
    return "hi"

if __name__ == "__main__":
    app.start()
''')
    c = Conn(server.port)
    try:
        c.send(req("GET", "/"))
        r = c.read()
        assert r.all("server") == ["robyn"]
        assert r.get("date").endswith("GMT")
    finally:
        c.close()


def test_pipelined_in_order(conn):
    conn.send(b"".join(req("GET", f"/fast/{i}") for i in range(20)))
    assert [conn.read().body for _ in range(20)] == [str(i).encode() for i in range(20)]


def test_pipelined_slow_async_first(conn):
    started = time.monotonic()
    conn.send(req("GET", "/slow") + req("GET", "/fast/1") + req("HEAD", "/") +
              req("POST", "/echo", body=b"abc") + req("GET", "/stream") + req("GET", "/fast/2"))
    assert conn.read().body == b"slow"
    assert conn.read().body == b"1"
    head = conn.read("HEAD")
    assert head.status == 200 and head.get("content-length") == "13" and head.body == b""
    assert conn.read().body == b"abc"
    assert conn.read().body == b"".join(f"chunk{i}\n".encode() for i in range(5))
    assert conn.read().body == b"2"
    assert time.monotonic() - started >= 0.3


def test_connection_close(conn):
    conn.send(req("GET", "/", "Connection: close"))
    r = conn.read()
    assert r.status == 200 and r.get("connection") == "close"
    assert conn.closed()


def test_connection_close_pipelined_stops_there(conn):
    conn.send(req("GET", "/fast/1", "Connection: close") + req("GET", "/fast/2"))
    assert conn.read().body == b"1"
    assert conn.closed()
    assert b"HTTP/1.1" not in conn.buf


def test_http10(server):
    c = Conn(server.port)
    c.send(req("GET", "/", version="HTTP/1.0", host=False))
    r = c.read()
    assert r.status == 200 and r.body == b"Hello, world!" and r.get("connection") == "close"
    assert c.closed()
    c.close()
    c = Conn(server.port)
    c.send(req("GET", "/", "Connection: keep-alive", version="HTTP/1.0"))
    r = c.read()
    assert r.status == 200 and r.get("connection") == "keep-alive"
    c.send(req("GET", "/fast/5", "Connection: keep-alive", version="HTTP/1.0"))
    assert c.read().body == b"5"
    c.close()


def test_http10_stream_is_close_delimited(server):
    c = Conn(server.port)
    c.send(req("GET", "/stream", version="HTTP/1.0"))
    r = c.read()
    assert r.get("transfer-encoding") is None and r.get("content-length") is None
    assert r.body.startswith(b"chunk0\n") and r.body.endswith(b"chunk4\n")
    c.close()


def test_no_body_responses(conn):
    conn.send(req("HEAD", "/big") + req("GET", "/nocontent") + req("GET", "/notmodified") +
              req("HEAD", "/stream") + req("GET", "/fast/ok"))
    head = conn.read("HEAD")
    assert head.status == 200 and head.get("content-length") == str(1024 * 1024)
    r204 = conn.read()
    assert r204.status == 204 and r204.get("content-length") is None and r204.get("x-kind") == "204"
    assert r204.get("transfer-encoding") is None
    r304 = conn.read()
    assert r304.status == 304 and r304.get("etag") == '"e"' and r304.get("transfer-encoding") is None
    hs = conn.read("HEAD")
    assert hs.status == 200
    # every byte so far was accounted for: the next response parses cleanly
    assert conn.read().body == b"ok"


def test_chunked_response_framing(conn):
    conn.send(req("GET", "/stream"))
    r = conn.read()
    assert r.get("transfer-encoding") == "chunked" and r.get("content-length") is None
    assert r.body.count(b"chunk") == 5


# -- request bodies --------------------------------------------------------------------------

def test_chunked_request_with_trailers(conn):
    body = b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n"
    conn.send(req("POST", "/echo", "Transfer-Encoding: chunked", body=body))
    assert conn.read().body == b"hello world"
    conn.send(req("GET", "/fast/after"))
    assert conn.read().body == b"after"


def test_chunked_request_in_small_pieces(conn):
    data = req("POST", "/echo", "Transfer-Encoding: chunked",
               body=b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    for i in range(0, len(data), 3):
        conn.send(data[i:i + 3])
        time.sleep(0.001)
    assert conn.read().body == b"abc0123456789abcdef"


def test_binary_body(conn):
    body = bytes(range(256)) * 100
    conn.send(req("POST", "/echo", body=body))
    assert conn.read().body == body


def test_expect_100_continue(conn):
    conn.send(req("POST", "/echo", "Expect: 100-continue", "Content-Length: 4"))
    interim = conn.read()
    assert interim.status == 100
    conn.send(b"data")
    r = conn.read()
    assert r.status == 200 and r.body == b"data"


def test_expect_100_continue_after_pipelined_request(conn):
    conn.send(req("GET", "/slow") + req("POST", "/echo", "Expect: 100-continue", "Content-Length: 4"))
    assert conn.read().body == b"slow"  # the 100 comes after the answer owed before it
    assert conn.read().status == 100
    conn.send(b"wxyz")
    assert conn.read().body == b"wxyz"


def test_expect_100_body_sent_without_waiting(conn):
    conn.send(req("POST", "/echo", "Expect: 100-continue", body=b"eager") + req("GET", "/fast/n"))
    assert conn.read().status == 100
    assert conn.read().body == b"eager"
    assert conn.read().body == b"n"


def test_absolute_form_target(conn):
    conn.send(b"GET http://example.com/fast/abs?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert conn.read().body == b"abs"


def test_expect_100_continue_too_large(server):
    c = Conn(server.port)
    c.send(req("POST", "/echo", "Expect: 100-continue", f"Content-Length: {MAX_BODY + 1}"))
    r = c.read()
    assert r.status == 413  # refused before the body is sent, no 100 first
    assert c.closed()
    c.close()
    fresh_ok(server)


# -- limits ----------------------------------------------------------------------------------

def test_body_too_large_content_length(server):
    c = Conn(server.port)
    c.send(req("POST", "/echo", f"Content-Length: {MAX_BODY + 1}"))  # no body sent at all
    r = c.read()
    assert r.status == 413 and r.get("connection") == "close"
    assert c.closed()
    c.close()
    fresh_ok(server)


def test_refusal_during_an_upload_reaches_the_client_intact(server):
    # The client goes on sending the body it announced after the server refused it. Closing
    # with its bytes unread would reset the connection and could destroy the 413 before the
    # client reads it; the server closes lingering: it drops what comes, then a clean close.
    body = b"u" * (4 * MAX_BODY)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(req("POST", "/echo", f"Content-Length: {len(body) * 4}"))
        s.settimeout(10)
        for _ in range(4):
            s.sendall(body)  # all of it goes: the server keeps reading (and dropping)
        data = b""
        while True:
            chunk = s.recv(65536)  # ConnectionResetError here would fail the test
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 413 ") and b"connection: close" in data.lower(), data
    assert data.endswith(b"Request body too large\n"), data
    fresh_ok(server)


def test_body_at_limit_accepted(conn):
    body = b"y" * MAX_BODY
    conn.send(req("POST", "/echo", body=body))
    assert conn.read().body == body


def test_chunked_body_growing_past_limit(server):
    c = Conn(server.port)
    c.send(req("POST", "/echo", "Transfer-Encoding: chunked"))
    chunk = b"%x\r\n%s\r\n" % (10_000, b"z" * 10_000)
    sent = 0
    try:
        for _ in range(100):  # would be 1 MB: the server must stop us long before
            c.send(chunk)
            sent += 10_000
            if sent > MAX_BODY + 20_000:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.read()
    assert r.status == 413
    assert c.closed()
    c.close()
    fresh_ok(server)


def test_long_request_line_414(server):
    expect_reject(server, req("GET", "/" + "a" * 9000), 414)


def test_big_header_431(server):
    expect_reject(server, req("GET", "/", "X-Big: " + "b" * 9000), 431)


def test_too_many_headers_431(server):
    expect_reject(server, req("GET", "/", *[f"X-H{i}: v" for i in range(40)]), 431)


def test_many_headers_under_limit_ok(conn):
    conn.send(req("GET", "/", *[f"X-H{i}: v" for i in range(25)]))
    assert conn.read().status == 200


# -- ambiguous or malformed framing ----------------------------------------------------------

@pytest.mark.parametrize("headers,body", [
    (["Content-Length: 5", "Transfer-Encoding: chunked"], b"0\r\n\r\n"),
    (["Transfer-Encoding: chunked", "Content-Length: 5"], b"0\r\n\r\n"),
    (["Content-Length: 3", "Content-Length: 4"], b"abcd"),
    (["Content-Length: 3, 4"], b"abcd"),
    (["Content-Length: abc"], b""),
    (["Content-Length: -1"], b""),
    (["Content-Length: +3"], b"abc"),
    (["Content-Length: 0x10"], b""),
    (["Transfer-Encoding: gzip"], b"abc"),
    (["Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n"),
    (["Transfer-Encoding: xchunked"], b"0\r\n\r\n"),
    (["Transfer-Encoding: chunked", "Transfer-Encoding: identity"], b"0\r\n\r\n"),
    (["Transfer-Encoding : chunked"], b"0\r\n\r\n"),
    (["Transfer-Encoding:\x0bchunked"], b"0\r\n\r\n"),
    (["Transfer-Encoding: chunked"], b"zz\r\nabc\r\n0\r\n\r\n"),
    (["Transfer-Encoding: chunked"], b"-1\r\nabc\r\n0\r\n\r\n"),
    (["Transfer-Encoding: chunked"], b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    (["Transfer-Encoding: chunked"], b"3\r\nabcdef\r\n0\r\n\r\n"),
    (["Transfer-Encoding: chunked"], b"3 \r\nabc\r\n0\r\n\r\n"),
])
def test_ambiguous_framing_400(server, headers, body):
    data = req("POST", "/echo", *headers) + body
    r = expect_reject(server, data, 400)
    assert len(r.body) < 200


def test_duplicate_same_content_length_not_smuggled(server):
    c = Conn(server.port)
    c.send(req("POST", "/echo", "Content-Length: 3", "Content-Length: 3") + b"abc" + req("GET", "/fast/x"))
    r = c.read()
    # either refused outright, or read as one 3-byte body followed by the next request
    if r.status == 400:
        assert c.closed()
    else:
        assert r.status == 200 and r.body == b"abc"
        assert c.read().body == b"x"
    c.close()
    fresh_ok(server)


def test_http10_transfer_encoding_400(server):
    # RFC 9112 6.1: a Transfer-Encoding in an HTTP/1.0 message is faulty framing.
    data = req("POST", "/echo", "Transfer-Encoding: chunked", version="HTTP/1.0") + b"3\r\nabc\r\n0\r\n\r\n"
    r = expect_reject(server, data, 400)
    assert b"HTTP/1.0" in r.body


def test_missing_host_400(server):
    expect_reject(server, req("GET", "/", host=False), 400)


def test_duplicate_host_400(server):
    expect_reject(server, req("GET", "/", "Host: other"), 400)


def test_invalid_host_400(server):
    expect_reject(server, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400)


@pytest.mark.parametrize("host", [b"", b"example.com", b"127.0.0.1:8080", b"[::1]:8080", b"xn--bcher-kva.example",
                                  b"a-b_c~d!$&'()*+,;=%41"])
def test_valid_host_accepted(conn, host):
    # every byte RFC 3986 allows in a reg-name, IP literal and port (an empty Host is allowed too)
    conn.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert conn.read().status == 200


@pytest.mark.parametrize("host", [b"a/b", b"a@b", b"a\"b", b"a\\b", b"a{b", b"a^b", b"a`b", b"a|b",
                                  b"caf\xc3\xa9", b"a\x7fb", b"a\tb", b"a<b>"])
def test_invalid_host_bytes_400(server, host):
    expect_reject(server, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400)


def test_head_size_limit_is_exact(server):
    # max_head_size (8192) counts the target plus, per header field, name + value + 4
    def head(pad: int) -> bytes:
        return b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * pad + b"\r\n\r\n"
    fits = 8192 - len(b"/") - (len(b"Host") + len(b"x") + 4) - (len(b"X-Pad") + 4)
    c = Conn(server.port)
    try:
        c.send(head(fits))
        assert c.read().status == 200
    finally:
        c.close()
    expect_reject(server, head(fits + 1), 431)


@pytest.mark.parametrize("first", [1, 20, 600, 6000])
def test_head_size_limit_is_exact_across_reads(server, first):
    # The budget of a head split over several reads (each far under the limit) is kept as
    # exactly as that of a head in one read: the reads after the first count what came before.
    def head(pad: int) -> bytes:
        return (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 200) for i in range(20))
                + b"X-Pad: " + b"p" * pad + b"\r\n\r\n")
    fields = sum(len(b"X-F%d" % i) + 200 + 4 for i in range(20))
    fits = 8192 - len(b"/") - (len(b"Host") + len(b"x") + 4) - fields - (len(b"X-Pad") + 4)
    for pad, status in ((fits, 200), (fits + 1, 431)):
        data = head(pad)
        c = Conn(server.port)
        try:
            for piece in (data[:first], data[first:first + 1500], data[first + 1500:]):
                c.send(piece)  # apart: the server reads each piece on its own
                time.sleep(0.05)
            r = c.read()
            assert r.status == status, (pad, r.status, r.body)
        finally:
            c.close()


def test_many_small_fields_in_one_read_keep_the_count_limit(server):
    # Fields as short as a field can be (``n:\r\n``) in one small read: the count limit
    # (30 here) still answers 431, and 30 of them pass.
    c = Conn(server.port)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * 29 + b"\r\n")
        assert c.read().status == 200
    finally:
        c.close()
    expect_reject(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * 30 + b"\r\n", 431)


def test_target_in_pieces_over_reads(conn):
    # The parser hands the target over in one piece per read: the pieces are joined in order.
    for piece in (b"GET /fa", b"st/ab", b"cd?x=", b"1 HTTP/1.1\r\nHost: test\r\n\r\n"):
        conn.send(piece)
        time.sleep(0.05)
    assert conn.read().body == b"abcd"


def test_target_split_on_query_and_fragment(conn):
    conn.send(req("GET", "/fast/abc?x=1"))
    assert conn.read().body == b"abc"
    conn.send(req("GET", "/fast/abc#frag"))
    assert conn.read().body == b"abc"
    conn.send(req("GET", "/fast/abc?x=1#frag"))
    assert conn.read().body == b"abc"


def test_trailers_count_against_the_body_limit(server):
    body = b"%x\r\n%s\r\n0\r\nX-Trailer: %s\r\n\r\n" % (MAX_BODY - 100, b"a" * (MAX_BODY - 100), b"t" * 200)
    expect_reject(server, req("POST", "/echo", "Transfer-Encoding: chunked") + body, 413)


def test_garbage_request_line_400(server):
    expect_reject(server, b"HELLO\r\n\r\n", 400)
    expect_reject(server, b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400)
    expect_reject(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", 400)


def test_answers_owed_before_an_error_are_sent(server):
    c = Conn(server.port)
    c.send(req("GET", "/slow") + req("GET", "/fast/1") + b"BROKEN REQUEST\r\n\r\n")
    assert c.read().body == b"slow"
    assert c.read().body == b"1"
    assert c.read().status == 400
    assert c.closed()
    c.close()
    fresh_ok(server)


def test_handler_exception_keeps_connection(conn, server):
    conn.send(req("GET", "/crash") + req("GET", "/fast/alive"))
    r = conn.read()
    assert r.status == 500 and len(r.body) < 100 and b"crash" not in r.body
    assert conn.read().body == b"alive"
    assert "RuntimeError: crash" in server.output()


# -- timeouts --------------------------------------------------------------------------------

def test_slowloris_header_timeout(server):
    c = Conn(server.port, timeout=10)
    started = time.monotonic()
    c.send(b"GET / HTTP/1.1\r\n")
    closed = False
    for i in range(8):  # one header byte per second would take far longer than the limit
        try:
            c.send(b"X-a: b\r\n"[i % 8:i % 8 + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if c.closed(timeout=1.0):
            closed = True
            break
    elapsed = time.monotonic() - started
    assert closed, "server kept a slowloris connection open"
    assert elapsed < 5.0
    assert c.buf.startswith(b"HTTP/1.1 408")
    c.close()
    fresh_ok(server)


def test_silent_connection_closed(server):
    c = Conn(server.port)
    started = time.monotonic()
    assert c.closed(timeout=5.0)
    assert time.monotonic() - started < 4.5
    c.close()


def test_idle_keep_alive_timeout(conn, server):
    conn.send(req("GET", "/"))
    assert conn.read().status == 200
    started = time.monotonic()
    assert conn.closed(timeout=6.0)
    assert 1.5 < time.monotonic() - started < 4.5
    fresh_ok(server)


def test_body_timeout(server):
    c = Conn(server.port, timeout=10)
    c.send(req("POST", "/echo", "Content-Length: 10") + b"abc")
    started = time.monotonic()
    assert c.closed(timeout=6.0)
    assert time.monotonic() - started < 4.5
    assert c.buf.startswith(b"HTTP/1.1 408")
    c.close()
    fresh_ok(server)


def test_body_trickling_past_the_deadline(server):
    # A byte every 0.5 s never trips the 2 s idle timeout; the 3 s total deadline ends it.
    c = Conn(server.port, timeout=10)
    c.send(req("POST", "/echo", "Content-Length: 100"))
    started = time.monotonic()
    closed = False
    for _ in range(20):
        time.sleep(0.5)
        try:
            c.sock.sendall(b"x")
        except OSError:
            closed = True
            break
        if c.closed(timeout=0.01):
            closed = True
            break
    assert closed or c.closed(timeout=3.0)
    elapsed = time.monotonic() - started
    assert 2.5 < elapsed < 6.5, elapsed
    assert c.buf.startswith(b"HTTP/1.1 408")
    c.close()
    fresh_ok(server)


# -- flow control ----------------------------------------------------------------------------



def test_flow_control_unread_pipelined_big_responses(server):
    before = rss_kib(server.pid)
    c = Conn(server.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    n = 2000
    c.sock.settimeout(10)
    c.send(req("GET", "/big") * n)  # 60 KB of requests for 2 GB of responses, never read
    time.sleep(1.5)
    grown = rss_kib(server.pid) - before
    assert grown < 64 * 1024, f"server RSS grew by {grown} KiB for a client that does not read"
    # the connection still works: read some responses, in order and complete
    for _ in range(3):
        r = c.read()
        assert r.status == 200 and len(r.body) == 1024 * 1024
    assert rss_kib(server.pid) - before < 64 * 1024
    c.close()
    time.sleep(0.2)
    fresh_ok(server)


# -- max connections (own server) --------------------------------------------------------------

def test_max_connections_503(serve):
    server = serve(APP, env={**ENV, "STONECHAT_MAX_CONNECTIONS": "3", "STONECHAT_HEADER_TIMEOUT": "10",
                             "STONECHAT_KEEP_ALIVE_TIMEOUT": "10"})
    held = [Conn(server.port) for _ in range(3)]
    for c in held:
        c.send(req("GET", "/"))
        assert c.read().status == 200
    extra = Conn(server.port)
    r = extra.read()
    assert r.status == 503 and r.get("connection") == "close"
    assert extra.closed()
    extra.close()
    # the held connections still work
    held[0].send(req("GET", "/fast/held"))
    assert held[0].read().body == b"held"
    for c in held:
        c.close()
    time.sleep(0.3)
    fresh_ok(server)
