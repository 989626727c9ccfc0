"""The access log and request ids on the real server (docs/production.md): one line per request
and per WebSocket session, parsed field by field in both formats, to a file and to stdout;
X-Request-ID kept when valid, replaced (never echoed) when not; everything off by default.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from pathlib import Path

import httpx
import pytest
import websockets

APP = """
from stonechat import Robyn, Request
from stonechat.responses import StreamingResponse

app = Robyn(__file__)

@app.get("/stream")
async def stream():
    async def gen():
        yield b"ab"
        yield b"cde"
    return StreamingResponse(gen(), media_type="text/plain")

@app.get("/")
def index(request: Request):
    return "seen " + (request.headers.get("x-request-id") or "none")

@app.post("/echo")
async def echo(request: Request):
    return request.body

@app.post("/upload", stream_body=True)
async def upload(request: Request):
    seen = request.headers.get("x-request-id") or "none"  # before the body has arrived
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return {"seen": seen, "bytes": size}

@app.get("/user/:id")
def user(request: Request):
    return {"id": request.path_params["id"]}

@app.websocket("/ws")
async def ws(websocket):
    while True:
        msg = await websocket.receive_text()
        await websocket.send_text(msg)
        await websocket.send_text(msg.upper())

app.start()
"""

HEX32 = re.compile(r"[0-9a-f]{32}\Z")
# Apache combined, then the duration in microseconds (Apache's %D) and the request id, then the WebSocket fields when it is one
COMBINED = re.compile(
    r'(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "(?P<line>[^"\\]*(?:\\.[^"\\]*)*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"\\]*(?:\\.[^"\\]*)*)" "(?P<ua>[^"\\]*(?:\\.[^"\\]*)*)" '
    r'(?P<duration>\d+) (?P<rid>\S+)'
    r'(?: ws_close=(?P<ws_close>\d+) ws_closed_by=(?P<ws_by>\w+) ws_in=(?P<ws_in>\d+) ws_out=(?P<ws_out>\d+))?\Z')


def traffic(url: str, ws_url: str) -> dict[str, str]:
    """Known requests; returns what the test expects of them."""
    seen = {}
    with httpx.Client(base_url=url, timeout=10) as c:
        r = c.get("/", headers={"x-request-id": "abc.DEF-12_3", "user-agent": "probe/1.0",
                                "referer": "http://example.test/from"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc.DEF-12_3"
        assert r.text == "seen abc.DEF-12_3"
        r = c.get("/user/42", headers={"x-request-id": "bad id with spaces", "user-agent": 'quote"agent'})
        assert r.status_code == 200
        new_id = r.headers["x-request-id"]
        assert HEX32.match(new_id), new_id  # replaced, not echoed
        seen["replaced"] = new_id
        r = c.get("/", headers={"x-request-id": "x" * 129})
        assert HEX32.match(r.headers["x-request-id"]) and r.text == "seen " + r.headers["x-request-id"]
        r = c.post("/echo", content=b"z" * 1000)
        assert r.status_code == 200 and len(r.content) == 1000
        seen["echo_id"] = r.headers["x-request-id"]
        r = c.get("/missing")
        assert r.status_code == 404 and HEX32.match(r.headers["x-request-id"])
        r = c.get("/stream", headers={"x-request-id": "streamed"})
        assert r.text == "abcde" and r.headers["x-request-id"] == "streamed"

    async def session() -> None:
        async with websockets.connect(ws_url + "/ws", additional_headers={"x-request-id": "ws-session-1"}) as ws:
            assert ws.response.headers["x-request-id"] == "ws-session-1"  # on the 101 too
            for word in ("a", "b"):
                await ws.send(word)
                assert await ws.recv() == word
                assert await ws.recv() == word.upper()
            await ws.close(1000)
    asyncio.run(session())
    return seen


def wait_lines(read, count: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = read()
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_combined_format_to_a_file(serve, tmp_path: Path):
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log), "--request-id"])
    seen = traffic(server.url, server.ws_url)
    read = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
    lines = wait_lines(read, 7)
    assert len(lines) == 7, lines
    parsed = [COMBINED.match(line) for line in lines]
    assert all(parsed), lines
    first, second, third, echo, missing, stream, ws = [m.groupdict() for m in parsed]  # type: ignore[union-attr]
    assert stream["line"] == "GET /stream HTTP/1.1" and stream["bytes"] == "5" and stream["rid"] == "streamed"
    assert first["client"] == "127.0.0.1"
    assert first["line"] == "GET / HTTP/1.1" and first["status"] == "200"
    assert first["bytes"] == str(len("seen abc.DEF-12_3"))
    assert first["referer"] == "http://example.test/from" and first["ua"] == "probe/1.0"
    assert first["rid"] == "abc.DEF-12_3"
    assert 0 < int(first["duration"]) < 5_000_000
    assert second["line"] == "GET /user/42 HTTP/1.1" and second["ua"] == 'quote\\"agent'
    assert second["rid"] == seen["replaced"] and "bad" not in lines[1]
    assert HEX32.match(third["rid"]) and "x" * 129 not in lines[2]
    assert echo["line"] == "POST /echo HTTP/1.1" and echo["bytes"] == "1000" and echo["rid"] == seen["echo_id"]
    assert missing["status"] == "404" and missing["line"] == "GET /missing HTTP/1.1"
    assert ws["line"] == "GET /ws HTTP/1.1" and ws["status"] == "101" and ws["rid"] == "ws-session-1"
    assert (ws["ws_close"], ws["ws_by"], ws["ws_in"], ws["ws_out"]) == ("1000", "client", "2", "4")
    assert ws["ws_close"] is not None and first["ws_close"] is None
    time_of = time.strptime(first["time"], "%d/%b/%Y:%H:%M:%S +0000")
    assert abs(time.mktime(time_of) - time.mktime(time.gmtime())) < 120
    assert server.stop() == 0


def test_a_streamed_bodys_handler_has_the_request_id_before_the_body(serve, tmp_path: Path):
    """The id is assigned once the head is read: a handler that streams the body runs before
    the body has arrived, and sees it, and its answer and line carry it."""
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log), "--request-id"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-ID: up-1\r\nContent-Length: 6\r\n\r\nabc")
        time.sleep(0.3)  # the handler is reading the stream by now
        head, _, body = _ask(s, b"def").partition(b"\r\n\r\n")
    assert b"x-request-id: up-1\r\n" in head.lower() + b"\r\n"
    assert json.loads(body) == {"seen": "up-1", "bytes": 6}
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post("/upload", content=b"z" * 10, headers={"x-request-id": "not valid!"})
    new_id = r.headers["x-request-id"]
    assert HEX32.match(new_id) and r.json() == {"seen": new_id, "bytes": 10}
    lines = wait_lines(lambda: log.read_text().splitlines() if log.exists() else [], 2)
    parsed = [COMBINED.match(line).groupdict() for line in lines]  # type: ignore[union-attr]
    assert [(p["line"], p["rid"]) for p in parsed] == [("POST /upload HTTP/1.1", "up-1"),
                                                       ("POST /upload HTTP/1.1", new_id)]
    assert server.stop() == 0


def test_json_lines_to_stdout(serve):
    server = serve(APP, args=["--access-log", "--access-log-format", "json"], env={"STONECHAT_REQUEST_ID": "1"})
    seen = traffic(server.url, server.ws_url)

    def read() -> list[dict]:
        return [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    records = wait_lines(read, 7)
    assert len(records) == 7, server.output()
    first, second, third, echo, missing, stream, ws = records
    assert stream["bytes"] == 5 and stream["status"] == 200
    assert first["client"] == "127.0.0.1" and first["method"] == "GET" and first["path"] == "/"
    assert first["status"] == 200 and first["bytes"] == len("seen abc.DEF-12_3")
    assert first["user_agent"] == "probe/1.0" and first["referer"] == "http://example.test/from"
    assert first["request_id"] == "abc.DEF-12_3" and first["http_version"] == "1.1"
    assert 0 < first["duration"] < 5 and first["time"].endswith("Z") and "websocket" not in first
    assert second["path"] == "/user/42" and second["user_agent"] == 'quote"agent'
    assert second["request_id"] == seen["replaced"]
    assert HEX32.match(third["request_id"])
    assert echo["method"] == "POST" and echo["bytes"] == 1000 and echo["request_id"] == seen["echo_id"]
    assert missing["status"] == 404
    assert ws["status"] == 101 and ws["path"] == "/ws" and ws["request_id"] == "ws-session-1"
    assert ws["websocket"] == {"close_code": 1000, "closed_by": "client", "messages_in": 2, "messages_out": 4}
    assert ws["duration"] > 0


def test_a_refused_request_and_a_dropped_client_are_logged(serve, tmp_path: Path):
    """A 413 the server gives while reading (no request object reaches the app) and a client
    that leaves before its answer (499, nginx's code) still make a line each."""
    log = tmp_path / "access.log"
    app = APP.replace("app.start()", """
import asyncio
@app.get("/slow")
async def slow():
    print("slow began", flush=True)
    await asyncio.sleep(30)
    return "late"
app.start(max_body_size=100)
""")
    server = serve(app, env={"STONECHAT_ACCESS_LOG": str(log), "STONECHAT_REQUEST_ID": "true"})
    r = httpx.post(server.url + "/echo", content=b"z" * 1000)
    assert r.status_code == 413
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for_output("slow began")
        # then the client leaves without its answer: a reset (a plain close is a half-close,
        # after which the server still answers)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    lines = wait_lines(lambda: log.read_text().splitlines() if log.exists() else [], 2)
    assert len(lines) == 2, lines
    refused, dropped = (COMBINED.match(line).groupdict() for line in lines)  # type: ignore[union-attr]
    assert refused["status"] == "413" and refused["line"] == "-" and refused["rid"] == "-"
    assert dropped["status"] == "499" and dropped["line"] == "GET /slow HTTP/1.1" and HEX32.match(dropped["rid"])


def test_without_request_ids_the_log_has_the_clients_valid_one(serve, tmp_path: Path):
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log)])
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/", headers={"x-request-id": "from-the-proxy.7"})
        assert "x-request-id" not in r.headers and r.text == "seen from-the-proxy.7"
        assert c.get("/", headers={"x-request-id": "no good"}).text == "seen no good"  # untouched
        assert c.get("/").text == "seen none"
    lines = wait_lines(lambda: log.read_text().splitlines() if log.exists() else [], 3)
    assert [COMBINED.match(line).group("rid") for line in lines] == ["from-the-proxy.7", "-", "-"], lines  # type: ignore[union-attr]
    assert "no good" not in log.read_text()


def test_off_by_default_and_request_ids_alone(serve):
    server = serve(APP)
    r = httpx.get(server.url + "/", headers={"x-request-id": "abc"})
    assert "x-request-id" not in r.headers and r.text == "seen abc"  # the client's header, untouched
    assert "GET / HTTP/1.1" not in server.output()
    server.stop()
    server = serve(APP, args=["--request-id"])
    r = httpx.get(server.url + "/")
    assert HEX32.match(r.headers["x-request-id"]) and r.text == "seen " + r.headers["x-request-id"]
    assert "GET / HTTP/1.1" not in server.output()  # ids without the log


@pytest.mark.parametrize("args, env, message", [
    (["--access-log", "/nonexistent-dir/a.log"], {}, "access_log: no such directory"),
    (["--access-log", "--access-log-format", "xml"], {}, "access_log_format: expected one of combined, json"),
    ([], {"STONECHAT_ACCESS_LOG_FORMAT": "xml"}, "STONECHAT_ACCESS_LOG_FORMAT: expected one of combined, json"),
])
def test_bad_settings_stop_startup_by_name(serve, args, env, message):
    server = serve(APP, args=args, env=env, wait=False)
    assert server.wait(30) == 2
    assert message in server.output()


def test_workers_share_one_file_line_by_line(serve, tmp_path: Path):
    log = tmp_path / "access.log"
    server = serve(APP, args=["--processes", "2", "--access-log", str(log), "--request-id"])
    ids = set()
    for n in range(40):  # new connections: both workers answer some
        r = httpx.get(f"{server.url}/user/{n}", headers={"connection": "close"}, timeout=10)
        assert r.status_code == 200
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 40  # unique across the workers
    lines = wait_lines(lambda: log.read_text().splitlines() if log.exists() else [], 40)
    assert len(lines) == 40, lines
    parsed = [COMBINED.match(line) for line in lines]
    assert all(parsed), lines
    assert {m.group("rid") for m in parsed} == ids  # type: ignore[union-attr]
    assert sorted(m.group("line") for m in parsed) == sorted(f"GET /user/{n} HTTP/1.1" for n in range(40))  # type: ignore[union-attr]
    assert server.stop() == 0


FILE_APP = """
import os
from stonechat import Robyn, serve_file

app = Robyn(__file__)
BIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "big.bin")
with open(BIG, "wb") as f:
    f.write(os.urandom(3 * 1024 * 1024))  # past the in-memory size: sent from disk

@app.get("/big")
def big():
    return serve_file(BIG)

app.start()
"""


def test_files_sent_from_disk_are_logged_with_their_bytes(serve, tmp_path: Path):
    log = tmp_path / "access.log"
    server = serve(FILE_APP, args=["--access-log", str(log)])
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert len(c.get("/big").content) == 3 * 1024 * 1024
        assert c.get("/big", headers={"range": "bytes=100-199"}).status_code == 206
        assert c.head("/big").status_code == 200
    read = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
    lines = wait_lines(read, 3)
    parsed = [COMBINED.match(line) for line in lines]
    assert len(lines) == 3 and all(parsed), lines
    whole, part, head = [m.groupdict() for m in parsed]  # type: ignore[union-attr]
    assert (whole["status"], whole["bytes"]) == ("200", str(3 * 1024 * 1024))
    assert (part["status"], part["bytes"]) == ("206", "100")
    assert head["line"] == "HEAD /big HTTP/1.1" and head["bytes"] in ("0", "-")
    assert server.stop() == 0


def _sent_requests(port: int, count: int, agent_of, request_of=None) -> None:
    """``count`` requests on one keep-alive connection, all sent before any answer is read
    (so that they are answered, and logged, in the same batches); ``request_of(n)``, when
    given, makes each request instead of the default one with ``agent_of(n)``."""
    make = request_of or (lambda n: b"GET /user/%d HTTP/1.1\r\nHost: x\r\nUser-Agent: %s\r\nX-Request-ID: r-%d\r\n\r\n"
                          % (n, agent_of(n), n))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(make(n) for n in range(count)))
        s.settimeout(10)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < count:
            chunk = s.recv(65536)
            assert chunk, "the server closed the connection"
            received += chunk


def _all_lines(log: Path, count: int) -> list[str]:
    """The log's lines once ``count`` are there (exactly ``count``)."""
    lines = wait_lines(lambda: log.read_text().splitlines() if log.exists() else [], count)
    assert len(lines) == count, len(lines)
    return lines


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_batched_lines_each_arrive_whole_and_escaped(serve, tmp_path: Path, fmt: str):
    """Hundreds of requests answered back to back are formatted in batches by the writer
    thread: every line is there, in order, each field right, and a batch holding one User-Agent
    that needs escaping still gets every other line right (it is formatted line by line)."""
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log), "--access-log-format", fmt])
    count = 300

    def agent_of(n: int) -> bytes:
        return b'odd"agent\\x' if n == 150 else b"bench/%d" % n
    _sent_requests(server.port, count, agent_of)
    for n, line in enumerate(_all_lines(log, count)):
        if fmt == "combined":
            m = COMBINED.match(line)
            assert m, line
            fields = m.groupdict()
            assert fields["line"] == f"GET /user/{n} HTTP/1.1" and fields["status"] == "200"
            assert fields["bytes"] == str(len('{"id":"%d"}' % n)) and fields["rid"] == f"r-{n}"
            assert fields["ua"] == ('odd\\"agent\\\\x' if n == 150 else f"bench/{n}")
            assert fields["client"] == "127.0.0.1" and fields["referer"] == "-"
            assert 0 <= int(fields["duration"]) < 5_000_000
        else:
            record = json.loads(line)
            assert record["path"] == f"/user/{n}" and record["method"] == "GET" and record["status"] == 200
            assert record["bytes"] == len('{"id":"%d"}' % n) and record["request_id"] == f"r-{n}"
            assert record["user_agent"] == ('odd"agent\\x' if n == 150 else f"bench/{n}")
            assert record["client"] == "127.0.0.1" and record["http_version"] == "1.1"
            assert 0 <= record["duration"] < 5 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                                                                 record["time"])
    assert server.stop() == 0


def test_sigterm_right_after_traffic_loses_no_line(serve, tmp_path: Path):
    """Lines still waiting for the writer thread when SIGTERM arrives are written at the stop."""
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log)])
    count = 200
    _sent_requests(server.port, count, lambda n: b"t/%d" % n)
    assert server.stop() == 0  # at once: the writer's next batch is not due yet
    lines = log.read_text().splitlines()
    assert [COMBINED.match(line).group("line") for line in lines] == [  # type: ignore[union-attr]
        f"GET /user/{n} HTTP/1.1" for n in range(count)]


def _ask(s: socket.socket, request: bytes, answers: int = 1) -> bytes:
    """Requests (one by default) sent at once on an open connection, their answers read (framed
    by Content-Length); the last answer returned."""
    s.sendall(request)
    received = answer = b""
    for _ in range(answers):
        while b"\r\n\r\n" not in received or len(received) < received.index(b"\r\n\r\n") + 4 + int(
                re.search(rb"content-length: (\d+)", received.lower()).group(1)):  # type: ignore[union-attr]
            chunk = s.recv(65536)
            assert chunk, "the server closed the connection"
            received += chunk
        head_end = received.index(b"\r\n\r\n") + 4
        end = head_end + int(re.search(rb"content-length: (\d+)", received[:head_end].lower()).group(1))  # type: ignore[union-attr]
        answer, received = received[:end], received[end:]
    return answer


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_a_connections_repeated_and_changed_requests_each_get_their_own_line(serve, tmp_path: Path, fmt: str):
    """A connection's line is made again from its previous one when the request repeats (same
    request line, version, headers, status and size): every change of any of them shows in its line,
    a repeat across a second boundary has its own time, and a second connection its own line."""
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log), "--access-log-format", fmt])
    get = b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
    asked = [  # (request, expected: line, status, bytes, referer, user agent, request id)
        (get % (b"/user/1", b"User-Agent: a/1\r\n"), ("GET /user/1 HTTP/1.1", 200, 10, "-", "a/1", "-")),
        (get % (b"/user/1", b"User-Agent: a/1\r\n"), ("GET /user/1 HTTP/1.1", 200, 10, "-", "a/1", "-")),
        (get % (b"/user/22", b"User-Agent: a/1\r\n"), ("GET /user/22 HTTP/1.1", 200, 11, "-", "a/1", "-")),
        (get % (b"/user/22", b"User-Agent: b/2\r\n"), ("GET /user/22 HTTP/1.1", 200, 11, "-", "b/2", "-")),
        (get % (b"/user/22", b"User-Agent: b/2\r\nReferer: http://r.test/\r\n"),
         ("GET /user/22 HTTP/1.1", 200, 11, "http://r.test/", "b/2", "-")),
        (get % (b"/user/22", b"User-Agent: b/2\r\nX-Request-ID: id-7\r\n"),
         ("GET /user/22 HTTP/1.1", 200, 11, "-", "b/2", "id-7")),
        (get % (b"/user/22", b"User-Agent: b/2\r\n"), ("GET /user/22 HTTP/1.1", 200, 11, "-", "b/2", "-")),
        (get % (b"/missing", b"User-Agent: b/2\r\n"), ("GET /missing HTTP/1.1", 404, None, "-", "b/2", "-")),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nUser-Agent: b/2\r\nContent-Length: 3\r\n\r\nabc",
         ("POST /echo HTTP/1.1", 200, 3, "-", "b/2", "-")),
        (b"GET /user/22 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nUser-Agent: b/2\r\n\r\n",
         ("GET /user/22 HTTP/1.0", 200, 11, "-", "b/2", "-")),  # the version changes: its own text
        (b"GET /user/22 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nUser-Agent: b/2\r\n\r\n",
         ("GET /user/22 HTTP/1.0", 200, 11, "-", "b/2", "-")),
        (get % (b"/user/22", b"Connection: keep-alive\r\nUser-Agent: b/2\r\n"),
         ("GET /user/22 HTTP/1.1", 200, 11, "-", "b/2", "-")),
        # the same header block after a request line spelled otherwise, or after an empty line:
        # what follows the line is not the header block where the log looks for it
        (b"GET  /user/22 HTTP/1.1\r\nHost: x\r\nUser-Agent: c/3\r\n\r\n", ("GET /user/22 HTTP/1.1", 200, 11, "-", "c/3", "-")),
        (b"\r\nGET /user/22 HTTP/1.1\r\nHost: x\r\nUser-Agent: d/4\r\n\r\n", ("GET /user/22 HTTP/1.1", 200, 11, "-", "d/4", "-")),
        # two requests in one read, the second with other headers (its own read's start is not it)
        (get % (b"/user/22", b"User-Agent: d/4\r\n") + get % (b"/user/22", b"User-Agent: e/5\r\n"),
         ("GET /user/22 HTTP/1.1", 200, 11, "-", "d/4", "-")),
        (None, ("GET /user/22 HTTP/1.1", 200, 11, "-", "e/5", "-")),
        (get % (b"/user/1?q=\"x", b"User-Agent: a/1\r\n"), ('GET /user/1?q="x HTTP/1.1', 200, 10, "-", "a/1", "-")),
    ]
    with socket.create_connection(("127.0.0.1", server.port)) as s, \
            socket.create_connection(("127.0.0.1", server.port)) as other:
        s.settimeout(10)
        other.settimeout(10)
        for request, _ in asked:
            if request is not None:
                _ask(s, request, answers=request.count(b" HTTP/1."))
        _ask(other, asked[0][0])  # a new connection, the same request
        time.sleep(1.2)
        _ask(s, asked[-1][0])  # the same again, in a later second
    expected = [e for _, e in asked] + [asked[0][1], asked[-1][1]]
    lines = wait_lines(lambda: log.read_text().splitlines() if log.exists() else [], len(expected))
    assert len(lines) == len(expected), lines
    times = []
    for line, (request_line, status, size, referer, ua, rid) in zip(lines, expected):
        if fmt == "combined":
            m = COMBINED.match(line)
            assert m, line
            f = m.groupdict()
            got = (f["line"].replace('\\"', '"'), int(f["status"]), int(f["bytes"]), f["referer"], f["ua"], f["rid"])
            times.append(time.mktime(time.strptime(f["time"], "%d/%b/%Y:%H:%M:%S +0000")))
            assert f["client"] == "127.0.0.1"
        else:
            r = json.loads(line)
            got = (f'{r["method"]} {r["path"]} HTTP/{r["http_version"]}', r["status"], r["bytes"], r["referer"],
                   r["user_agent"], r["request_id"])
            times.append(time.mktime(time.strptime(r["time"][:19], "%Y-%m-%dT%H:%M:%S")) + float(r["time"][19:-1]))
            assert r["client"] == "127.0.0.1"
        assert got[:2] == (request_line, status) and got[3:] == (referer, ua, rid), line
        assert size is None or got[2] == size, line
    assert times[-1] - times[-2] >= 1.0  # the repeat after the pause has its own time
    assert server.stop() == 0


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_a_batch_with_one_target_to_escape_keeps_every_other_target_as_it_came(serve, tmp_path: Path, fmt: str):
    """The writer thread escapes targets a batch at a time: among hundreds of requests logged
    together, the one whose target holds a quote and a backslash is escaped (it cannot break
    its line), and every other target is written exactly as it came. (A byte above 0x7f in a
    target is refused by the parser, 400, before any line is made.)"""
    log = tmp_path / "access.log"
    server = serve(APP, args=["--access-log", str(log), "--access-log-format", fmt])
    count = 300
    odd = b'/user/150?q="a\\b'

    def target_of(n: int) -> bytes:
        return odd if n == 150 else b"/user/%d?n=%d" % (n, n)
    _sent_requests(server.port, count, None, lambda n: b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target_of(n))
    for n, line in enumerate(_all_lines(log, count)):
        if fmt == "combined":
            m = COMBINED.match(line)
            assert m, line
            expected = '/user/150?q=\\"a\\\\b' if n == 150 else f"/user/{n}?n={n}"
            assert m.group("line") == f"GET {expected} HTTP/1.1", line
        else:
            path = json.loads(line)["path"]
            assert path == (odd.decode("latin-1") if n == 150 else f"/user/{n}?n={n}"), line
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # a byte above 0x7f: refused
        s.settimeout(10)
        s.sendall(b"GET /user/1?q=\xe9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 400 ")
    assert server.stop() == 0
    refused = log.read_text().splitlines()[count:]
    assert len(refused) == 1 and "\xe9" not in refused[0] and "\\xe9" not in refused[0], refused
