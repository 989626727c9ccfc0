"""Issue #2, middlewares (reference §8): global and route-scoped before/after hooks on every
method, sync and async, short-circuits, arities, ordering, errors, SubRouter scoping."""

from __future__ import annotations

import httpx
import pytest

APP = r'''
from stonechat import Robyn, Request, Response, SubRouter

app = Robyn(__file__)

@app.before_request()
def global_before(request: Request):
    request.headers.set("x-order", "g-before")
    if request.headers.get("x-block") == "global":
        return Response(451, {"x-blocked": "global"}, "blocked globally")
    return request

@app.after_request()
def global_after(request: Request, response: Response):
    response.headers.set("x-global-after", request.method)
    return response

@app.before_request("/items/:id")
async def scoped_before(request: Request):
    request.headers.set("x-order", request.headers.get("x-order") + ",scoped-before")
    request.headers.set("x-seen-id", request.path_params.get("id", "?"))
    if request.headers.get("x-key") != "s3cret":
        return Response(403, {}, "forbidden")
    return request

@app.before_request("/items/:id")
def second_before(request):
    request.headers.set("x-order", request.headers.get("x-order") + ",second-before")
    return request

@app.after_request("/items/:id")
async def scoped_after(response):
    response.headers.set("x-scoped-after", "yes")
    return response

@app.get("/items/:id")
def get_item(request: Request, id):
    return {"id": id, "order": request.headers.get("x-order"), "seen": request.headers.get("x-seen-id")}

@app.post("/items/:id")
async def post_item(request: Request, id):
    return {"posted": id, "order": request.headers.get("x-order")}

@app.delete("/items/:id")
def delete_item(id):
    return "deleted " + id

@app.get("/plain")
def plain(request: Request):
    return {"order": request.headers.get("x-order")}

@app.before_request("/shortcircuit")
def sc_dict(request):
    return {"short": "dict"}

@app.get("/shortcircuit")
def sc_handler():
    raise AssertionError("must not run")

@app.before_request("/sc-tuple")
def sc_tuple(request):
    return ("teapot", {"x-t": "1"}, 418)

@app.get("/sc-tuple")
def sc_tuple_handler():
    raise AssertionError("must not run")

@app.before_request("/zero")
def zero_args():
    return None

@app.after_request("/zero")
def after_one(response):
    response.status_code = 202
    return response

@app.get("/zero")
def zero():
    return "zero"

@app.before_request("/mw-error")
def mw_error(request):
    raise RuntimeError("middleware broke")

@app.get("/mw-error")
def mw_error_handler():
    return "unreachable"

@app.after_request("/after-bad")
def after_bad(response):
    return "not a response"

@app.get("/after-bad")
def after_bad_handler():
    return "x"

@app.after_request("/after-json")
def after_json(request, response):
    response.headers.set("x-body-len", str(len(response.description)))
    return response

@app.get("/after-json")
def after_json_handler():
    return {"a": [1, 2, 3]}

sub = SubRouter("/sub")

@sub.before_request()
def sub_global(request):
    request.headers.set("x-sub", "1")
    return request

@sub.before_request("/guarded")
def sub_scoped(request):
    return Response(401, {}, "sub says no")

@sub.get("/guarded")
def sub_guarded():
    return "unreachable"

@sub.get("/open")
def sub_open(request):
    return {"sub": request.headers.get("x-sub")}

app.include_router(sub)

@app.get("/raises")
def raises():
    raise RuntimeError("handler broke")

@app.get("/bad-param/:n")
def bad_param(n: int):
    return n

@app.get("/outside")
def outside(request):
    return {"sub": request.headers.get("x-sub")}

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


def test_global_hooks_run_everywhere(client):
    r = client.get("/plain")
    assert r.json() == {"order": "g-before"}
    assert r.headers["x-global-after"] == "GET"
    r = client.get("/does-not-exist")
    assert r.status_code == 404 and r.headers["x-global-after"] == "GET"
    r = client.delete("/plain")  # a path without that method: still a 405 with Allow, hooks ran
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.headers["x-global-after"] == "DELETE"


def test_global_short_circuit(client):
    r = client.get("/plain", headers={"x-block": "global"})
    assert r.status_code == 451 and r.text == "blocked globally"
    assert r.headers["x-blocked"] == "global"
    assert r.headers["x-global-after"] == "GET"  # after hooks still run


def test_scoped_hooks_order_and_params(client):
    r = client.get("/items/7", headers={"x-key": "s3cret"})
    assert r.json() == {"id": "7", "order": "g-before,scoped-before,second-before", "seen": "7"}
    assert r.headers["x-scoped-after"] == "yes" and r.headers["x-global-after"] == "GET"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD"])
def test_scoped_hooks_on_every_method(client, method):
    r = client.request(method, "/items/1")
    assert r.status_code == 403
    assert r.headers["x-scoped-after"] == "yes"
    assert r.headers["x-global-after"] == method
    r = client.request(method, "/items/1", headers={"x-key": "s3cret"})
    assert r.status_code == 200 and r.headers["x-scoped-after"] == "yes"


def test_scoped_post_passes_through(client):
    r = client.post("/items/9", headers={"x-key": "s3cret"})
    assert r.json() == {"posted": "9", "order": "g-before,scoped-before,second-before"}


def test_short_circuit_returns(client):
    r = client.get("/shortcircuit")
    assert r.status_code == 200 and r.json() == {"short": "dict"}
    r = client.get("/sc-tuple")
    assert r.status_code == 418 and r.text == "teapot" and r.headers["x-t"] == "1"


def test_arities_and_writable_status(client):
    r = client.get("/zero")
    assert r.status_code == 202 and r.text == "zero"


def test_middleware_error_500(client, server):
    r = client.get("/mw-error")
    assert r.status_code == 500 and "middleware broke" not in r.text
    assert httpx.get(server.url + "/plain").status_code == 200


def test_after_hooks_run_on_error_answers_too(client):
    """As in Robyn: the plain 500 and a 400 for a bad parameter pass the global after hook."""
    r = client.get("/raises")
    assert r.status_code == 500 and r.headers["x-global-after"] == "GET"
    assert "handler broke" not in r.text
    r = client.get("/bad-param/abc")
    assert r.status_code == 400 and r.headers["x-global-after"] == "GET"
    r = client.get("/mw-error")
    assert r.status_code == 500 and r.headers["x-global-after"] == "GET"


def test_after_hook_bad_return_500(client, server):
    assert client.get("/after-bad").status_code == 500
    assert httpx.get(server.url + "/plain").status_code == 200


def test_after_hook_sees_converted_response(client):
    r = client.get("/after-json")
    assert r.json() == {"a": [1, 2, 3]}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-body-len"] == str(len('{"a":[1,2,3]}'))


def test_subrouter_middlewares_scoped_and_prefixed(client):
    r = client.get("/sub/guarded")
    assert r.status_code == 401 and r.text == "sub says no"
    assert client.get("/sub/open").json() == {"sub": "1"}
    # a SubRouter's global hook stays on that router's routes; its scoped one is prefixed
    assert client.get("/outside").json() == {"sub": None}
    assert client.get("/guarded").status_code == 404
