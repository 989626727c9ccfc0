"""``ALLOW_CORS``: Robyn's helper on real servers, with its defect fixed (several origins: the
request's own origin and ``Vary: Origin``, never ``*`` with credentials)."""

from __future__ import annotations

import httpx
import pytest

APP = """
from stonechat import ALLOW_CORS, Robyn, StreamingResponse

app = Robyn(__file__)
ALLOW_CORS(app, ORIGINS, headers=["X-Token"])

@app.get("/hello")
def hello():
    return "hi"

@app.post("/items")
def items(request):
    return {"got": request.text()}

@app.get("/vary")
def vary():
    return "v", {"Vary": "Accept-Encoding"}

@app.get("/stream")
def stream():
    def gen():
        yield "a"
        yield "b"
    return StreamingResponse(gen(), media_type="text/plain")

@app.get("/boom")
def boom():
    raise RuntimeError("boom")

app.start()
"""


@pytest.fixture(scope="module")
def single(serve_module):
    return serve_module(APP.replace("ORIGINS", '"https://app.example"'), name="single.py")


@pytest.fixture(scope="module")
def several(serve_module):
    return serve_module(APP.replace("ORIGINS", '["https://a.example", "https://b.example"]'),
                        name="several.py")


@pytest.fixture(scope="module")
def anyone(serve_module):
    return serve_module(APP.replace("ORIGINS", '"*"'), name="any.py")


def test_single_origin_on_every_response(single):
    for path in ("/hello", "/stream", "/boom", "/missing"):
        r = httpx.get(single.url + path, headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example", path
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "X-Token" in r.headers["access-control-allow-headers"]
    r = httpx.get(single.url + "/hello")  # no Origin (not a browser): served, header as in Robyn
    assert r.text == "hi" and r.headers["access-control-allow-origin"] == "https://app.example"


def test_other_origin_refused_with_a_reason(single, several):
    for server in (single, several):
        r = httpx.post(server.url + "/items", content="x", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert r.text == "CORS: origin https://evil.example is not allowed\n"


def test_preflight(single, several):
    r = httpx.options(single.url + "/items", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-token"})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS"
    assert r.headers["access-control-allow-headers"] == "X-Token, Content-Type, Authorization"
    assert r.headers["access-control-max-age"] == "3600"
    r = httpx.options(several.url + "/anything/at/all", headers={"Origin": "https://b.example"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://b.example"
    assert r.headers["vary"] == "Origin"


def test_several_origins_answer_the_requests_own(several):
    for origin in ("https://a.example", "https://b.example"):
        r = httpx.post(several.url + "/items", content="x", headers={"Origin": origin})
        assert r.json() == {"got": "x"}
        assert r.headers["access-control-allow-origin"] == origin  # not "*" (Robyn's defect)
        assert r.headers["access-control-allow-credentials"] == "true"
        assert r.headers["vary"] == "Origin"
    r = httpx.get(several.url + "/vary", headers={"Origin": "https://a.example"})
    assert r.headers["vary"] == "Accept-Encoding, Origin"  # the route's own Vary is kept
    r = httpx.get(several.url + "/hello")
    assert "access-control-allow-origin" not in r.headers and r.headers["vary"] == "Origin"


def test_any_origin_reflects_so_credentials_work(anyone):
    r = httpx.get(anyone.url + "/hello", headers={"Origin": "https://whoever.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://whoever.example"
    assert r.headers["access-control-allow-credentials"] == "true"


def test_bad_arguments_fail_at_the_call():
    from stonechat import ALLOW_CORS, Robyn
    with pytest.raises(ValueError, match="origins"):
        ALLOW_CORS(Robyn(__file__), [])
    with pytest.raises(ValueError, match="origins"):
        ALLOW_CORS(Robyn(__file__), ["https://ok.example", ""])
