"""Issue #2, responses (reference §6, §7, §9, §10, §12): return-value conversion, Response,
tuples, cookies, status codes, app-wide headers, exception handlers, HTTPException, auth,
SubRouter prefixes, files and streaming."""

from __future__ import annotations

import time

import httpx
import pytest

APP = r'''
import os
from stonechat import (Robyn, Response, Headers, SubRouter, jsonify, html, status_codes,
                       serve_file, serve_html, StreamingResponse)
from stonechat.exceptions import HTTPException
from stonechat.authentication import AuthenticationHandler, BearerGetter, Identity

app = Robyn(__file__)
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "data.txt"), "w") as f:
    f.write("file contents")
with open(os.path.join(HERE, "page.html"), "w") as f:
    f.write("<p>page</p>")

class MyStr(str): pass
class MyDict(dict): pass

@app.get("/str")
def r_str(): return "text"
@app.get("/substr")
def r_substr(): return MyStr("sub")
@app.get("/bytes")
def r_bytes(): return b"\x00\x01"
@app.get("/dict")
def r_dict(): return {"a": 1}
@app.get("/subdict")
def r_subdict(): return MyDict(b=2)
@app.get("/list")
def r_list(): return [1, "x"]
@app.get("/none")
def r_none(): return None
@app.get("/int")
def r_int(): return 42
@app.get("/response")
def r_response(): return Response(201, {"x-a": "1"}, "created")
@app.get("/response-body")
def r_response_body(): return Response(status_code=202, headers=Headers({"x-b": ["1", "2"]}), body=b"bb")
@app.get("/response-noct")
def r_response_noct(): return Response(200, None, "plain")
@app.get("/tuple-str")
def t_str(): return ("made", {"x-t": "1"}, 201)
@app.get("/tuple-dict")
def t_dict(): return ({"k": "v"}, {"x-t": "2"}, 202)
@app.get("/tuple-bytes")
def t_bytes(): return (b"raw", Headers({"x-t": "3"}), 203)
@app.get("/tuple-ct")
def t_ct(): return ("<b>x</b>", {"Content-Type": "text/html"}, 200)
@app.get("/tuple-2")
def t_2(): return ("two", 418)
@app.get("/tuple-bad")
def t_bad(): return ("one",)
@app.get("/jsonify")
def r_jsonify(): return jsonify({"j": [1, 2]})
@app.get("/html")
def r_html(): return html("<h1>hi</h1>")
@app.post("/created", status_code=status_codes.HTTP_201_CREATED)
def created(): return {"ok": True}
@app.post("/created-str", status_code=201)
def created_str(): return "made"
@app.post("/created-resp", status_code=201)
def created_resp(): return Response(200, {}, "own status")
@app.get("/redirect")
def redirect(): return Response(307, {"Location": "/str"}, "")
@app.get("/nocontent")
def nocontent(): return Response(204, {"x-n": "1"}, "should not be sent")
@app.get("/notmodified")
def notmodified(): return Response(304, {"etag": '"v1"'}, "nope")
@app.get("/cookies")
def cookies():
    r = Response(200, {}, "c")
    r.set_cookie("session", "abc", path="/", http_only=True, same_site="lax", max_age=60)
    r.set_cookie("theme", "dark", secure=True)
    r.cookies.delete("old")
    return r
@app.get("/bad-json")
def bad_json(): return {1: object()}
@app.get("/file")
def file(): return serve_file(os.path.join(HERE, "data.txt"))
@app.get("/file-named")
def file_named(): return serve_file(os.path.join(HERE, "data.txt"), file_name="report.csv")
@app.get("/page")
def page(): return serve_html(os.path.join(HERE, "page.html"))
@app.get("/stream")
async def stream():
    async def gen():
        for i in range(3):
            yield f"part{i};"
    return StreamingResponse(gen(), media_type="text/plain")
@app.get("/stream-sync")
def stream_sync():
    return StreamingResponse((c for c in [b"a", "b", b"c"]), headers={"x-s": "1"}, media_type="application/x-thing")

SLOW_GEN = {"yielded": 0, "closed": False}

@app.get("/sse-sync-sleepy")
def sse_sync_sleepy():
    import time
    def events():
        try:
            for i in range(50):
                SLOW_GEN["yielded"] += 1
                yield f"data: {i}\n\n"
                time.sleep(1.0)  # a sync generator that sleeps between events (real apps do)
        finally:
            SLOW_GEN["closed"] = True
    return StreamingResponse(events())

@app.get("/sse-sync-state")
def sse_sync_state():
    return dict(SLOW_GEN)

@app.get("/framing")
def framing(): return Response(200, {"Content-Length": "999", "Transfer-Encoding": "chunked",
                                     "Connection": "close", "x-ok": "1"}, "abc")
@app.get("/crlf")
def crlf(): return Response(200, {"x-bad": "a\r\nSet-Cookie: evil=1"}, "abc")
@app.get("/status-1000")
def status_1000(): return Response(1000, {}, "abc")
@app.get("/status-100")
def status_100(): return Response(100, {}, "")
@app.get("/status-599")
def status_599(): return Response(599, {}, "edge")
@app.get("/http-exc-headers")
def http_exc_headers(): raise HTTPException(401, "who", headers={"WWW-Authenticate": "Basic"})
@app.get("/param/:n")
def param(n: int): return n
@app.get("/stream-fail")
async def stream_fail():
    async def gen():
        yield "first;"
        raise RuntimeError("mid-stream")
    return StreamingResponse(gen(), media_type="text/plain")

# app-wide default response headers
app.add_response_header("x-app", "default")
app.set_response_header("server-tag", "sc")
app.exclude_response_headers_for(["/excluded"])
@app.get("/excluded")
def excluded(): return "ex"
@app.get("/override")
def override(): return Response(200, {"X-App": "mine"}, "o")

# HTTPException and the exception handler
@app.get("/http-exc")
def http_exc(): raise HTTPException(409, "conflict here")
@app.get("/http-exc-default")
async def http_exc_default(): raise HTTPException(404)
@app.get("/crash")
def crash(): raise RuntimeError("secret detail")

# auth
class TokenAuth(AuthenticationHandler):
    def authenticate(self, request):
        token = self.token_getter.get_token(request)
        return Identity(claims={"user": "u1"}) if token == "ok" else None
class AsyncAuth(AuthenticationHandler):
    async def authenticate(self, request):
        return Identity(claims={"user": "async"}) if request.headers.get("x-ok") else None

@app.get("/me", auth_required=True)
def me(request): return request.identity.claims
@app.post("/me", auth_required=True)
async def me_post(request): return {"post": request.identity.claims["user"]}
app.configure_authentication(TokenAuth(token_getter=BearerGetter()))

# SubRouter
api = SubRouter("/api")
@api.get("/")
def api_root(): return "api root"
@api.get("/items/:id")
def api_item(id: int): return {"item": id}
inner = SubRouter(prefix="/v2")
@inner.post("/things")
def things(): return "v2 things"
@inner.get("/secure", auth_required=True)
def secure(request): return request.identity.claims["user"]
api.include_router(inner)
app.include_router(api)

if __name__ == "__main__":
    app.start()
'''

EXC_APP = r'''
from stonechat import Robyn, Response
from stonechat.exceptions import HTTPException

app = Robyn(__file__)

@app.get("/before")
def before(): raise ValueError("registered before the handler")

@app.get("/http")
def http(): raise HTTPException(403, "nope")

@app.get("/ok")
def ok(): return "ok"

@app.get("/handler-fails")
async def handler_fails(): raise KeyError("k")

@app.exception
async def on_error(exc):
    if isinstance(exc, KeyError):
        raise RuntimeError("the handler itself fails")
    if isinstance(exc, HTTPException):
        return Response(exc.status_code, {"x-mapped": "1"}, "mapped " + exc.detail)
    return Response(500, {"x-handled": "1"}, "handled " + type(exc).__name__)

@app.get("/after")
async def after(): raise TypeError("registered after")

if __name__ == "__main__":
    app.start()
'''

SYNC_EXC_APP = r'''
from stonechat import Robyn

app = Robyn(__file__)

@app.exception
def on_error(exc):
    return {"error": str(exc)}, {"x-e": "1"}, 418

@app.get("/boom")
def boom(): raise ValueError("bad thing")

@app.get("/boom-async")
async def boom_async(): raise ValueError("bad async")

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


@pytest.mark.parametrize("path,status,ctype,body", [
    ("/str", 200, "text/plain", b"text"),
    ("/substr", 200, "text/plain", b"sub"),
    ("/bytes", 200, "application/octet-stream", b"\x00\x01"),
    ("/dict", 200, "application/json", b'{"a":1}'),
    ("/subdict", 200, "application/json", b'{"b":2}'),
    ("/list", 200, "application/json", b'[1,"x"]'),
    ("/none", 200, "text/plain", b"None"),  # Robyn answers the text "None"
    ("/int", 200, "text/plain", b"42"),
    ("/response", 201, None, b"created"),
    ("/response-body", 202, None, b"bb"),
    ("/tuple-str", 201, "text/plain", b"made"),
    ("/tuple-dict", 202, "application/json", b'{"k":"v"}'),
    ("/tuple-bytes", 203, "application/octet-stream", b"raw"),
    ("/tuple-ct", 200, "text/html", b"<b>x</b>"),
    ("/tuple-2", 418, "text/plain", b"two"),
    ("/jsonify", 200, "text/plain", b'{"j":[1,2]}'),
    ("/html", 200, "text/html", b"<h1>hi</h1>"),
])
def test_return_conversion(client, path, status, ctype, body):
    r = client.get(path)
    assert r.status_code == status
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))
    if ctype is None:
        assert "content-type" not in r.headers
    else:
        assert r.headers["content-type"].split(";")[0] == ctype


def test_response_headers(client):
    assert client.get("/response").headers["x-a"] == "1"
    r = client.get("/response-body")
    assert r.headers.get_list("x-b") == ["1", "2"]
    assert client.get("/tuple-str").headers["x-t"] == "1"
    assert client.get("/tuple-dict").headers["x-t"] == "2"
    assert client.get("/tuple-bytes").headers["x-t"] == "3"
    assert client.get("/tuple-ct").headers.get_list("content-type") == ["text/html"]


def test_bad_tuple_500(client, server):
    r = client.get("/tuple-bad")
    assert r.status_code == 500
    assert httpx.get(server.url + "/str").status_code == 200


def test_unserialisable_json_500(client, server):
    assert client.get("/bad-json").status_code == 500
    assert httpx.get(server.url + "/str").status_code == 200


def test_route_status_code(client):
    r = client.post("/created")
    assert r.status_code == 201 and r.json() == {"ok": True}
    r = client.post("/created-str")
    assert r.status_code == 201 and r.text == "made"
    r = client.post("/created-resp")
    assert r.status_code == 200 and r.text == "own status"


def test_redirect(client):
    r = client.get("/redirect")
    assert r.status_code == 307 and r.headers["location"] == "/str"
    assert client.get("/redirect", follow_redirects=True).text == "text"


def test_no_body_statuses(client):
    r = client.get("/nocontent")
    assert r.status_code == 204 and r.content == b"" and r.headers["x-n"] == "1"
    assert "content-length" not in r.headers and "transfer-encoding" not in r.headers
    r = client.get("/notmodified")
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == '"v1"'
    assert "transfer-encoding" not in r.headers
    # the connection is still usable after both
    assert client.get("/str").text == "text"


def test_cookies(client):
    r = client.get("/cookies")
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 3
    session = next(c for c in cookies if c.startswith("session="))
    assert set(session.split("; ")) == {"session=abc", "Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=60"}
    assert any(c.startswith("theme=dark") and "Secure" in c for c in cookies)
    assert any(c.startswith("old=;") and "Max-Age=0" in c for c in cookies)
    assert r.cookies["session"] == "abc"


def test_default_response_headers(client):
    for path in ("/str", "/dict", "/response", "/nope-404", "/tuple-dict", "/stream"):
        r = client.get(path)
        assert r.headers.get("x-app") == "default", path
        assert r.headers.get("server-tag") == "sc", path
    r = client.get("/excluded")
    assert r.text == "ex" and "x-app" not in r.headers and "server-tag" not in r.headers
    r = client.get("/override")
    assert r.headers.get_list("x-app") == ["mine"]
    r = client.post("/str")  # 405 gets them too
    assert r.status_code == 405 and r.headers.get("x-app") == "default"


def test_date_and_server_headers(client):
    r = client.get("/str")
    assert r.headers["server"] == "stonechat"
    assert r.headers["date"].endswith(" GMT")


def test_files(client):
    r = client.get("/file")
    assert r.content == b"file contents"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"] == "attachment; filename=data.txt"  # Robyn's shape
    r = client.get("/file-named")
    assert r.headers["content-type"] == "text/csv"
    assert r.headers["content-disposition"] == "attachment; filename=report.csv"
    r = client.get("/page")
    assert r.text == "<p>page</p>" and r.headers["content-type"].startswith("text/html")
    assert "content-disposition" not in r.headers


def test_streaming(client):
    r = client.get("/stream")
    assert r.text == "part0;part1;part2;"
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"  # as Robyn, on every stream
    assert r.headers["x-accel-buffering"] == "no" and r.headers["pragma"] == "no-cache"
    r = client.get("/stream-sync")
    assert r.content == b"abc" and r.headers["x-s"] == "1"
    assert r.headers["content-type"] == "application/x-thing"
    r = client.head("/stream")
    assert r.status_code == 200 and r.content == b""


def test_a_sleeping_sync_generator_neither_freezes_the_server_nor_outlives_its_client(server):
    """Robyn pulls each chunk of a sync generator on a thread; so do we. While one stream's
    generator sleeps, other requests are answered at once; when the client leaves, the
    generator is closed after its current step instead of running to its end."""
    with httpx.Client(base_url=server.url, timeout=10) as streamer, httpx.Client(base_url=server.url) as other:
        with streamer.stream("GET", "/sse-sync-sleepy") as r:
            assert r.headers["content-type"] == "text/event-stream"
            lines = r.iter_lines()
            assert next(lines) == "data: 0"
            for _ in range(3):  # while the generator sleeps between events
                started = time.monotonic()
                assert other.get("/str").text == "text"
                assert time.monotonic() - started < 0.5  # a frozen loop would take up to 1 s
        deadline = time.monotonic() + 5
        while not other.get("/sse-sync-state").json()["closed"]:
            assert time.monotonic() < deadline, "the generator kept running after its client left"
            time.sleep(0.05)
        assert other.get("/sse-sync-state").json()["yielded"] < 10


def test_http_exception_without_handler(client):
    r = client.get("/http-exc")
    assert r.status_code == 409 and r.text == "conflict here"
    r = client.get("/http-exc-default")
    assert r.status_code == 404 and r.text == "Not Found"  # HTTPException's default detail: the reason phrase


def test_handler_exception_500_and_keep_going(client, server):
    r = client.get("/crash")
    assert r.status_code == 500
    assert "secret detail" not in r.text and len(r.content) < 100
    # same connection, then a fresh one
    assert client.get("/str").text == "text"
    assert httpx.get(server.url + "/str").status_code == 200
    assert "secret detail" in server.output()  # the traceback is logged


def test_auth(client):
    r = client.get("/me")
    assert r.status_code == 401 and r.text == "Unauthorized"
    assert r.headers["www-authenticate"] == "BearerGetter"
    assert client.get("/me", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/me", headers={"authorization": "Bearer ok"}).json() == {"user": "u1"}
    # route-scoped auth on a POST (Robyn: GET only)
    assert client.post("/me").status_code == 401
    assert client.post("/me", headers={"authorization": "Bearer ok"}).json() == {"post": "u1"}
    # auth propagates to nested SubRouters configured before the app had a handler
    assert client.get("/api/v2/secure").status_code == 401
    assert client.get("/api/v2/secure", headers={"authorization": "Bearer ok"}).text == "u1"


def test_subrouter_prefixes(client):
    assert client.get("/api").text == "api root"
    assert client.get("/api/").text == "api root"
    assert client.get("/api/items/3").json() == {"item": 3}
    assert client.post("/api/v2/things").text == "v2 things"
    assert client.get("/v2/things").status_code == 404
    assert client.get("/items/3").status_code == 404


def test_exception_handler_async_covers_earlier_routes(serve):
    server = serve(EXC_APP)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/before")
        assert r.status_code == 500 and r.text == "handled ValueError" and r.headers["x-handled"] == "1"
        r = c.get("/after")
        assert r.text == "handled TypeError"
        r = c.get("/http")
        assert r.status_code == 403 and r.text == "mapped nope" and r.headers["x-mapped"] == "1"
        r = c.get("/handler-fails")
        assert r.status_code == 500 and "Internal server error" in r.text
        assert c.get("/ok").text == "ok"


def test_exception_handler_sync_tuple(serve):
    server = serve(SYNC_EXC_APP)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for path, msg in (("/boom", "bad thing"), ("/boom-async", "bad async")):
            r = c.get(path)
            assert r.status_code == 418 and r.json() == {"error": msg} and r.headers["x-e"] == "1"


def test_debug_mode_shows_traceback(serve):
    server = serve(SYNC_EXC_APP.replace("@app.exception", "@app.get('/unused')"),
                   env={"STONECHAT_DEBUG": "1"})
    r = httpx.get(server.url + "/boom", timeout=10)
    assert r.status_code == 500
    assert "Traceback" in r.text and "ValueError: bad thing" in r.text
    server2 = serve(SYNC_EXC_APP.replace("@app.exception", "@app.get('/unused')"), args=["--debug"])
    r = httpx.get(server2.url + "/boom-async", timeout=10)
    assert r.status_code == 500 and "ValueError: bad async" in r.text


def test_framing_headers_from_handler_dropped(client):
    r = client.get("/framing")
    assert r.status_code == 200 and r.content == b"abc"
    assert r.headers["content-length"] == "3" and "transfer-encoding" not in r.headers
    assert r.headers["x-ok"] == "1" and r.headers.get("connection") != "close"


def test_header_injection_refused(client, server):
    r = client.get("/crlf")
    assert r.status_code == 500 and "evil" not in r.headers.get("set-cookie", "")
    assert httpx.get(server.url + "/str").status_code == 200


@pytest.mark.parametrize("path", ["/status-1000", "/status-100"])
def test_invalid_status_becomes_500(client, server, path):
    r = client.get(path)
    assert r.status_code == 500
    assert httpx.get(server.url + "/str").status_code == 200


def test_status_599_allowed(client):
    r = client.get("/status-599")
    assert r.status_code == 599 and r.text == "edge"


def test_invalid_route_status_code_refused_at_registration():
    from stonechat import Robyn
    app = Robyn(__file__)
    with pytest.raises(ValueError):
        app.get("/x", status_code=1000)(lambda: "x")


def test_http_exception_headers(client):
    r = client.get("/http-exc-headers")
    assert r.status_code == 401 and r.text == "who" and r.headers["www-authenticate"] == "Basic"


def test_default_headers_on_error_responses(client):
    for path, status in (("/param/x", 400), ("/crash", 500), ("/http-exc", 409), ("/status-1000", 500)):
        r = client.get(path)
        assert r.status_code == status
        assert r.headers.get("x-app") == "default", path
        assert r.headers["content-type"].startswith("text/plain")


def test_stream_failing_midway_is_cut_not_completed(server):
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /stream-fail HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"first;" in data
    assert not data.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees the failure
    assert httpx.get(server.url + "/str").status_code == 200
