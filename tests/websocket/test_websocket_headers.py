"""``ws.headers`` and ``ws.request``: the handshake request in both WebSocket API styles
(Robyn has no way to read a WebSocket's request headers, its issue #1446). Real server,
``websockets`` client sending its own headers."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

APP = r'''
from stonechat import AuthenticationHandler, Identity, Robyn, WebSocket
from stonechat.authentication import BearerGetter

app = Robyn(__file__)

class Auth(AuthenticationHandler):
    def authenticate(self, request):
        if request.headers.get("authorization") == "Bearer s3cret":
            return Identity(claims={"user": "ann"})
        return None

app.configure_authentication(Auth(token_getter=BearerGetter()))

def describe(ws):
    r = ws.request
    return {
        "x_trace": ws.headers.get("x-trace"),
        "same_headers": r.headers.get("x-trace") == ws.headers.get("x-trace"),
        "user_agent": ws.headers.get("user-agent"),
        "query": r.query_params.get("q"),
        "path": r.path_params,
        "ip": r.ip_addr,
        "identity": r.identity.claims if r.identity else None,
    }

@app.websocket("/loop/:room")
async def loop(ws):
    await ws.send_text(__import__("json").dumps(describe(ws)))

@loop.on_connect
def loop_connect(ws):
    # the connect handler sees them too, before the upgrade
    if ws.headers.get("x-refuse"):
        from stonechat import Response
        return Response(403, {}, "refused by header")
    return None

@app.websocket("/private", auth_required=True)
async def private(ws):
    await ws.send_text(__import__("json").dumps(describe(ws)))

cb = WebSocket(app, "/cb/:room")

@cb.on("connect")
def cb_connect(ws):
    return __import__("json").dumps(describe(ws))

@cb.on("message")
def cb_message(ws, msg):
    return "trace=" + str(ws.headers.get("x-trace"))

app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP, name="ws_headers.py")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def first_message(url: str, headers: dict) -> dict:
    async with websockets.connect(url, additional_headers=headers) as c:
        return json.loads(await c.recv())


def test_receive_loop_sees_custom_header_and_the_handshake_request(server):
    info = run(first_message(server.ws_url + "/loop/blue?q=42", {"X-Trace": "abc-123"}))
    assert info["x_trace"] == "abc-123"
    assert info["same_headers"] is True
    assert info["user_agent"] and "websockets" in info["user_agent"].lower()
    assert info["query"] == "42"
    assert info["path"] == {"room": "blue"}
    assert info["ip"] == "127.0.0.1"
    assert info["identity"] is None


def test_connect_handler_reads_headers_before_the_upgrade(server):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with websockets.connect(server.ws_url + "/loop/x", additional_headers={"X-Refuse": "1"}):
                pass
        return info.value.response.status_code
    assert run(go()) == 403


def test_identity_on_the_handshake_request(server):
    info = run(first_message(server.ws_url + "/private",
                             {"Authorization": "Bearer s3cret", "X-Trace": "t2"}))
    assert info["identity"] == {"user": "ann"}
    assert info["x_trace"] == "t2"


def test_callback_style_sees_headers_in_connect_and_message(server):
    async def go():
        async with websockets.connect(server.ws_url + "/cb/red?q=7", additional_headers={"X-Trace": "cb-9"}) as c:
            info = json.loads(await c.recv())
            await c.send("hi")
            return info, await c.recv()
    info, reply = run(go())
    assert info["x_trace"] == "cb-9"
    assert info["path"] == {"room": "red"} and info["query"] == "7"
    assert reply == "trace=cb-9"
