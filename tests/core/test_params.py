"""Issue #2, handler parameters (reference §4): sync/async handlers, injection by annotation and
by reserved name, path and query params with coercion, JsonBody, DI."""

from __future__ import annotations

import pytest

APP = r'''
import enum, uuid
from typing import List, Optional, TypedDict
from stonechat import Robyn, Request, Headers, QueryParams, Url, JsonBody, SubRouter
from stonechat.types import Body, PathParams, Method, FormData, IPAddress

app = Robyn(__file__)

class Color(enum.Enum):
    red = "red"
    blue = "blue"

class Item(JsonBody):
    name: str

class Point(TypedDict):
    x: int

@app.get("/none")
def none():
    return "no params"

@app.get("/sync/:id")
def sync_handler(id: int, q: str = "dflt"):
    return {"id": id, "q": q, "kind": "sync"}

@app.get("/async/:id")
async def async_handler(id: int, q: str = "dflt"):
    return {"id": id, "q": q, "kind": "async"}

@app.get("/types")
def types(i: int, f: float, b: bool, s: str, o: Optional[int] = None, l: List[int] = None,
          c: Color = Color.red, u: Optional[uuid.UUID] = None, plain="p"):
    return {"i": i, "f": f, "b": b, "s": s, "o": o, "l": l, "c": c.value,
            "u": str(u) if u else None, "plain": plain}

@app.get("/bool")
def boolean(flag: bool):
    return {"flag": flag}

@app.get("/optional")
def optional(o: Optional[float] = None, lst: list[str] | None = None, pipe: int | None = None):
    return {"o": o, "lst": lst, "pipe": pipe}

@app.get("/required")
def required(must):
    return must

@app.get("/by-name/:pid")
def by_name(request, query_params, headers, path_params, body, method, url, ip_addr):
    return {
        "req": isinstance(request, Request), "qp": query_params.get("a"),
        "hdr": headers.get("x-h"), "pp": path_params, "body": body, "method": method,
        "path": url.path, "ip": ip_addr,
    }

@app.post("/by-annotation/:pid")
async def by_annotation(r: Request, qp: QueryParams, h: Headers, pp: PathParams, raw: Body,
                        m: Method, u: Url, form: FormData, ip: IPAddress):
    return {"req": isinstance(r, Request), "qp": qp.get("a"), "hdr": h.get("x-h"), "pp": pp,
            "body": raw, "method": m, "path": u.path, "form": form, "ip": ip}

@app.post("/req-alias")
def req_alias(req):
    return req.method

@app.post("/r-alias")
def r_alias(r):
    return r.method

@app.post("/json")
def json_body(item: Item):
    return {"type": type(item).__name__, "name": item["name"]}

@app.post("/typed")
def typed(p: Point):
    return {"x": p["x"]}

app.inject_global(db="the-db")
app.inject(cache="the-cache")

@app.get("/di")
def di(global_dependencies, router_dependencies):
    return {"g": global_dependencies.get("db"), "r": router_dependencies.get("cache"),
            "late": global_dependencies.get("late")}

@app.get("/di-only-global")
def di_only(global_dependencies):
    return global_dependencies["db"]

sub = SubRouter("/sub")
sub.inject(sub_only="sub-value")

@sub.get("/di")
def sub_di(global_dependencies, router_dependencies):
    return {"g": global_dependencies.get("db"), "r": router_dependencies.get("sub_only"),
            "late": global_dependencies.get("late")}

app.include_router(sub)
app.inject_global(late="late-value")

import functools

def needs_header(fn):
    """A decorator of the kind real Robyn apps put on handlers: it reads its values by keyword."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs["request"].headers.get("x-key") != "k":
            return "refused by the decorator"
        return fn(*args, **kwargs)
    return wrapper

@app.get("/decorated/:id")
@needs_header
def decorated(request, id: int):
    return {"id": id}

@app.get("/positional-only/:id")
def positional_only(id: int, /, q: str = ""):
    return {"id": id, "q": q}

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


def test_no_params(client):
    assert client.get("/none").text == "no params"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sync_and_async(client, kind):
    assert client.get(f"/{kind}/3?q=x").json() == {"id": 3, "q": "x", "kind": kind}
    assert client.get(f"/{kind}/4").json() == {"id": 4, "q": "dflt", "kind": kind}
    r = client.get(f"/{kind}/nope")
    assert r.status_code == 400
    assert r.text.strip() == "Invalid value 'nope' for parameter 'id': expected int"


def test_coercion(client):
    r = client.get("/types", params=[("i", "-5"), ("f", "2.5"), ("b", "yes"), ("s", "a b"),
                                     ("o", "7"), ("l", "1"), ("l", "2"), ("c", "blue"),
                                     ("u", "12345678-1234-5678-1234-567812345678")])
    assert r.json() == {"i": -5, "f": 2.5, "b": True, "s": "a b", "o": 7, "l": [1, 2], "c": "blue",
                        "u": "12345678-1234-5678-1234-567812345678", "plain": "p"}
    r = client.get("/types", params={"i": "1", "f": "1", "b": "off", "s": ""})
    assert r.json() == {"i": 1, "f": 1.0, "b": False, "s": "", "o": None, "l": None, "c": "red",
                        "u": None, "plain": "p"}


@pytest.mark.parametrize("value,expected", [
    ("true", True), ("TRUE", True), ("1", True), ("on", True), ("Yes", True),
    ("false", False), ("0", False), ("no", False), ("OFF", False), ("", False),
])
def test_bool_values(client, value, expected):
    assert client.get("/bool", params={"flag": value}).json() == {"flag": expected}


@pytest.mark.parametrize("query,message", [
    ("i=x&f=1&b=1&s=", "Invalid value 'x' for parameter 'i': expected int"),
    ("i=1&f=zz&b=1&s=", "Invalid value 'zz' for parameter 'f': expected float"),
    ("i=1&f=1&b=maybe&s=", "Invalid value 'maybe' for parameter 'b': expected bool"),
    ("i=1&f=1&b=1&s=&c=green", "Invalid value 'green' for parameter 'c'"),
    ("i=1&f=1&b=1&s=&l=1&l=x", "Invalid value 'x' for parameter 'l': expected int"),
    ("f=1&b=1&s=", "Missing required parameter: 'i'"),
])
def test_bad_params_400(client, query, message):
    r = client.get("/types?" + query)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert message in r.text


def test_optional(client):
    assert client.get("/optional").json() == {"o": None, "lst": None, "pipe": None}
    r = client.get("/optional?o=1.5&lst=a&lst=b&pipe=3")
    assert r.json() == {"o": 1.5, "lst": ["a", "b"], "pipe": 3}
    assert client.get("/optional?pipe=x").status_code == 400


def test_missing_required_unknown_name(client):
    r = client.get("/required")
    assert r.status_code == 400 and "Missing required parameter: 'must'" in r.text
    assert client.get("/required?must=here").text == "here"


def test_last_query_value_wins(client):
    assert client.get("/required?must=a&must=b").text == "b"


def test_reserved_names(client):
    r = client.get("/by-name/p1?a=1", headers={"X-H": "hv"}, )
    body = r.json()
    assert body == {"req": True, "qp": "1", "hdr": "hv", "pp": {"pid": "p1"}, "body": "",
                    "method": "GET", "path": "/by-name/p1", "ip": "127.0.0.1"}


def test_by_annotation(client):
    r = client.post("/by-annotation/p2?a=2", headers={"x-h": "v"}, data={"f": "1 2"})
    assert r.json() == {"req": True, "qp": "2", "hdr": "v", "pp": {"pid": "p2"}, "body": "f=1+2",
                        "method": "POST", "path": "/by-annotation/p2", "form": {"f": "1 2"},
                        "ip": "127.0.0.1"}


def test_request_aliases(client):
    assert client.post("/req-alias").text == "POST"
    assert client.post("/r-alias").text == "POST"


def test_json_body(client):
    r = client.post("/json", json={"name": "n1"})
    assert r.json() == {"type": "dict", "name": "n1"}
    r = client.post("/json", content=b"{not json")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"].startswith("Invalid JSON body:")
    assert client.post("/typed", json={"x": 3}).json() == {"x": 3}
    assert client.post("/typed", content=b"[").status_code == 400


def test_a_decorator_reads_injected_values_by_keyword(client):
    assert client.get("/decorated/5", headers={"x-key": "k"}).json() == {"id": 5}
    assert client.get("/decorated/5").text == "refused by the decorator"


def test_positional_only_parameters(client):
    assert client.get("/positional-only/3?q=x").json() == {"id": 3, "q": "x"}


def test_dependency_injection(client):
    assert client.get("/di").json() == {"g": "the-db", "r": "the-cache", "late": "late-value"}
    assert client.get("/di-only-global").text == "the-db"


def test_subrouter_di(client):
    assert client.get("/sub/di").json() == {"g": "the-db", "r": "sub-value", "late": "late-value"}


def test_returns_coroutine_is_true_only_for_code_that_makes_a_native_coroutine():
    # Dispatch answers an async handler with its own coroutine only when calling it surely
    # makes one (the server steps it with ``yield from``); anything else takes the awaiting path.
    import asyncio
    import functools as ft
    from stonechat.core.params import returns_coroutine

    async def native(x): return x

    def plain(x): return x

    def gives_a_future(x): return asyncio.get_event_loop().create_future()

    class Caller:
        async def __call__(self, x): return x

        async def method(self, x): return x

    class SyncCaller:
        def __call__(self, x): return x

    assert returns_coroutine(native)
    assert returns_coroutine(ft.partial(native, 1))
    assert returns_coroutine(ft.partial(ft.partial(native), 1))
    assert returns_coroutine(Caller())
    assert returns_coroutine(Caller().method)
    assert not returns_coroutine(plain)
    assert not returns_coroutine(gives_a_future)
    assert not returns_coroutine(SyncCaller())
    assert not returns_coroutine(ft.partial(plain, 1))
