"""The same stonechat app on stonechat's own server and under uvicorn serving ``app.asgi`` (issue
#10, part 1): every test here runs against both, real processes, real clients, and expects the
same answers — routing, bodies and their limit, streaming, SSE, the end of a stream when the
client leaves, WebSockets in both API styles with close codes and reasons both ways and a
refused handshake, and the lifecycle (handlers in order; a failing startup handler named).
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgi_servers import read_lines, start, wait_until

SERVERS = ["stonechat", "uvicorn"]

APP = r'''
import asyncio
import os
from contextlib import asynccontextmanager

from stonechat import (HTTPException, Request, Response, Robyn, SSEMessage, SSEResponse, StreamingResponse,
                       WebSocket, WebSocketDisconnect)

EVENTS = os.environ["EVENTS_FILE"]


def note(what):
    with open(EVENTS, "a") as f:
        f.write(what + "\n")


app = Robyn(__file__, max_body_size=1000)


@app.startup_handler
def open_first():
    note("startup first")


@app.startup_handler
async def open_second():
    note("startup second")


@app.lifespan
@asynccontextmanager
async def resource():
    note("lifespan enter")
    yield
    note("lifespan exit")


@app.shutdown_handler
def close_first():
    note("shutdown first")


@app.shutdown_handler
async def close_second():
    note("shutdown second")


@app.get("/")
async def index():
    return "Hello, world!"


@app.get("/json")
def json_hello():
    return {"message": "hi"}


@app.get("/user/:id")
def user(id: int, verbose: bool = False):
    return {"id": id, "verbose": verbose}


@app.get("/request")
def request_parts(request: Request):
    return {"token": request.headers.get("x-token"), "host": request.headers.get("host"),
            "path": request.url.path, "q": request.query_params.get("q", ""), "method": request.method,
            "ip": request.ip_addr}


@app.post("/echo")
async def echo(request: Request):
    return Response(200, {"content-type": "application/octet-stream", "x-length": str(len(request.body))},
                    request.body)


@app.get("/status/:code")
def status(code: int):
    return Response(code, {"x-status": str(code)}, "" if code in (204, 304) else f"status {code}")


@app.get("/teapot")
def teapot():
    raise HTTPException(418, "short and stout")


@app.get("/crash")
def crash():
    raise RuntimeError("boom")


@app.get("/cookie")
def cookie():
    response = Response(200, {}, "with cookies")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


@app.get("/stream")
async def stream():
    async def parts():
        for i in range(5):
            yield f"part {i}\n"
            await asyncio.sleep(0.01)
    return StreamingResponse(parts(), media_type="text/plain")


@app.get("/sse")
async def sse():
    async def events():
        for i in range(3):
            yield SSEMessage(f"event {i}", event="tick", id=str(i))
            await asyncio.sleep(0.01)
    return SSEResponse(events())


@app.get("/forever")
async def forever():
    async def ticks():
        note("forever started")
        try:
            i = 0
            while True:
                yield f"tick {i}\n"
                i += 1
                await asyncio.sleep(0.02)
        finally:
            note("forever closed")
    return StreamingResponse(ticks(), media_type="text/plain")


@app.websocket("/ws")
async def ws_echo(ws):
    try:
        while True:
            message = await ws.receive()
            if message == "close please":
                await ws.close(4001, "asked to")
                return
            await ws.send(message)
    except WebSocketDisconnect as exc:
        note(f"ws disconnect {exc.code} {exc.reason}")


@ws_echo.on_connect
def ws_hello(ws):
    if ws.query_params.get("deny", "") == "1":
        return Response(403, {}, "go away")
    return "welcome"


@ws_echo.on_close
def ws_bye(ws):
    note(f"ws closed {ws.close_code} {ws.close_reason} by {ws.closed_by}")


@app.websocket("/room")
async def room(ws):
    await ws.send_text("id " + ws.id)
    while True:
        message = await ws.receive_text()
        if message.startswith("to "):
            _, target, text = message.split(" ", 2)
            await ws.send_to(target, text)
        else:
            await ws.broadcast(message)


callbacks = WebSocket(app, "/cb")


@callbacks.on("connect")
def cb_connect(ws):
    return "callbacks here"


@callbacks.on("message")
def cb_message(ws, msg):
    return "echo " + msg if isinstance(msg, str) else msg


@callbacks.on("close")
def cb_close(ws):
    note(f"cb closed {ws.close_code}")


if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module", params=SERVERS)
def server(request, serve_module, tmp_path_factory):
    events = tmp_path_factory.mktemp(request.param) / "events.txt"
    proc = start(serve_module, request.param, APP, env={"EVENTS_FILE": str(events)})
    proc.events = events
    return proc


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def events(server) -> list[str]:
    return read_lines(server.events)


def run(coro):
    return asyncio.run(coro)


# -- HTTP ------------------------------------------------------------------------------------

def test_routing_params_and_errors(client):
    r = client.get("/")
    assert (r.status_code, r.text, r.headers["content-type"]) == (200, "Hello, world!", "text/plain; charset=utf-8")
    assert r.headers["content-length"] == "13"
    assert client.get("/json").json() == {"message": "hi"}
    assert client.get("/user/7", params={"verbose": "true"}).json() == {"id": 7, "verbose": True}
    assert client.get("/user/seven").status_code == 400
    assert client.get("/missing").status_code == 404
    r = client.post("/")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    r = client.get("/teapot")
    assert r.status_code == 418 and "short and stout" in r.text
    r = client.get("/crash")
    assert r.status_code == 500 and "boom" not in r.text


def test_request_parts_reach_the_handler(client, server):
    r = client.get("/request", params={"q": "a b/c"}, headers={"x-token": "t0k"})
    assert r.json() == {"token": "t0k", "host": f"127.0.0.1:{server.port}", "path": "/request",
                        "q": "a b/c", "method": "GET", "ip": "127.0.0.1"}


def test_request_body_and_its_limit(client):
    body = bytes(range(256)) * 3
    r = client.post("/echo", content=body)
    assert r.status_code == 200 and r.content == body and r.headers["x-length"] == str(len(body))
    assert client.post("/echo", content=b"x" * 1001).status_code == 413  # Content-Length says so

    def chunks():  # no Content-Length: chunked, refused while it grows past max_body_size
        for _ in range(30):
            yield b"y" * 100

    assert client.post("/echo", content=chunks()).status_code == 413
    small = client.post("/echo", content=iter([b"ab", b"cd"]))
    assert small.status_code == 200 and small.content == b"abcd"


def test_no_body_statuses_head_and_repeated_headers(client):
    r = client.get("/status/204")
    assert r.status_code == 204 and r.content == b"" and r.headers["x-status"] == "204"
    assert "content-length" not in r.headers
    r = client.get("/status/304")
    assert r.status_code == 304 and r.content == b""
    r = client.head("/")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "13"
    r = client.get("/cookie")
    assert r.headers.get_list("set-cookie")[:2] == ["a=1", "b=2"] or \
        sorted(c.split(";")[0] for c in r.headers.get_list("set-cookie")) == ["a=1", "b=2"]


def test_streaming_response(client):
    with client.stream("GET", "/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/plain"
        assert "content-length" not in r.headers
        text = "".join(r.iter_text())
    assert text == "".join(f"part {i}\n" for i in range(5))


def test_server_sent_events(client):
    with client.stream("GET", "/sse") as r:
        assert r.headers["content-type"] == "text/event-stream"
        body = "".join(r.iter_text())
    blocks = [b for b in body.split("\n\n") if b]
    assert blocks == [f"event: tick\nid: {i}\ndata: event {i}" for i in range(3)]


def test_a_stream_stops_when_the_client_leaves(client, server):
    before = events(server).count("forever closed")
    with client.stream("GET", "/forever") as r:
        lines = r.iter_lines()
        assert next(lines) == "tick 0"
        assert next(lines) == "tick 1"
    # The client closed the connection: the generator is closed (its finally ran).
    wait_until(lambda: events(server).count("forever closed") > before, what="the stream's generator to close")


# -- WebSocket -------------------------------------------------------------------------------

def test_websocket_receive_loop_echo_and_first_message(server):
    async def go():
        async with websockets.connect(server.ws_url + "/ws") as ws:
            assert await ws.recv() == "welcome"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
    run(go())


def test_websocket_client_close_code_and_reason_reach_the_app(server):
    async def go():
        async with websockets.connect(server.ws_url + "/ws") as ws:
            assert await ws.recv() == "welcome"
            await ws.close(4002, "bye now")
    run(go())
    wait_until(lambda: "ws closed 4002 bye now by client" in events(server), what="the close handler")
    assert "ws disconnect 4002 bye now" in events(server)


def test_websocket_server_close_code_and_reason_reach_the_client(server):
    async def go():
        async with websockets.connect(server.ws_url + "/ws") as ws:
            assert await ws.recv() == "welcome"
            await ws.send("close please")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason
    assert run(go()) == (4001, "asked to")
    wait_until(lambda: "ws closed 4001 asked to by server" in events(server), what="the close handler")


def test_websocket_refused_before_the_handshake(server):
    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(server.ws_url + "/ws?deny=1"):
                pass
        return info.value.response
    response = run(go())
    assert response.status_code == 403
    assert b"go away" in response.body  # uvicorn offers websocket.http.response: the app's own answer


def test_websocket_broadcast_and_send_to(server):
    async def go():
        async with websockets.connect(server.ws_url + "/room") as a, \
                websockets.connect(server.ws_url + "/room") as b:
            id_a = (await a.recv()).split(" ", 1)[1]
            await b.recv()
            await a.send("hello all")
            assert await a.recv() == "hello all" and await b.recv() == "hello all"
            await b.send(f"to {id_a} just you")
            assert await a.recv() == "just you"
    run(go())


def test_websocket_callback_style(server):
    async def go():
        async with websockets.connect(server.ws_url + "/cb") as ws:
            assert await ws.recv() == "callbacks here"
            await ws.send("one")
            assert await ws.recv() == "echo one"
            await ws.send(b"raw")
            assert await ws.recv() == b"raw"
            await ws.close(1000)
    run(go())
    wait_until(lambda: "cb closed 1000" in events(server), what="the callback close handler")


# -- lifecycle: one process per test ---------------------------------------------------------

@pytest.mark.parametrize("which", SERVERS)
def test_lifecycle_runs_in_order_on_both(which, serve, tmp_path):
    log = tmp_path / "events.txt"
    proc = start(serve, which, APP, env={"EVENTS_FILE": str(log)})
    assert read_lines(log) == ["startup first", "startup second", "lifespan enter"]
    assert httpx.get(proc.url + "/", timeout=5).text == "Hello, world!"
    proc.signal(signal.SIGTERM)
    code = proc.wait(20)
    # uvicorn re-raises the signal it stopped on once its shutdown is complete: -SIGTERM.
    assert code == 0 or (which == "uvicorn" and code == -signal.SIGTERM), proc.output()
    if which == "uvicorn":
        assert "Application shutdown complete" in proc.output()
    assert read_lines(log) == ["startup first", "startup second", "lifespan enter", "lifespan exit",
                               "shutdown second", "shutdown first"]


FAILING = r'''
import os
from stonechat import Robyn

app = Robyn(__file__)

@app.startup_handler
def fine():
    open(os.environ["EVENTS_FILE"], "a").write("fine ran\n")

@app.startup_handler
async def connect_db():
    raise ConnectionRefusedError("database unreachable")

@app.shutdown_handler
def cleanup():
    open(os.environ["EVENTS_FILE"], "a").write("cleanup ran\n")

@app.get("/")
def index():
    return "never served"

if __name__ == "__main__":
    app.start()
'''


@pytest.mark.parametrize("which", SERVERS)
def test_a_failing_startup_handler_is_named_and_nothing_is_served(which, serve, tmp_path):
    log = tmp_path / "events.txt"
    proc = start(serve, which, FAILING, env={"EVENTS_FILE": str(log)}, wait=False)
    assert proc.wait(20) == 3, proc.output()  # uvicorn's "startup failed" exit code is 3, like ours
    out = proc.output()
    assert "connect_db" in out and "database unreachable" in out
    if which == "uvicorn":
        assert "Application startup failed" in out
    assert read_lines(log) == ["fine ran", "cleanup ran"]  # the shutdown side ran, as natively
