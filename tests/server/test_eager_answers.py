"""Issue 13: an ``async def`` handler without hooks is answered from its own coroutine and the
route's ``done``/``failed`` (the finishing quadruple of ``server/interface.py``), with no
coroutine of the framework around it. Every kind of answer must come out as before, whether the
handler returns or raises at once (its first step, run eagerly) or after suspending (the rest,
run by the connection's task): each kind of returned value, an error before and after the first
await, an ``HTTPException``, a value that cannot be converted, a parameter that cannot be
filled, and the async exception handler for all of these, which runs in the handler's context.

The real server in a subprocess; every route takes ``?later=1`` to suspend before answering.
"""

from __future__ import annotations

import httpx
import pytest

ROUTES = r'''
import asyncio
import contextvars
import os

from stonechat import Request, Response, Robyn, StreamingResponse, serve_file
from stonechat.exceptions import HTTPException

app = Robyn(__file__)
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "answer.txt"), "w") as f:
    f.write("file contents")
VAR = contextvars.ContextVar("var", default="unset")


async def maybe_later(request):
    VAR.set("set by the handler")
    if request.query_params.get("later", "") == "1":
        await asyncio.sleep(0.001)


@app.get("/str")
async def a_str(request: Request):
    await maybe_later(request)
    return "text"


@app.get("/dict")
async def a_dict(request: Request):
    await maybe_later(request)
    return {"a": 1}


@app.get("/bytes")
async def a_bytes(request: Request):
    await maybe_later(request)
    return b"\x00\x01"


@app.get("/none")
async def a_none(request: Request):
    await maybe_later(request)
    return None


@app.get("/response")
async def a_response(request: Request):
    await maybe_later(request)
    return Response(201, {"x-made": "1"}, "made")


@app.get("/tuple")
async def a_tuple(request: Request):
    await maybe_later(request)
    return "tupled", {"x-t": "1"}, 202


@app.get("/file")
async def a_file(request: Request):
    await maybe_later(request)
    return serve_file(os.path.join(HERE, "answer.txt"))


@app.get("/stream")
async def a_stream(request: Request):
    await maybe_later(request)

    async def chunks():
        for part in (b"one ", b"two ", b"three"):
            await asyncio.sleep(0)
            yield part
    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/raise")
async def a_raise(request: Request):
    await maybe_later(request)
    raise RuntimeError("the handler failed")


@app.get("/http")
async def a_http(request: Request):
    await maybe_later(request)
    raise HTTPException(418, "teapot")


@app.get("/unconvertible")
async def a_unconvertible(request: Request):
    await maybe_later(request)
    return ("a", "tuple", "of", "four")  # not (body, headers, status): the conversion raises


@app.get("/typed/:id")
async def a_typed(id: int):
    return {"id": id}


@app.get("/cancel-caught")
async def a_cancel_caught(request: Request):
    # cancels its own task, sees it at the first await and raises something else instead
    asyncio.current_task().cancel()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        raise ValueError("after the cancel")
    return "not reached"
'''

PLAIN_APP = ROUTES + "\napp.start()\n"

HANDLED_APP = ROUTES + r'''

@app.exception
async def on_error(exc):
    await asyncio.sleep(0)  # suspends: the server must await what failed() gives it
    return Response(599 if not isinstance(exc, HTTPException) else exc.status_code,
                    {"x-handled": type(exc).__name__, "x-var": VAR.get()}, "handled " + str(exc))


app.start()
'''


@pytest.fixture(scope="module")
def plain(serve_module):
    return serve_module(PLAIN_APP)


@pytest.fixture(scope="module")
def handled(serve_module):
    return serve_module(HANDLED_APP)


def client_for(server):
    # one keep-alive connection: the requests after the first run eagerly under its task
    return httpx.Client(base_url=server.url, timeout=20, limits=httpx.Limits(max_connections=1))


LATER = ["", "?later=1"]


@pytest.mark.parametrize("later", LATER)
@pytest.mark.parametrize("path,status,ctype,body,header", [
    ("/str", 200, "text/plain", b"text", None),
    ("/dict", 200, "application/json", b'{"a":1}', None),
    ("/bytes", 200, "application/octet-stream", b"\x00\x01", None),
    ("/none", 200, "text/plain", b"None", None),
    ("/response", 201, None, b"made", ("x-made", "1")),
    ("/tuple", 202, None, b"tupled", ("x-t", "1")),
    ("/file", 200, None, b"file contents", None),
    ("/stream", 200, "text/plain", b"one two three", None),
])
def test_every_kind_of_returned_value(plain, path, status, ctype, body, header, later):
    with client_for(plain) as http:
        for _ in range(2):  # the second on a connection whose task is already made
            r = http.get(path + later)
            assert r.status_code == status, r.text
            assert r.content == body
            if ctype is not None:
                assert r.headers["content-type"].startswith(ctype)
            if header is not None:
                assert r.headers[header[0]] == header[1]


@pytest.mark.parametrize("later", LATER)
def test_a_file_answer_still_honours_conditional_and_range_requests(plain, later):
    with client_for(plain) as http:
        assert http.get("/file" + later, headers={"range": "bytes=0-3"}).content == b"file"
        etag = http.get("/file" + later).headers.get("etag")
        if etag is not None:
            assert http.get("/file" + later, headers={"if-none-match": etag}).status_code == 304


@pytest.mark.parametrize("later", LATER)
def test_errors_without_an_exception_handler(plain, later):
    with client_for(plain) as http:
        r = http.get("/raise" + later)
        assert r.status_code == 500 and r.text == "Internal server error"
        r = http.get("/http" + later)
        assert r.status_code == 418 and r.text == "teapot"
        r = http.get("/unconvertible" + later)
        assert r.status_code == 500 and r.text == "Internal server error"
        assert http.get("/str" + later).text == "text"  # the connection goes on answering


def test_a_parameter_that_cannot_be_filled_is_400(plain):
    with client_for(plain) as http:
        assert http.get("/typed/7").json() == {"id": 7}
        r = http.get("/typed/seven")
        assert r.status_code == 400 and "expected int" in r.text
        assert http.get("/typed/8").json() == {"id": 8}


def test_an_error_after_catching_its_own_cancel_takes_the_error_path(plain):
    with client_for(plain) as http:
        r = http.get("/cancel-caught")
        assert r.status_code == 500 and r.text == "Internal server error"
        assert http.get("/str").text == "text"


@pytest.mark.parametrize("later", LATER)
@pytest.mark.parametrize("path,status,kind,body", [
    ("/raise", 599, "RuntimeError", "handled the handler failed"),
    ("/http", 418, "HTTPException", "handled 418: teapot"),
    ("/unconvertible", 599, "ValueError", None),
])
def test_the_async_exception_handler_answers_in_the_handlers_context(handled, path, status, kind, body, later):
    with client_for(handled) as http:
        for _ in range(2):
            r = http.get(path + later)
            assert r.status_code == status, r.text
            assert r.headers["x-handled"] == kind
            # failed() runs where the handler ran: what it set is what the exception handler sees
            assert r.headers["x-var"] == "set by the handler"
            if body is not None:
                assert r.text == body
        assert http.get("/str" + later).text == "text"


def test_the_async_exception_handler_answers_a_parameter_error_too(handled):
    with client_for(handled) as http:
        # a ParamError is answered 400 before any exception handler (error_response.py)
        r = http.get("/typed/seven")
        assert r.status_code == 400 and "expected int" in r.text


def test_the_test_client_awaits_the_same_answers(tmp_path):
    # In process, the TestClient awaits the quadruple as one (interface.Finished): the same
    # answers for values and errors, before and after the first await.
    import asyncio

    from stonechat import Robyn
    from stonechat.exceptions import HTTPException
    from stonechat.testing import TestClient

    app = Robyn(str(tmp_path / "app.py"))

    @app.get("/value")
    async def value(request):
        if request.query_params.get("later", "") == "1":
            await asyncio.sleep(0)
        return {"v": 1}

    @app.get("/teapot")
    async def teapot(request):
        if request.query_params.get("later", "") == "1":
            await asyncio.sleep(0)
        raise HTTPException(418, "teapot")

    @app.get("/unconvertible")
    async def unconvertible():
        return ("a", "tuple", "of", "four")

    client = TestClient(app)
    for later in LATER:
        assert client.get("/value" + later).json() == {"v": 1}
        r = client.get("/teapot" + later)
        assert r.status_code == 418 and r.text == "teapot"
    assert client.get("/unconvertible").status_code == 500
