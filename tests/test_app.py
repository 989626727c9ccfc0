"""Registration-time behaviour that needs no server: SubRouter prefixes in every form Robyn
apps use, and route conflicts raised at once."""

import pytest

from stonechat import Robyn, SubRouter
from stonechat.core.routing import RouteConflict


@pytest.mark.parametrize("args, kwargs, expected", [
    (("/users",), {}, "/users"),
    ((), {"prefix": "/users"}, "/users"),
    (("/srv/app/routes.py", "/users"), {}, "/users"),        # legacy: SubRouter(__file__, "/x")
    (("/srv/app/routes.py",), {"prefix": "/users/"}, "/users"),  # legacy with keyword
    (("routes",), {"prefix": "/users"}, "/users"),           # legacy: SubRouter(__name__, prefix=)
    (("/srv/app/routes.py",), {}, ""),                       # a file path alone is not a prefix
    (("/",), {}, ""),
])
def test_subrouter_prefix_forms(args, kwargs, expected):
    assert SubRouter(*args, **kwargs).prefix == expected


def test_conflicting_routes_raise_at_registration():
    app = Robyn(__file__)

    @app.get("/u/:id")
    def by_id(id):
        return id

    with pytest.raises(RouteConflict):
        @app.get("/u/:name")
        def by_name(name):
            return name

    @app.delete("/u/:name")  # another method at the same shape is fine
    def delete(name):
        return name


def test_websocket_subprotocols_are_checked_at_registration():
    from stonechat import WebSocket
    app = Robyn(__file__)

    async def handler(ws):
        pass

    with pytest.raises(TypeError, match="list of names"):
        app.websocket("/a", subprotocols="chat")(handler)
    with pytest.raises(ValueError, match="'bad name' is not a valid token"):
        app.websocket("/b", subprotocols=["ok", "bad name"])(handler)
    with pytest.raises(ValueError, match="'' is not a valid token"):
        WebSocket(app, "/c", subprotocols=[""])
    app.websocket("/d", subprotocols=("v2.chat", "graphql-transport-ws"))(handler)
    assert app.web_socket_router["/d"].subprotocols == ("v2.chat", "graphql-transport-ws")


def test_registration_makes_frozen_records_and_building_never_changes_them():
    import dataclasses

    from stonechat.core.registry import RouteSpec, WebSocketSpec, WebSocketStyle
    from stonechat.testing import TestClient
    app = Robyn(__file__)

    @app.get("/items/:id", openapi_tags=["items"], auth_required=False)
    def item(id: int):
        return {"id": id}

    async def chat(ws):
        pass
    app.websocket("/chat")(chat)

    spec = app.route_specs[0]
    assert isinstance(spec, RouteSpec) and spec.endpoint == "/items/:id" and spec.openapi_tags == ("items",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.endpoint = "/other"  # type: ignore[misc]
    ws_spec = app.web_socket_router["/chat"]
    assert isinstance(ws_spec, WebSocketSpec) and ws_spec.style is WebSocketStyle.RECEIVE_LOOP

    @chat.on_close
    def closed(ws):
        pass
    assert app.web_socket_router["/chat"].on_close is closed and ws_spec.on_close is None  # replaced

    # served() twice: two independent builds from the same records
    first, second = app.served(), app.served()
    assert first.dispatcher.routes[0] is not second.dispatcher.routes[0]
    assert app.route_specs == [spec]
    assert TestClient(app).get("/items/7").json() == {"id": 7}
    assert TestClient(app).get("/items/8").json() == {"id": 8}


def test_one_subrouter_included_in_two_apps():
    from stonechat.testing import TestClient
    shared = SubRouter("/api")

    @shared.get("/ping")
    def ping():
        return "pong"

    @shared.before_request()
    def mark(request):
        request.headers.set("x-seen", "yes")
        return request

    @shared.get("/seen")
    def seen(request):
        return request.headers.get("x-seen", "no")

    apps = [Robyn(__file__), Robyn(__file__)]
    for a in apps:
        a.include_router(shared)

    @apps[0].get("/only-first")
    def only_first():
        return "first"

    for a in apps:
        client = TestClient(a)
        assert client.get("/api/ping").text == "pong"
        assert client.get("/api/seen").text == "yes"
    assert TestClient(apps[0]).get("/only-first").status_code == 200
    assert TestClient(apps[1]).get("/only-first").status_code == 404
    assert shared.route_specs[0].endpoint == "/api/ping"  # nothing was rewritten by including it


def test_subrouter_with_its_own_authentication_handler():
    from stonechat import AuthenticationHandler, Identity
    from stonechat.authentication import BearerGetter
    from stonechat.testing import TestClient

    class RouterAuth(AuthenticationHandler):
        def authenticate(self, request):
            token = self.token_getter.get_token(request)
            return Identity(claims={"who": "router"}) if token == "router-token" else None

    app = Robyn(__file__)
    router = SubRouter("/admin")
    router.configure_authentication(RouterAuth(token_getter=BearerGetter()))

    @router.get("/me", auth_required=True)
    def me(request):
        return request.identity.claims["who"]

    app.include_router(router)
    client = TestClient(app)
    assert client.get("/admin/me").status_code == 401
    assert client.get("/admin/me", headers={"Authorization": "Bearer router-token"}).text == "router"


def test_a_conflict_with_an_included_router_is_refused_when_including():
    app = Robyn(__file__)
    router = SubRouter("/api")

    @app.get("/api/x")
    def app_x():
        return "app"

    @router.get("/x")
    def router_x():
        return "router"

    with pytest.raises(RouteConflict):
        app.include_router(router)


def test_an_empty_path_on_a_subrouter_is_its_prefix_and_blank_on_the_app_is_refused():
    from stonechat.testing import TestClient
    app = Robyn(__file__)
    router = SubRouter("/items")

    @router.post("")
    def create():
        return "created"

    @router.get("/")
    def listing():
        return "list"

    app.include_router(router)
    client = TestClient(app)
    assert client.post("/items").text == "created" and client.get("/items").text == "list"
    with pytest.raises(ValueError, match="blank"):
        app.get("")(listing)


def test_returned_query_params_are_json_and_response_status_code_survives_a_class_assignment():
    from stonechat import QueryParams, Response
    from stonechat.testing import TestClient
    app = Robyn(__file__)

    @app.get("/qp")
    def qp(query_params: QueryParams):
        return query_params

    @app.get("/made")
    def made():
        return Response(201, {}, "made")

    saved = Response.__dict__.get("status_code")
    Response.status_code = 200  # some Robyn apps do this; instances must still work
    try:
        client = TestClient(app)
        r = client.get("/qp?a=1&a=2&b=x")
        assert r.headers.get("content-type") == "application/json"
        assert r.json() == {"a": ["1", "2"], "b": ["x"]}
        assert client.get("/made").status_code == 201
    finally:
        if saved is None:
            del Response.status_code
        else:
            Response.status_code = saved


def test_content_disposition_shapes():
    from stonechat.core.response import content_disposition
    assert content_disposition("test.txt") == "attachment; filename=test.txt"
    assert content_disposition("my report.pdf") == 'attachment; filename="my report.pdf"'
    assert content_disposition('a"b.txt') == 'attachment; filename="a\\"b.txt"'
    assert content_disposition("résumé.pdf") == (
        "attachment; filename=\"r?sum?.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")


def test_event_handlers_view_as_in_robyn():
    from stonechat import Events
    app = Robyn(__file__)

    @app.startup_handler
    def first():
        pass

    @app.startup_handler
    async def second():
        pass

    @app.shutdown_handler
    def bye():
        pass

    info = app.event_handlers[Events.STARTUP]
    assert info.handler is second and info.is_async is True and info.number_of_params == 0
    assert app.event_handlers[Events.SHUTDOWN].handler is bye and app.event_handlers[Events.SHUTDOWN].is_async is False
    assert app.lifecycle.startup_handlers == [first, second]  # all of them still run


def test_blocking_warning_off_at_zero_and_on_past_the_threshold(caplog):
    import logging
    import time as _time

    from stonechat.server.interface import HTTPRequest
    from stonechat.server.settings import ServerSettings
    app = Robyn(__file__)

    @app.get("/slow")
    def slow():
        _time.sleep(0.02)
        return "done"

    def hit(settings):
        raw = HTTPRequest()
        raw.path = raw.target = b"/slow"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stonechat"):
            assert app.served(settings).handle(raw).body == b"done"
        return [r.message for r in caplog.records if "blocked the event loop" in r.message]

    assert hit(ServerSettings(blocking_warn_ms=0)) == []
    assert len(hit(ServerSettings(blocking_warn_ms=5))) == 1
