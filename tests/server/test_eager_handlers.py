"""Issue 13: ``async def`` handlers and middlewares run their first step at once (no Task per
request, server/eager.py); one that suspends keeps every task semantic: cancelled when the
client goes away, ``asyncio.current_task()`` set (the same task before and after the first
await), ``asyncio.timeout`` works, contextvars set by a middleware are visible and do not leak
into the next request, an error before the first await takes the normal 500 path.

The real server in a subprocess; handlers record what they saw, read back through /events.
"""

from __future__ import annotations

import socket
import struct
import time

import httpx
import pytest

APP = r'''
import asyncio
import contextvars

from stonechat import Request, Robyn

app = Robyn(__file__)
EVENTS = []
VAR = contextvars.ContextVar("var", default="unset")


def task_id():
    task = asyncio.current_task()
    return None if task is None else id(task)


@app.get("/events")
def events():
    return {"events": EVENTS}


@app.get("/task")
async def task(request: Request):
    before = task_id()
    await asyncio.sleep(0.01)
    after = task_id()
    return {"before": before, "after": after}


@app.get("/task-eager")
async def task_eager(request: Request):
    return {"task": task_id()}


@app.get("/hang")
async def hang(request: Request):
    EVENTS.append("hang started " + request.query_params.get("tag", ""))
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        EVENTS.append("hang cancelled " + request.query_params.get("tag", ""))
        raise
    return "finished"


@app.get("/timeout-suspends")
async def timeout_suspends(request: Request):
    try:
        async with asyncio.timeout(0.05):  # before the first await: needs the current task
            await asyncio.sleep(30)
    except TimeoutError:
        return "timed out"
    return "not timed out"


@app.get("/timeout-eager")
async def timeout_eager(request: Request):
    async with asyncio.timeout(5):
        return "in time"


@app.get("/self-cancel")
async def self_cancel(request: Request):
    asyncio.current_task().cancel()
    if request.query_params.get("suspend", "") == "1":
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "cancel seen at the first await"
    return "returned first"


@app.get("/set-var")
async def set_var(request: Request):
    seen = VAR.get()
    VAR.set("set by a handler")
    return {"seen": seen}


@app.get("/get-var")
async def get_var(request: Request):
    return {"seen": VAR.get()}


@app.get("/boom")
async def boom(request: Request):
    raise RuntimeError("before the first await")


@app.get("/boom-later")
async def boom_later(request: Request):
    await asyncio.sleep(0.01)
    raise RuntimeError("after an await")


# -- middlewares (async), each on its own route ---------------------------------------------
@app.before_request("/mw/ctx")
async def mw_ctx(request: Request):
    VAR.set("from the middleware")
    await asyncio.sleep(0.01)
    return request


@app.get("/mw/ctx")
async def mw_ctx_handler(request: Request):
    before = VAR.get()
    await asyncio.sleep(0.01)
    return {"before": before, "after": VAR.get(), "task": task_id()}


@app.before_request("/mw/ctx-eager")
async def mw_ctx_eager(request: Request):
    VAR.set("from the eager middleware")
    return request


@app.get("/mw/ctx-eager")
async def mw_ctx_eager_handler(request: Request):
    return {"seen": VAR.get()}


@app.before_request("/mw/hang")
async def mw_hang(request: Request):
    EVENTS.append("mw hang started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        EVENTS.append("mw hang cancelled")
        raise
    return request


@app.get("/mw/hang")
def mw_hang_handler():
    return "not reached"


@app.before_request("/mw/boom")
async def mw_boom(request: Request):
    raise RuntimeError("middleware, before its first await")


@app.get("/mw/boom")
async def mw_boom_handler():
    return "not reached"


@app.before_request("/mw/timeout")
async def mw_timeout(request: Request):
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(30)
    except TimeoutError:
        request.headers.set("x-timeout", "middleware timed out")
    return request


@app.get("/mw/timeout")
async def mw_timeout_handler(request: Request):
    return {"seen": request.headers.get("x-timeout"), "task": task_id()}


app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


@pytest.fixture
def http(server):
    # one keep-alive connection: the later requests run eagerly under the connection's task
    with httpx.Client(base_url=server.url, timeout=20, limits=httpx.Limits(max_connections=1)) as c:
        yield c


def wait_event(http: httpx.Client, event: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event in http.get("/events").json()["events"]:
            return
        time.sleep(0.02)
    raise AssertionError(f"{event!r} not in {http.get('/events').json()['events']}")


def test_current_task_before_and_after_the_first_await_is_the_same_task(http):
    for _ in range(3):  # the first request of the connection and the later (eager) ones
        seen = http.get("/task").json()
        assert seen["before"] is not None
        assert seen["before"] == seen["after"]


def test_current_task_in_a_handler_that_never_suspends(http):
    for _ in range(3):
        assert http.get("/task-eager").json()["task"] is not None


@pytest.mark.parametrize("path,started,cancelled", [
    ("/hang?tag=a", "hang started a", "hang cancelled a"),
    ("/mw/hang", "mw hang started", "mw hang cancelled"),
])
def test_a_suspended_handler_is_cancelled_when_the_client_goes_away(server, http, path, started, cancelled):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        # a first request answered on this connection, so the second one is not its first
        sock.sendall(b"GET /task-eager HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        wait_event(http, started)
        # gone for good (a reset): a clean half-close is still answered (server/http.py)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_event(http, cancelled)
    assert http.get("/task-eager").status_code == 200


def test_timeout_set_before_the_first_await_expires(http):
    for _ in range(2):
        r = http.get("/timeout-suspends")
        assert r.status_code == 200 and r.text == "timed out"
        r = http.get("/timeout-eager")
        assert r.status_code == 200 and r.text == "in time"


def test_timeout_in_an_async_middleware(http):
    seen = http.get("/mw/timeout").json()
    assert seen["seen"] == "middleware timed out" and seen["task"] is not None


def test_a_handler_cancelling_its_own_task(http):
    r = http.get("/self-cancel", params={"suspend": "1"})
    assert r.status_code == 200 and r.text == "cancel seen at the first await"
    r = http.get("/self-cancel")
    assert r.status_code == 200 and r.text == "returned first"
    # the connection's task serves on, with nothing left over from those cancels
    assert http.get("/timeout-suspends").text == "timed out"
    assert http.get("/task").json()["before"] is not None


def test_contextvars_from_a_middleware_are_visible(http):
    seen = http.get("/mw/ctx").json()
    assert seen["before"] == seen["after"] == "from the middleware"
    assert seen["task"] is not None
    assert http.get("/mw/ctx-eager").json()["seen"] == "from the eager middleware"


def test_contextvars_do_not_leak_into_the_next_request(http):
    for _ in range(3):
        assert http.get("/set-var").json()["seen"] == "unset"
        assert http.get("/get-var").json()["seen"] == "unset"


@pytest.mark.parametrize("path", ["/boom", "/boom-later", "/mw/boom"])
def test_an_error_takes_the_500_path(http, path):
    for _ in range(2):
        r = http.get(path)
        assert r.status_code == 500 and r.text == "Internal server error"
    assert http.get("/task-eager").status_code == 200


def test_tasks_left_by_closed_connections_serve_the_next_ones(server, http):
    # A connection's task, parked when the connection closes, serves a later connection
    # (server/http.py _Runner): every task semantic holds there too.
    for _ in range(4):
        with httpx.Client(base_url=server.url, timeout=20) as c:
            seen = c.get("/task").json()
            assert seen["before"] is not None and seen["before"] == seen["after"]
            assert c.get("/task-eager").json()["task"] is not None
            assert c.get("/timeout-suspends").text == "timed out"
            assert c.get("/set-var").json()["seen"] == "unset"
            assert c.get("/get-var").json()["seen"] == "unset"
        time.sleep(0.05)  # the server sees the close: the next connection takes that task


def test_a_task_with_a_stray_cancel_is_not_handed_on(server, http):
    # A handler cancels its task and returns, then the client leaves: that cancel must not
    # reach a request of another connection.
    for _ in range(3):
        with httpx.Client(base_url=server.url, timeout=20) as c:
            assert c.get("/self-cancel").text == "returned first"
        time.sleep(0.05)
        with httpx.Client(base_url=server.url, timeout=20) as c:
            assert c.get("/timeout-suspends").text == "timed out"
            seen = c.get("/task").json()
            assert seen["before"] is not None and seen["before"] == seen["after"]


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_a_handed_on_task_is_cancelled_with_its_new_connection(server, http, round_):
    tag = f"handed-{round_}"
    with httpx.Client(base_url=server.url, timeout=20) as c:
        assert c.get("/task-eager").status_code == 200  # leaves a parked task behind
    time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /task-eager HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(f"GET /hang?tag={tag} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        wait_event(http, f"hang started {tag}")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_event(http, f"hang cancelled {tag}")
    assert http.get("/task").json()["before"] is not None
