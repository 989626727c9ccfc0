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
