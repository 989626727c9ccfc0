"""Issue #2: the public names (reference §1) and the in-process TestClient.

The TestClient tests run the app's real pipeline (``app.served()`` + ``Dispatcher.handle``)
without a socket; everything that needs the wire is tested against a real server elsewhere.
"""

from __future__ import annotations

import importlib

import pytest

import stonechat
from stonechat import Request, Response, Robyn, SubRouter
from stonechat.testing import TestClient, TestResponse

TOP_LEVEL = [
    "Robyn", "SubRouter", "Request", "Response", "Headers", "status_codes", "jsonify", "serve_file",
    "serve_html", "html", "StreamingResponse", "SSEResponse", "SSEMessage", "AuthenticationHandler",
    "JsonBody", "TestClient", "RequestMethod", "RequestBody", "RequestURL", "HttpMethod", "Config",
    "DependencyMap", "Directory", "__version__",
    # names Robyn keeps elsewhere; stonechat also offers them at the top
    "QueryParams", "Identity", "Url", "Cookie", "Cookies", "HTTPException", "FileResponse",
]

SUBMODULES = {
    "stonechat.types": ["Body", "JsonBody", "JSONResponse", "PathParams", "Method", "FormData", "Files",
                        "IPAddress", "RequestMethod", "RequestBody", "RequestURL",
                        "QueryParamValidationError", "Directory"],
    "stonechat.responses": ["FileResponse", "html", "serve_html", "serve_file", "StreamingResponse",
                            "SSEResponse", "SSEMessage"],
    "stonechat.authentication": ["AuthenticationHandler", "TokenGetter", "BearerGetter",
                                 "AuthenticationNotConfiguredError", "Identity"],
    "stonechat.exceptions": ["HTTPException", "WebSocketException"],
    "stonechat.testing": ["TestClient", "TestResponse"],
    "stonechat.robyn": ["Request", "Response", "Headers", "QueryParams", "Url", "Identity", "Cookie", "Cookies",
                        "FunctionInfo", "HttpMethod", "MiddlewareType", "StreamingResponse", "WebSocketConnector",
                        "get_version"],
    "stonechat.events": ["Events"],
    "stonechat.jsonify": ["jsonify"],
    "stonechat.ws": ["WebSocketAdapter", "WebSocketDisconnect", "create_websocket_decorator"],
    "stonechat.dependency_injection": ["DependencyMap"],
}


def test_robyn_compiled_core_names_are_the_framework_objects():
    from stonechat import robyn
    from stonechat.events import Events
    assert robyn.Request is stonechat.Request and robyn.QueryParams is stonechat.QueryParams
    assert robyn.get_version() == stonechat.__version__
    assert Events.STARTUP.value == "startup" and Events.SHUTDOWN.value == "shutdown"
    assert robyn.HttpMethod.POST == "POST" and robyn.MiddlewareType.BEFORE_REQUEST.value == "BEFORE_REQUEST"


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_name_importable(name):
    assert getattr(stonechat, name) is not None


def test_all_lists_only_real_names():
    missing = [n for n in stonechat.__all__ if not hasattr(stonechat, n)]
    assert missing == []


@pytest.mark.parametrize("module,names", sorted(SUBMODULES.items()))
def test_submodule_names(module, names):
    mod = importlib.import_module(module)
    assert [n for n in names if not hasattr(mod, n)] == []


def test_responses_module_reexports_the_same_objects():
    from stonechat import responses
    from stonechat.core import response
    assert responses.serve_file is response.serve_file
    assert responses.StreamingResponse is response.StreamingResponse
    assert responses.SSEMessage("hi", event="e") == "event: e\ndata: hi\n\n"


def test_status_codes_module():
    from stonechat import status_codes as sc
    names = [n for n in dir(sc) if n.startswith("HTTP_")]
    assert len(names) >= 63
    assert sc.HTTP_200_OK == 200 and sc.HTTP_404_NOT_FOUND == 404 and sc.HTTP_418_IM_A_TEAPOT == 418
    assert sc.HTTP_306_RESERVED == 306 and sc.HTTP_511_NETWORK_AUTHENTICATION_REQUIRED == 511
    for n in names:
        assert getattr(sc, n) == int(n.split("_")[1])


def test_http_exception_defaults():
    from stonechat.exceptions import HTTPException
    exc = HTTPException(404)
    assert exc.detail == "Not Found" and str(exc) == "404: Not Found"


def test_bearer_getter():
    from stonechat.authentication import BearerGetter
    req = Request(headers=stonechat.Headers({"Authorization": "Bearer abc"}))
    assert BearerGetter.get_token(req) == "abc"
    assert BearerGetter.get_token(Request()) is None
    BearerGetter.set_token(req, "xyz")
    assert req.headers.get("authorization") == "Bearer xyz"


# -- TestClient ----------------------------------------------------------------------------

def make_app() -> Robyn:
    app = Robyn(__file__)
    calls = {"startup": 0, "shutdown": 0, "const": 0}
    app.calls = calls  # type: ignore[attr-defined]

    @app.startup_handler
    def up():
        calls["startup"] += 1

    @app.shutdown_handler
    async def down():
        calls["shutdown"] += 1

    @app.get("/items/:id")
    async def item(id: int, q: str = "", tags: list[str] | None = None):
        return {"id": id, "q": q, "tags": tags}

    @app.get("/const", const=True)
    def const():
        calls["const"] += 1
        return "cached"

    @app.post("/form")
    def form(request: Request):
        return {"form": request.form_data, "files": {k: v.decode() for k, v in request.files.items()}}

    @app.put("/json")
    def put_json(request: Request):
        return {"got": request.json(), "ct": request.headers.get("content-type")}

    @app.patch("/raw")
    def patch_raw(body):
        return body

    @app.delete("/gone")
    def gone():
        return Response(204, {}, b"")

    @app.options("/opt")
    def opt():
        return Response(200, {"allow": "GET, OPTIONS"}, "")

    @app.before_request("/guarded")
    def guard(request: Request):
        if request.headers.get("x-key") != "k":
            return Response(403, {}, "forbidden")
        return request

    @app.get("/guarded")
    def guarded():
        return "in"

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaput")

    @app.get("/stream")
    def stream():
        def gen():
            yield "a"
            yield b"b"
        return stonechat.StreamingResponse(gen(), media_type="text/plain")

    sub = SubRouter("/sub")

    @sub.get("/hello")
    def hello(global_dependencies):
        return global_dependencies["greeting"]

    app.inject_global(greeting="hi")
    app.include_router(sub)
    return app


def test_testclient_full_pipeline():
    app = make_app()
    with TestClient(app) as client:
        assert app.calls["startup"] == 1 and app.calls["const"] == 1
        r = client.get("/items/7", query_params={"q": "a b", "tags": ["x", "y"]})
        assert isinstance(r, TestResponse) and r.ok
        assert r.json() == {"id": 7, "q": "a b", "tags": ["x", "y"]}
        assert r.headers.get("content-type") == "application/json"
        assert client.get("/items/abc").status_code == 400
        assert client.get("/nope").status_code == 404
        assert client.get("/const").text == "cached" and client.get("/const").text == "cached"
        assert app.calls["const"] == 1

        head = client.head("/items/1")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers.get("content-length")) == len(b'{"id":1,"q":"","tags":null}')

        r = client.post("/form", form_data={"a": "1", "b": "x y"})
        assert r.json() == {"form": {"a": "1", "b": "x y"}, "files": {}}
        r = client.post("/form", form_data={"a": "1"}, files={"up": ("n.txt", b"data")})
        assert r.json() == {"form": {"a": "1"}, "files": {"n.txt": "data"}}

        r = client.put("/json", json_data=[1, {"k": None}])
        assert r.json() == {"got": [1, {"k": None}], "ct": "application/json"}
        assert client.patch("/raw", body="abc").content == b"abc"
        r = client.delete("/gone")
        assert r.status_code == 204 and r.content == b""
        assert client.options("/opt").headers.get("allow") == "GET, OPTIONS"
        assert client.post("/items/1").status_code == 405

        assert client.get("/guarded").status_code == 403
        assert client.get("/guarded", headers={"X-Key": "k"}).text == "in"
        r = client.get("/boom")
        assert r.status_code == 500 and "kaput" not in r.text
        assert client.get("/stream").text == "ab"
        assert client.get("/sub/hello").text == "hi"
    assert app.calls["shutdown"] == 1


def test_testclient_without_context_manager():
    app = make_app()
    client = TestClient(app)
    assert client.get("/const").text == "cached"
    assert client.get("/const").text == "cached"
    assert app.calls["const"] == 1
    # like Robyn's client: no startup/shutdown handlers without ``with``
    assert app.calls["startup"] == 0
    client.close()
    assert app.calls["shutdown"] == 0
    assert TestClient(app).put("/json", json_data={"a": 1}, body="[2]").json()["got"] == [2]


def test_testclient_async_authentication_and_unconfigured():
    from stonechat.authentication import AuthenticationHandler, BearerGetter, Identity

    class AsyncAuth(AuthenticationHandler):
        async def authenticate(self, request):
            token = self.token_getter.get_token(request)
            return Identity(claims={"user": token}) if token else None

    app = Robyn(__file__)

    @app.put("/me", auth_required=True)
    async def me(request: Request):
        return request.identity.claims

    client = TestClient(app)
    r = client.put("/me")
    assert r.status_code == 500  # auth_required without configure_authentication
    client.close()

    app.configure_authentication(AsyncAuth(BearerGetter()))
    client = TestClient(app)
    r = client.put("/me")
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "BearerGetter"
    assert client.put("/me", headers={"Authorization": "Bearer u9"}).json() == {"user": "u9"}
    client.close()
