"""ASGI apps inside stonechat (issue #10, part 2): ``app.mount(prefix, asgi_app)`` on stonechat's
own server, with real Starlette apps (routes, streaming, SSE, background tasks, lifespan with
state, WebSockets, ``StaticFiles``) and raw ASGI apps for the error paths. Real processes, real
clients.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgi_servers import read_lines, start, wait_until

APP = r'''
import asyncio
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect

from stonechat import Robyn

EVENTS = os.environ["EVENTS_FILE"]


def note(what):
    with open(EVENTS, "a") as f:
        f.write(what + "\n")


fired = asyncio.Event()
released = asyncio.Event()


async def info(request):
    scope = request.scope
    return JSONResponse({"path": scope["path"], "raw_path": scope["raw_path"].decode(),
                         "root_path": scope["root_path"], "query": scope["query_string"].decode(),
                         "token": request.headers.get("x-token"), "method": request.method,
                         "url_for": str(request.url_for("item", id=3)), "client": scope["client"][0],
                         "answer": getattr(request.state, "answer", None)})


async def item(request):
    return PlainTextResponse(f"item {request.path_params['id']}")


async def echo(request):
    body = await request.body()
    return Response(body, media_type="application/octet-stream", headers={"x-length": str(len(body))})


async def echo_stream(request):
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"size": size})


async def chunks(request):
    async def parts():
        for i in range(4):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)
    return StreamingResponse(parts(), media_type="text/plain")


async def wait_for_fire(request):
    async def events():
        await fired.wait()
        yield b"data: fired\n\n"
    return StreamingResponse(events(), media_type="text/event-stream")


async def fire(request):
    fired.set()
    return PlainTextResponse("fired")


async def forever(request):
    async def ticks():
        try:
            i = 0
            while True:
                yield f"tick {i}\n".encode()
                i += 1
                await asyncio.sleep(0.02)
        finally:
            note("mounted stream closed")
    return StreamingResponse(ticks(), media_type="text/plain")


async def later():
    await released.wait()
    note("background done")


async def background(request):
    return PlainTextResponse("answered first", background=BackgroundTask(later))


async def release(request):
    released.set()
    return PlainTextResponse("released")


async def nothing(request):
    return Response(status_code=204)


async def broken(request):
    raise RuntimeError("starlette route broke")


async def ws_echo(websocket):
    await websocket.accept(subprotocol=websocket.scope["subprotocols"][0] if websocket.scope["subprotocols"] else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                note(f"mounted ws disconnect {message['code']} {message.get('reason', '')}")
                return
            text = message.get("text")
            if text == "close please":
                await websocket.close(4003, "mounted says bye")
                return
            if text is not None:
                await websocket.send_text("star:" + text)
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as exc:
        note(f"mounted ws disconnect {exc.code}")


async def ws_refuse(websocket):
    await websocket.close(code=1008)


async def ws_deny(websocket):
    await websocket.send_denial_response(PlainTextResponse("no entry", status_code=401))


@asynccontextmanager
async def star_lifespan(app):
    note("star startup")
    yield {"answer": 42}
    note("star shutdown")


star = Starlette(routes=[
    Route("/", info), Route("/info", info), Route("/info/{rest:path}", info), Route("/items/{id}", item, name="item"),
    Route("/echo", echo, methods=["POST"]), Route("/echo-stream", echo_stream, methods=["POST"]),
    Route("/chunks", chunks), Route("/wait", wait_for_fire), Route("/fire", fire), Route("/forever", forever),
    Route("/background", background), Route("/release", release), Route("/nothing", nothing),
    Route("/broken", broken),
    WebSocketRoute("/ws", ws_echo), WebSocketRoute("/ws-refuse", ws_refuse), WebSocketRoute("/ws-deny", ws_deny),
], lifespan=star_lifespan)


async def raw_app(scope, receive, send):
    """A bare ASGI app: its answers show what stonechat hands over, and its faults."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                note("raw startup")
                await send({"type": "lifespan.startup.complete"})
            else:
                note("raw shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.endswith("/self-cancel"):
        asyncio.current_task().cancel()  # then answers at once: the cancel must not reach another request
    elif path.endswith("/scoped-wait"):
        import anyio
        with anyio.fail_after(5):  # a cancel scope held across an await: the same task must exit it
            await asyncio.sleep(0.01)
    if path.endswith("/bad-header"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-bad", b"a\r\nset-cookie: evil=1")]})
        await send({"type": "http.response.body", "body": b"split"})
        return
    if path.endswith("/raise"):
        raise ValueError("raw app raised")
    if path.endswith("/silent"):
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-root", scope["root_path"].encode())]})
    await send({"type": "http.response.body", "body": f"raw {path}".encode()})


app = Robyn(__file__)


@app.startup_handler
def native_startup():
    note("native startup")


@app.lifespan
@asynccontextmanager
async def native_lifespan():
    note("native lifespan enter")
    yield
    note("native lifespan exit")


@app.shutdown_handler
def native_shutdown():
    note("native shutdown")


@app.get("/native")
def native():
    return "stonechat route"


@app.get("/star/health")
def star_health():
    return "stonechat owns this one"


app.mount("/star", star)
app.mount("/static", StaticFiles(directory=os.environ["STATIC_DIR"]))
app.mount("/", raw_app)

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("static")
    (d / "hello.txt").write_text("static hello\n")
    (d / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return d


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory, static_dir):
    events = tmp_path_factory.mktemp("mount") / "events.txt"
    proc = start(serve_module, "stonechat", APP, env={"EVENTS_FILE": str(events), "STATIC_DIR": str(static_dir)})
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


def test_scope_paths_as_starlette_reads_them(client, server):
    r = client.get("/star/info/a%20b/c", params={"x": "1"}, headers={"x-token": "abc"})
    assert r.status_code == 200
    assert r.json() == {
        "path": "/star/info/a b/c", "raw_path": "/star/info/a%20b/c", "root_path": "/star", "query": "x=1",
        "token": "abc", "method": "GET", "url_for": f"http://127.0.0.1:{server.port}/star/items/3",
        "client": "127.0.0.1", "answer": 42}
    assert client.get("/star/items/9").text == "item 9"
    assert client.get("/star/").json()["path"] == "/star/"
    r = client.get("/star", follow_redirects=False)  # Starlette's own redirect to the slash
    assert r.status_code == 307 and r.headers["location"].endswith("/star/")


def test_calls_that_answer_at_once_and_calls_that_wait_share_a_connection(client):
    # One keep-alive connection: answers at once run on a spare task that is kept, a call that
    # waits keeps that task as its own (eager.py); each must see only its own cancels and scopes.
    paths = ["/a", "/self-cancel", "/scoped-wait", "/b", "/self-cancel", "/self-cancel", "/scoped-wait", "/c"]
    answers = [client.get(path) for path in paths]
    assert [(r.status_code, r.text) for r in answers] == [(200, f"raw {path}") for path in paths]


def test_a_header_with_cr_lf_is_never_written(client):
    for _ in range(2):  # the second time too: a refused header is not remembered as a line
        answer = client.get("/bad-header")
        assert answer.status_code == 500 and "set-cookie" not in answer.headers and "x-bad" not in answer.headers


def test_stonechat_routes_first_then_the_longest_prefix(client):
    assert client.get("/native").text == "stonechat route"
    assert client.get("/star/health").text == "stonechat owns this one"
    r = client.get("/starry/x")  # not under /star: the root mount
    assert r.text == "raw /starry/x" and r.headers["x-root"] == ""
    assert client.get("/anything").text == "raw /anything"


def test_request_bodies_both_ways(client):
    body = bytes(range(256)) * 400  # 100 KiB
    r = client.post("/star/echo", content=body)
    assert r.content == body and r.headers["x-length"] == str(len(body))
    r = client.post("/star/echo-stream", content=iter([b"a" * 1000] * 50))
    assert r.json() == {"size": 50000}


def test_streaming_response_is_chunked(client):
    with client.stream("GET", "/star/chunks") as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert "".join(r.iter_text()) == "".join(f"chunk {i}\n" for i in range(4))


def test_event_stream_headers_go_out_before_the_first_event(server):
    with httpx.Client(base_url=server.url, timeout=10) as c, httpx.Client(base_url=server.url, timeout=10) as other:
        with c.stream("GET", "/star/wait") as r:  # returns once the head arrived
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert other.get("/star/fire").text == "fired"
            assert next(r.iter_lines()) == "data: fired"


def test_client_leaving_ends_the_mounted_stream(client, server):
    before = events(server).count("mounted stream closed")
    with client.stream("GET", "/star/forever") as r:
        lines = r.iter_lines()
        assert next(lines) == "tick 0"
    wait_until(lambda: events(server).count("mounted stream closed") > before, what="the generator to close")


def test_background_task_runs_after_the_response_is_sent(client, server):
    r = client.get("/star/background")  # answered while the background task still waits
    assert r.text == "answered first"
    assert "background done" not in events(server)
    assert client.get("/star/release").text == "released"
    wait_until(lambda: "background done" in events(server), what="the background task")


def test_head_204_and_errors(client):
    get = client.get("/star/items/5")
    head = client.head("/star/items/5")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len("item 5"))
    r = client.get("/star/nothing")
    assert r.status_code == 204 and r.content == b""
    r = client.get("/star/broken")  # Starlette's own error middleware answers
    assert r.status_code == 500


def test_raw_app_faults_are_500_and_named(client, server):
    r = client.get("/x/raise")
    assert r.status_code == 500 and r.text == "Internal Server Error\n"
    out = server.wait_for_output("raw app raised")
    assert "mounted app raw_app at / failed on GET /x/raise" in out
    r = client.get("/x/silent")
    assert r.status_code == 500
    server.wait_for_output("returned without finishing its response to GET /x/silent")


def test_static_files(client, static_dir):
    r = client.get("/static/hello.txt")
    assert r.status_code == 200 and r.text == "static hello\n"
    big = client.get("/static/big.bin")
    assert big.content == (static_dir / "big.bin").read_bytes()
    head = client.head("/static/big.bin")
    assert head.status_code == 200 and head.headers["content-length"] == str(1024 * 1024) and head.content == b""
    assert client.get("/static/missing.txt").status_code == 404
    r = client.get("/static/hello.txt", headers={"range": "bytes=0-5"})
    assert r.status_code == 206 and r.text == "static"


def test_mounted_websocket_echo_and_subprotocol(server):
    async def go():
        async with websockets.connect(server.ws_url + "/star/ws", subprotocols=["v2.chat", "v1.chat"]) as ws:
            assert ws.subprotocol == "v2.chat"
            await ws.send("hi")
            assert await ws.recv() == "star:hi"
            await ws.send(b"\x01\x02")
            assert await ws.recv() == b"\x01\x02"
    run(go())


def test_mounted_websocket_close_both_ways(server):
    async def client_closes():
        async with websockets.connect(server.ws_url + "/star/ws") as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(4010, "client done")
    run(client_closes())
    wait_until(lambda: "mounted ws disconnect 4010 client done" in events(server), what="the app's disconnect")

    async def app_closes():
        async with websockets.connect(server.ws_url + "/star/ws") as ws:
            await ws.send("close please")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason
    assert run(app_closes()) == (4003, "mounted says bye")


def test_mounted_websocket_refusals(server):
    async def status(path):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(server.ws_url + path):
                pass
        return info.value.response.status_code, info.value.response.body
    code, _ = run(status("/star/ws-refuse"))
    assert code == 403  # websocket.close before websocket.accept
    assert run(status("/star/ws-deny")) == (401, b"no entry")  # the websocket.http.response extension


def test_lifespans_in_order_with_state_and_shutdown(serve, tmp_path, static_dir):
    log = tmp_path / "events.txt"
    proc = start(serve, "stonechat", APP, env={"EVENTS_FILE": str(log), "STATIC_DIR": str(static_dir)})
    assert read_lines(log) == ["native startup", "native lifespan enter", "star startup", "raw startup"]
    assert httpx.get(proc.url + "/star/info").json()["answer"] == 42  # the lifespan's state
    out = proc.output()
    assert "mounted app StaticFiles at /static does not support the ASGI lifespan protocol" in out
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0, proc.output()
    assert read_lines(log) == ["native startup", "native lifespan enter", "star startup", "raw startup",
                               "raw shutdown", "star shutdown", "native lifespan exit", "native shutdown"]
    out = proc.output()
    assert "running lifespan mounted app Starlette at /star" in out


FAILING_MOUNT = r'''
import os
from contextlib import asynccontextmanager
from starlette.applications import Starlette
from stonechat import Robyn

def note(what):
    open(os.environ["EVENTS_FILE"], "a").write(what + "\n")

@asynccontextmanager
async def broken_lifespan(app):
    raise ConnectionError("cache cluster unreachable")
    yield

app = Robyn(__file__)
app.mount("/bad", Starlette(lifespan=broken_lifespan))

@app.shutdown_handler
def cleanup():
    note("cleanup ran")

if __name__ == "__main__":
    app.start()
'''


def test_a_mounted_app_failing_its_startup_fails_ours_naming_it(serve, tmp_path):
    log = tmp_path / "events.txt"
    proc = start(serve, "stonechat", FAILING_MOUNT, env={"EVENTS_FILE": str(log)}, wait=False)
    assert proc.wait(20) == 3, proc.output()
    out = proc.output()
    assert "mounted app Starlette at /bad" in out and "cache cluster unreachable" in out
    assert "not serving: startup failed" in out
    assert read_lines(log) == ["cleanup ran"]


def test_shutdown_closes_mounted_websockets_with_1001_before_the_app_stops(serve, tmp_path, static_dir):
    log = tmp_path / "events.txt"
    proc = start(serve, "stonechat", APP, env={"EVENTS_FILE": str(log), "STATIC_DIR": str(static_dir)})

    async def go():
        async with websockets.connect(proc.ws_url + "/star/ws") as ws:
            await ws.send("ping")
            assert await ws.recv() == "star:ping"
            proc.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason
    assert run(go()) == (1001, "server shutting down")
    assert proc.wait(20) == 0, proc.output()
    lines = read_lines(log)
    assert "mounted ws disconnect 1001 server shutting down" in lines
    assert lines.index("mounted ws disconnect 1001 server shutting down") < lines.index("star shutdown")
