"""Issue #2, routing: every method decorator, add_route, static/:param/*wildcard paths, const
routes, 405 with Allow, automatic HEAD, 404, conflicts refused at registration."""

from __future__ import annotations

import httpx
import pytest

from stonechat import Robyn, SubRouter
from stonechat.core.routing import RouteConflict

APP = r'''
import itertools
from stonechat import Robyn, Response, HttpMethod

app = Robyn(__file__)
counter = itertools.count()

@app.get("/")
def root():
    return "root"

for verb in ("post", "put", "delete", "patch", "options", "connect", "trace"):
    def make(v):
        def handler(request):
            return f"{v} {request.method}"
        return handler
    getattr(app, verb)("/verbs")(make(verb))

@app.head("/only-head")
def only_head():
    return Response(200, {"x-head": "yes"}, "ignored body")

@app.get("/verbs")
def verbs_get():
    return "get GET"

def added(request):
    return "added " + request.method
app.add_route("GET", "/added", added)
app.add_route(HttpMethod.POST, "/added", added)
app.add_route("put", "/added", added)

@app.get("/users/:id")
def user(request):
    return {"route": "param", "params": request.path_params}

@app.get("/users/me")
def me():
    return {"route": "static"}

@app.get("/users/:id/posts/:post")
def post(id: int, post: str):
    return {"id": id, "post": post}

@app.get("/files/*path")
def files(request):
    return {"route": "wildcard", "path": request.path_params["path"]}

@app.get("/files/readme")
def files_readme():
    return "readme"

@app.delete("/users/:uid")
def delete_user(uid):
    return "deleted " + uid

@app.get("/const", const=True)
def const():
    return {"n": next(counter)}

@app.get("/notconst")
def notconst():
    return {"n": next(counter)}

@app.get("trailing/")
def trailing():
    return "trailing"

@app.get("/héllo wörld")
def unicode_path():
    return "unicode"

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


def fresh_ok(server):
    """A normal request on a fresh connection still answers 200."""
    assert httpx.get(server.url + "/", timeout=5).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_method_decorators(client, method):
    r = client.request(method, "/verbs")
    assert r.status_code == 200
    assert r.text == f"{method.lower()} {method}"


def test_get_decorator(client):
    assert client.get("/verbs").text == "get GET"


def test_connect_decorator(server):
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"CONNECT /verbs HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200"), data
    assert data.endswith(b"connect CONNECT")
    fresh_ok(server)


def test_head_route(client):
    r = client.head("/only-head")
    assert r.status_code == 200 and r.headers["x-head"] == "yes" and r.content == b""
    assert r.headers["content-length"] == str(len("ignored body"))
    # a HEAD-only path does not answer GET
    r = client.get("/only-head")
    assert r.status_code == 405 and r.headers["allow"] == "HEAD"


def test_add_route(client):
    assert client.get("/added").text == "added GET"
    assert client.post("/added").text == "added POST"
    assert client.put("/added").text == "added PUT"
    assert client.delete("/added").status_code == 405


def test_static_beats_param(client):
    assert client.get("/users/me").json() == {"route": "static"}
    assert client.get("/users/42").json() == {"route": "param", "params": {"id": "42"}}


def test_two_params_and_coercion(client):
    assert client.get("/users/5/posts/hello").json() == {"id": 5, "post": "hello"}
    assert client.get("/users/x/posts/hello").status_code == 400


def test_param_names_per_method(client):
    assert client.delete("/users/9").text == "deleted 9"


def test_wildcard_tail(client):
    assert client.get("/files/a/b/c.txt").json() == {"route": "wildcard", "path": "a/b/c.txt"}
    assert client.get("/files/one").json() == {"route": "wildcard", "path": "one"}
    assert client.get("/files/readme").text == "readme"


def test_path_params_percent_decoded(client):
    r = client.get("/users/a%20b%2Fc")
    assert r.json()["params"] == {"id": "a b/c"}
    assert client.get("/files/x%20y/z").json()["path"] == "x y/z"


def test_percent_encoded_static_segment_beats_param(client):
    assert client.get("/users/m%65").json() == {"route": "static"}
    assert client.get("/files/r%65adme").text == "readme"
    # a static segment between parameters, percent-encoded
    assert client.get("/users/5/p%6Fsts/x%20y").json() == {"id": 5, "post": "x y"}


def test_unicode_static_path(client):
    assert client.get("/h%C3%A9llo%20w%C3%B6rld").text == "unicode"


def test_trailing_slash(client):
    assert client.get("/trailing").text == "trailing"
    assert client.get("/trailing/").text == "trailing"
    assert client.get("/users/me/").json() == {"route": "static"}


def test_unknown_path_404(client, server):
    r = client.get("/nope/nothing")
    assert r.status_code == 404
    assert r.text == "Not found" and r.headers["content-type"].startswith("text/plain")  # Robyn's body
    assert client.post("/nope").status_code == 404
    fresh_ok(server)


def test_wrong_method_405_with_allow(client):
    r = client.post("/users/me")
    assert r.status_code == 405 and r.text == "Method not allowed"
    assert r.headers["allow"] == "GET, HEAD"
    r = client.patch("/users/3")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    r = client.get("/verbs")  # all nine methods
    assert r.status_code == 200


def test_get_answers_head(client):
    get = client.get("/users/5/posts/p")
    head = client.head("/users/5/posts/p")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_const_route_computed_once(client):
    first = client.get("/const").json()["n"]
    assert client.get("/const").json()["n"] == first
    a = client.get("/notconst").json()["n"]
    b = client.get("/notconst").json()["n"]
    assert b == a + 1
    head = client.head("/const")
    assert head.status_code == 200 and head.content == b""


def test_unknown_method_refused(server):
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"BREW /verbs HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
    assert data.split(b" ")[1] in (b"400", b"405", b"501"), data
    fresh_ok(server)


# -- registration errors (no server needed) --------------------------------------------------

def test_conflicting_registration_raises():
    app = Robyn(__file__)
    app.get("/u/:id")(lambda: "a")
    with pytest.raises(RouteConflict):
        app.get("/u/:name")(lambda: "b")
    with pytest.raises(ValueError):
        app.get("/u/:id/")(lambda: "c")  # same path after normalisation
    app.post("/u/:name")(lambda: "d")  # another method is fine
    app.get("/x")(lambda: 1)
    with pytest.raises(ValueError):
        app.add_route("GET", "x", lambda: 2)


def test_conflict_through_subrouter():
    app = Robyn(__file__)
    app.get("/api/ping")(lambda: "a")
    sub = SubRouter("/api")
    sub.get("/ping")(lambda: "b")
    with pytest.raises(ValueError):
        app.include_router(sub)


def test_bad_endpoints():
    app = Robyn(__file__)
    with pytest.raises(ValueError):
        app.get("")(lambda: 1)
    with pytest.raises(ValueError):
        app.get("/a/*rest/b")(lambda: 1)
    with pytest.raises(ValueError):
        app.add_route("BREW", "/coffee", lambda: 1)
    with pytest.raises(ValueError):
        app.add_route("POST", "/c", lambda: 1, is_const=True)
