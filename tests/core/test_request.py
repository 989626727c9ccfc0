"""Issue #2, the Request object (reference §5): method, url, headers, query/path params
(percent-decoded), body bytes, text()/json(), ip_addr, identity, form_data and files."""

from __future__ import annotations

import socket

import httpx
import pytest

from stonechat import Headers, QueryParams

APP = r'''
from stonechat import Robyn, Request

app = Robyn(__file__)

@app.get("/url")
def url(request: Request):
    u = request.url
    return {"scheme": u.scheme, "host": u.host, "path": u.path}

@app.get("/url/:seg")
def url_seg(request: Request):
    return {"path": request.url.path, "seg": request.path_params["seg"]}

@app.get("/headers")
def headers(request: Request):
    h = request.headers
    return {
        "ua": h.get("USER-AGENT"), "multi": h.get_all("x-multi"), "last": h.get("x-multi"),
        "missing": h.get("x-missing", "dflt"), "missing_none": h.get("x-missing"),
        "contains": "X-Multi" in h, "lower_keys": all(k == k.lower() for k in h.keys()),
    }

@app.get("/query")
def query(request: Request):
    qp = request.query_params
    return {"dict": qp.to_dict(), "a": qp.get("a"), "first": qp.get_first("a"),
            "all": qp.get_all("a"), "missing": qp.get("zzz", "d"), "has_b": "b" in qp,
            "empty": qp.empty()}

@app.post("/body")
def body(request: Request):
    return {"type": type(request.body).__name__, "len": len(request.body_bytes),
            "bytes_type": type(request.body_bytes).__name__, "text": request.text(),
            "method": request.method}

@app.post("/json")
def json_(request: Request):
    return {"parsed": request.json()}

@app.post("/badjson")
def badjson(request: Request):
    try:
        request.json()
    except ValueError as exc:
        return {"error": str(exc)[:13]}
    return {"error": None}

@app.get("/ip")
def ip(request: Request):
    return {"ip": request.ip_addr, "identity": request.identity}

@app.post("/form")
def form(request: Request):
    return {"form": request.form_data,
            "files": {k: v.decode("latin-1") for k, v in request.files.items()},
            "by_field": {field: [[u.filename, u.content_type, u.data.decode("latin-1")] for u in uploads]
                         for field, uploads in request.files_by_field.items()}}

@app.before_request("/mutate")
def mutate(request: Request):
    request.headers.set("x-added", "by-hook")
    request.path_params["extra"] = "1"
    return request

@app.get("/mutate")
def mutated(request: Request):
    return {"added": request.headers.get("x-added"), "pp": request.path_params}

app.add_request_header("x-app-default", "from-app")
app.set_response_header("x-resp-default", "resp")

@app.get("/app-header")
def app_header(request: Request):
    return {"v": request.headers.get_all("x-app-default"), "resp": request.headers.get_all("x-resp-default")}

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


def test_url(client, server):
    assert client.get("/url").json() == {"scheme": "http", "host": f"127.0.0.1:{server.port}",
                                         "path": "/url"}
    assert client.get("/url/", headers={"host": "example.com:81"}).json() == {
        "scheme": "http", "host": "example.com:81", "path": "/url"}


def test_url_path_decoded(client):
    assert client.get("/url/a%20b").json() == {"path": "/url/a b", "seg": "a b"}
    assert client.get("/url/%E2%82%AC").json()["seg"] == "\u20ac"


def test_headers_case_insensitive_multi(client):
    r = client.get("/headers", headers=[("User-Agent", "ua/1"), ("X-Multi", "1"), ("x-multi", "2")])
    assert r.json() == {"ua": "ua/1", "multi": ["1", "2"], "last": "2", "missing": "dflt",
                        "missing_none": None, "contains": True, "lower_keys": True}


def test_query_params_decoded(client):
    r = client.get("/query?a=1&a=x+y&b=%26%3D%20&c")
    assert r.json() == {"dict": {"a": ["1", "x y"], "b": ["&= "], "c": [""]}, "a": "x y",
                        "first": "1", "all": ["1", "x y"], "missing": "d", "has_b": True,
                        "empty": False}
    r = client.get("/query?%C3%A9t%C3%A9=%E2%82%AC")
    assert r.json()["dict"] == {"\u00e9t\u00e9": ["\u20ac"]}
    assert client.get("/query").json()["empty"] is True


def test_body_bytes_and_text(client):
    data = "héllo".encode()
    # Robyn's rule, which real apps rely on: text when the body is UTF-8, bytes otherwise
    r = client.post("/body", content=data)
    assert r.json() == {"type": "str", "len": len(data), "bytes_type": "bytes", "text": "héllo", "method": "POST"}
    r = client.post("/body", content=b"\xff\x00\xfe")
    assert r.json()["type"] == "bytes" and r.json()["len"] == 3 and r.json()["bytes_type"] == "bytes"
    assert client.post("/body", content=b"").json()["type"] == "str"


def test_body_chunked(client):
    def gen():
        yield b"ab"
        yield b"cd"
    r = client.post("/body", content=gen())
    assert r.json()["text"] == "abcd"


def test_json_helper(client):
    assert client.post("/json", json=[1, "a", {"b": None}]).json() == {"parsed": [1, "a", {"b": None}]}
    assert client.post("/json", content=b'"str"').json() == {"parsed": "str"}
    assert client.post("/badjson", content=b"{x").json() == {"error": "Invalid JSON:"}


def test_ip_and_identity(client):
    assert client.get("/ip").json() == {"ip": "127.0.0.1", "identity": None}


def test_urlencoded_form(client):
    r = client.post("/form", data={"a": "1", "b": "x y&z"})
    assert r.json() == {"form": {"a": "1", "b": "x y&z"}, "files": {}, "by_field": {}}


def test_multipart_form(client):
    # Robyn keys request.files by file name (upload handlers look files up that way) ...
    r = client.post("/form", data={"field": "välue"},
                    files={"up1": ("a.txt", b"one"), "up2": ("b.bin", b"\x00two", "application/x-thing")})
    assert r.json()["form"] == {"field": "välue"}
    assert r.json()["files"] == {"a.txt": "one", "b.bin": "\x00two"}
    # ... and files_by_field keeps every file, even two with the same name
    r = client.post("/form", files={"up1": ("same.txt", b"one"), "up2": ("same.txt", b"two")})
    assert r.json()["files"] == {"same.txt": "two"}
    assert r.json()["by_field"] == {"up1": [["same.txt", "text/plain", "one"]],
                                    "up2": [["same.txt", "text/plain", "two"]]}


def test_bad_multipart_400(client, server):
    r = client.post("/form", content=b"garbage",
                    headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 400
    r = client.post("/form", content=b"x", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    assert httpx.get(server.url + "/url").status_code == 200


def test_before_hook_mutations_persist(client):
    assert client.get("/mutate").json() == {"added": "by-hook", "pp": {"extra": "1"}}


def test_app_request_header(client):
    assert client.get("/app-header").json() == {"v": ["from-app"], "resp": ["resp"]}
    r = client.get("/app-header", headers={"x-app-default": "client"})
    assert r.json()["v"] == ["client", "from-app"]
    # the app's default response headers show in request.headers too (Robyn does this and its
    # own suite relies on it), but never over a header the client sent
    r = client.get("/app-header", headers={"x-resp-default": "client"})
    assert r.json()["resp"] == ["client"]


def test_raw_http10_request(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /url HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b'"path":"/url"' in data
    assert f'"host":"127.0.0.1:{server.port}"'.encode() in data


# -- the Request parts as objects ------------------------------------------------------------

def test_headers_object():
    h = Headers({"Content-Type": "a", "X-L": ["1", "2"]})
    assert h.get("content-type") == "a" and h["CONTENT-TYPE"] == "a"
    assert h.get_all("x-l") == ["1", "2"] and h.get("x-l") == "2"
    assert h.get("nope", "d") == "d" and h.get("nope") is None
    h.set("X-L", "3")
    assert h.get_all("x-l") == ["3"]
    h.append("x-l", "4")
    assert h.to_dict()["x-l"] == "3, 4"
    assert "X-l" in h and h.contains("x-L") and not h.is_empty()
    assert Headers(h) == h
    h.remove("x-l")
    assert "x-l" not in h


def test_query_params_object():
    qp = QueryParams()
    qp.set("a", "1")
    qp.set("a", "2")
    assert qp.get("a") == "2" and qp.get("a", "d") == "2" and qp.get("b") is None
    assert qp.get_first("a") == "1" and qp.get_all("a") == ["1", "2"] and qp.get_all("b") is None
    assert qp.multi_items() == [("a", "1"), ("a", "2")] and qp.items() == [("a", "2")]
    other = QueryParams({"b": ["3", "4"]})
    qp.extend(other)
    assert qp.to_dict() == {"a": ["1", "2"], "b": ["3", "4"]} and qp.contains("b")
