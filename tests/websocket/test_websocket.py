"""WebSockets end to end: a real server in a subprocess, real clients (the ``websockets`` client
library; raw sockets where a client must misbehave). Covers issue #4: both API styles, close
with code and reason, refusing handshakes, params/DI/auth, broadcast and the registry.
Protocol rules and limits are in test_websocket_protocol.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import ServerProcess, free_port
from wsraw import RawWS

APP = r'''
import asyncio
from stonechat import (AuthenticationHandler, HTTPException, Identity, Response, Robyn, SubRouter,
                       WebSocket, WebSocketDisconnect)
from stonechat.authentication import BearerGetter

app = Robyn(__file__)
app.inject_global(GREETING="hello")
events = []

@app.get("/events")
def get_events():
    return {"events": events}

@app.get("/clients")
def clients():
    return {path: len(ep.clients) for path, ep in app.websocket_hub.endpoints.items()}

@app.websocket("/echo")
async def echo(ws):
    try:
        while True:
            await ws.send(await ws.receive())
    except WebSocketDisconnect as exc:
        events.append(["echo-disconnect", exc.code, exc.reason])

@echo.on_close
def echo_closed(ws):
    events.append(["echo-close", ws.close_code, ws.close_reason, ws.closed_by])

# Bug report 1: a message handler closes with 1008 "Session expired".
@app.websocket("/session")
async def session(ws):
    while True:
        msg = await ws.receive_text()
        if msg == "expire":
            await ws.close(1008, "Session expired")
            try:
                await ws.send_text("after close")
            except WebSocketDisconnect as exc:
                events.append(["send-after-close", str(exc)])
            ws.close(1000)  # a second close does nothing
            return
        await ws.send_text("ok:" + msg)

# Bug report 2 (callback API): the connect handler rejects a bad token with 1008.
chat = WebSocket(app, "/chat")

@chat.on("connect")
def chat_connect(ws):
    if ws.query_params.get("token") != "good":
        ws.close(1008, "Invalid authentication")
        return None
    return "welcome"

@chat.on("message")
def chat_message(ws, msg):
    if msg == "bye":
        ws.close(4000, "see you")
        return None
    if msg == "json":
        return {"kind": "json"}  # anything but str/bytes goes out as JSON text
    if msg == "later":
        return _later(msg)  # a sync handler may hand back an awaitable; its result is sent
    return "echo " + msg

async def _later(msg):
    await asyncio.sleep(0)
    return "later " + msg

@chat.on("close")
async def chat_close(ws):
    events.append(["chat-close", ws.close_code, ws.close_reason])

# Callback API, async handlers, binary, send_to.
async_chat = WebSocket(app, "/achat")

@async_chat.on("message")
async def achat_message(ws, msg):
    if isinstance(msg, bytes):
        return msg[::-1]
    if msg.startswith("to:"):
        _, target, text = msg.split(":", 2)
        ok = await ws.async_send_to(target, text)
        return f"sent={ok}"
    if msg == "id":
        return ws.id
    await ws.async_broadcast("all:" + msg)
    return None

# Refusing before the upgrade with an HTTP status.
@app.websocket("/guarded")
async def guarded(ws):
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        pass

@guarded.on_connect
async def guarded_connect(ws, token: str = ""):
    if token == "teapot":
        return Response(418, {"x-why": "teapot"}, "no")
    if token != "good":
        raise HTTPException(403, "Forbidden")
    await ws.send_text("queued before 101")
    return "hi"

# Path params, query params, DI.
@app.websocket("/room/:room")
async def room(ws, room: str, nick: str = "anon", global_dependencies=None):
    await ws.send_json({"room": room, "nick": nick, "greeting": global_dependencies["GREETING"],
                        "path_params": ws.path_params, "q": ws.query_params.get("nick")})
    try:
        while True:
            msg = await ws.receive_text()
            if msg == "crash":
                raise RuntimeError("boom")
            await ws.broadcast(f"{room}:{msg}")
    except WebSocketDisconnect:
        pass

@app.websocket("/needs")
async def needs(ws, count: int):
    await ws.send_text(f"count={count}")

class Auth(AuthenticationHandler):
    def authenticate(self, request):
        if request.headers.get("authorization") == "Bearer s3cret":
            return Identity(claims={"user": "ann"})
        return None

app.configure_authentication(Auth(token_getter=BearerGetter()))

@app.websocket("/private", auth_required=True)
async def private(ws):
    await ws.send_text("user=" + ws.identity.claims["user"])
    try:
        await ws.receive()
    except WebSocketDisconnect:
        pass

@app.websocket("/badclose")
async def badclose(ws):
    results = []
    for code, reason in [(999, ""), (1004, ""), (1005, ""), (1006, ""), (1015, ""), (2999, ""),
                         (5000, ""), ("1000", ""), (1000, "x" * 124), (1000, "é" * 62)]:
        try:
            ws.close(code, reason)
            results.append("accepted")
        except ValueError:
            results.append("ValueError")
    await ws.send_json(results)
    await ws.close(4999, "é" * 61)  # 122 bytes: allowed

# Subprotocol negotiation: both styles.
@app.websocket("/proto", subprotocols=["v2.chat", "v1.chat"])
async def proto(ws):
    await ws.send_text(f"subprotocol={ws.subprotocol}")

@proto.on_connect
def proto_connect(ws):
    if ws.query_params.get("strict") and ws.subprotocol is None:
        return Response(400, {}, "no common subprotocol")
    return None

proto_cb = WebSocket(app, "/proto-cb", subprotocols=["graphql-transport-ws"])

@proto_cb.on("connect")
def proto_cb_connect(ws):
    return f"subprotocol={ws.subprotocol}"

api = SubRouter(__file__, "/api")

@api.websocket("/sub")
async def sub(ws):
    await ws.send_text("from subrouter")

app.include_router(api)

@app.get("/plain")
def plain():
    return "http still works"

app.start()
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wsapp")
    path = tmp / "app.py"
    path.write_text(APP)
    proc = ServerProcess(path, free_port(), [], {}, tmp / "server.log", new_session=True)
    proc.wait_ready()
    yield proc
    proc.kill()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def refusal(url: str, **kwargs):
    """Connect where the handshake must be refused; return the HTTP response the server sent."""
    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url, **kwargs):
                pass
        return info.value.response
    return run(go())


def events(server) -> list:
    return httpx.get(server.url + "/events").json()["events"]


def wait_for_event(server, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(server) if predicate(e)]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no matching event in {events(server)}\n{server.output()[-3000:]}")


def clients(server) -> dict:
    return httpx.get(server.url + "/clients").json()


# -- receive-loop API ----------------------------------------------------------------------------

def test_echo_text_and_binary(server):
    async def go():
        async with websockets.connect(server.ws_url + "/echo") as c:
            await c.send("héllo")
            assert await c.recv() == "héllo"
            await c.send(b"\x00\xffbin")
            assert await c.recv() == b"\x00\xffbin"
            big = "z" * 200_000
            await c.send(big)
            assert await c.recv() == big
            await c.send(["frag", "mented ", "text"])  # fragmented message
            assert await c.recv() == "fragmented text"
    run(go())


def test_peer_close_code_reaches_disconnect_and_close_handler(server):
    async def go():
        async with websockets.connect(server.ws_url + "/echo") as c:
            await c.send("x")
            await c.recv()
            await c.close(4321, "client says bye")
    run(go())
    wait_for_event(server, lambda e: e == ["echo-disconnect", 4321, "client says bye"])
    wait_for_event(server, lambda e: e == ["echo-close", 4321, "client says bye", "client"])


def test_abrupt_disconnect_is_1006(server):
    ws = RawWS(server.port, "/echo")
    ws.send_text("hi")
    assert ws.recv_frame()[1] == b"hi"
    ws.abort()
    wait_for_event(server, lambda e: e[:2] == ["echo-close", 1006])


def test_message_handler_closes_1008_session_expired(server):
    """Bug report scenario 1: the client sees exactly 1008 "Session expired"."""
    async def go():
        async with websockets.connect(server.ws_url + "/session") as c:
            await c.send("a")
            assert await c.recv() == "ok:a"
            await c.send("expire")
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
            return info.value.rcvd
    rcvd = run(go())
    assert (rcvd.code, rcvd.reason) == (1008, "Session expired")
    found = wait_for_event(server, lambda e: e[0] == "send-after-close")
    assert "closed" in found[0][1] and "1008" in found[0][1]


def test_close_code_validation(server):
    async def go():
        async with websockets.connect(server.ws_url + "/badclose") as c:
            results = json.loads(await c.recv())
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
            return results, info.value.rcvd
    results, rcvd = run(go())
    assert results == ["ValueError"] * 10
    assert rcvd.code == 4999 and rcvd.reason == "é" * 61


# -- callback API ----------------------------------------------------------------------------------

def test_legacy_connect_rejects_bad_token_with_1008(server):
    """Bug report scenario 2: the client sees exactly 1008 "Invalid authentication"."""
    async def go():
        async with websockets.connect(server.ws_url + "/chat?token=bad") as c:
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
            return info.value.rcvd
    rcvd = run(go())
    assert (rcvd.code, rcvd.reason) == (1008, "Invalid authentication")


def test_legacy_callbacks_connect_message_close(server):
    async def go():
        async with websockets.connect(server.ws_url + "/chat?token=good") as c:
            assert await c.recv() == "welcome"
            await c.send("hi")
            assert await c.recv() == "echo hi"
            await c.send("json")
            assert json.loads(await c.recv()) == {"kind": "json"}
            await c.send("later")
            assert await c.recv() == "later later"
            await c.send("bye")
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
            return info.value.rcvd
    rcvd = run(go())
    assert (rcvd.code, rcvd.reason) == (4000, "see you")
    wait_for_event(server, lambda e: e == ["chat-close", 4000, "see you"])


def test_legacy_async_send_to_broadcast_and_binary(server):
    async def go():
        async with websockets.connect(server.ws_url + "/achat") as a, \
                websockets.connect(server.ws_url + "/achat") as b:
            await b.send("id")
            b_id = await b.recv()
            await a.send(f"to:{b_id}:psst")
            assert await b.recv() == "psst"
            assert await a.recv() == "sent=True"
            await a.send("to:00000000-0000-0000-0000-000000000000:x")
            assert await a.recv() == "sent=False"
            await a.send(b"abc")
            assert await a.recv() == b"cba"
            await a.send("news")
            assert await a.recv() == "all:news"
            assert await b.recv() == "all:news"
    run(go())


# -- refusing, params, auth ------------------------------------------------------------------

def test_connect_handler_refuses_with_http_status(server):
    forbidden = refusal(server.ws_url + "/guarded?token=nope")
    assert forbidden.status_code == 403
    teapot = refusal(server.ws_url + "/guarded?token=teapot")
    assert teapot.status_code == 418 and teapot.headers["x-why"] == "teapot"

    async def ok():
        async with websockets.connect(server.ws_url + "/guarded?token=good") as c:
            assert await c.recv() == "queued before 101"
            assert await c.recv() == "hi"
            await c.send("x")
            assert await c.recv() == "x"
    run(ok())


def test_path_query_params_and_di(server):
    async def go():
        async with websockets.connect(server.ws_url + "/room/blue?nick=bob") as c:
            return json.loads(await c.recv())
    info = run(go())
    assert info == {"room": "blue", "nick": "bob", "greeting": "hello",
                    "path_params": {"room": "blue"}, "q": "bob"}


def test_missing_required_param_refuses_400(server):
    assert refusal(server.ws_url + "/needs").status_code == 400

    async def ok():
        async with websockets.connect(server.ws_url + "/needs?count=3") as c:
            return await c.recv()
    assert run(ok()) == "count=3"


def test_authentication(server):
    assert refusal(server.ws_url + "/private").status_code == 401

    async def ok():
        async with websockets.connect(server.ws_url + "/private",
                                      additional_headers={"Authorization": "Bearer s3cret"}) as c:
            return await c.recv()
    assert run(ok()) == "user=ann"


def test_subrouter_prefix_and_plain_get_on_ws_path(server):
    async def go():
        async with websockets.connect(server.ws_url + "/api/sub") as c:
            return await c.recv()
    assert run(go()) == "from subrouter"
    r = httpx.get(server.url + "/echo")
    assert r.status_code == 426 and r.headers["sec-websocket-version"] == "13"
    assert httpx.get(server.url + "/plain").text == "http still works"


def test_handler_exception_closes_1011(server):
    async def go():
        async with websockets.connect(server.ws_url + "/room/red") as c:
            await c.recv()
            await c.send("crash")
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
            return info.value.rcvd
    rcvd = run(go())
    assert rcvd.code == 1011
    assert "RuntimeError: boom" in server.output()


# -- broadcast and the registry ------------------------------------------------------------------

def test_broadcast_reaches_live_clients_only_and_registry_empties(server):
    async def go():
        live = [await websockets.connect(server.ws_url + "/room/green") for _ in range(4)]
        for c in live:
            await c.recv()
        gone_clean = await websockets.connect(server.ws_url + "/room/green")
        await gone_clean.recv()
        await gone_clean.close()
        gone_abort = RawWS(server.port, "/room/green")
        gone_abort.recv_frame()
        gone_abort.abort()
        await asyncio.sleep(0.3)
        assert clients(server)["/room/:room"] == 4
        await live[0].send("hello all")
        got = [await asyncio.wait_for(c.recv(), 5) for c in live]
        assert got == ["green:hello all"] * 4
        for c in live[:2]:
            await c.close()
        live[2].transport.abort()  # abort without a close frame
        await asyncio.sleep(0.3)
        assert clients(server)["/room/:room"] == 1
        await live[3].send("last")
        assert await asyncio.wait_for(live[3].recv(), 5) == "green:last"
        await live[3].close()
        await asyncio.sleep(0.2)
        assert clients(server)["/room/:room"] == 0
    run(go())


def test_subprotocol_first_client_choice_the_endpoint_supports(server):
    async def go():
        async with websockets.connect(server.ws_url + "/proto",
                                      subprotocols=["v3.chat", "v1.chat", "v2.chat"]) as c:
            return c.subprotocol, await c.recv()
    # The client lists by preference: v3 is unknown, v1 comes before v2.
    assert run(go()) == ("v1.chat", "subprotocol=v1.chat")


def test_subprotocol_callback_style_and_header_list_forms(server):
    raw = RawWS(server.port, "/proto-cb",
                "Sec-WebSocket-Protocol: chat, graphql-ws\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n")
    try:
        assert raw.status == 101
        assert b"sec-websocket-protocol: graphql-transport-ws" in raw.head.lower().split(b"\r\n")
        assert raw.recv_frame() == (0x1, b"subprotocol=graphql-transport-ws")
    finally:
        raw.abort()


def test_subprotocol_none_offered_or_no_match(server):
    for headers in ("", "Sec-WebSocket-Protocol: mqtt\r\n"):
        raw = RawWS(server.port, "/proto", headers)
        try:
            assert raw.status == 101
            # RFC 6455 4.2.2: no common subprotocol, no Sec-WebSocket-Protocol in the answer.
            assert b"sec-websocket-protocol" not in raw.head.lower()
            assert raw.recv_frame() == (0x1, b"subprotocol=None")
        finally:
            raw.abort()
    # An endpoint without subprotocols never selects one, whatever the client offers.
    raw = RawWS(server.port, "/echo", "Sec-WebSocket-Protocol: v1.chat\r\n")
    try:
        assert raw.status == 101 and b"sec-websocket-protocol" not in raw.head.lower()
    finally:
        raw.abort()


def test_subprotocol_required_by_the_connect_handler(server):
    response = refusal(server.ws_url + "/proto?strict=1", subprotocols=["mqtt"])
    assert response.status_code == 400
    assert response.body == b"no common subprotocol"
