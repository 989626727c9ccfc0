"""``TestClient.websocket_connect`` (testclient.py, testclient_websocket.py): both WebSocket
API styles in-process, through the app's real handshake and session code, with close codes
and reasons visible to the test, refusals raised with their status and body, bounded waits,
and broadcast between two test WebSockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from stonechat import (AuthenticationHandler, HTTPException, Identity, Response, Robyn, WebSocket,
                       WebSocketDisconnect, WebSocketException)
from stonechat.authentication import BearerGetter
from stonechat.server.interface import WebSocketConnection
from stonechat.testclient_websocket import InProcessWebSocket
from stonechat.testing import TestClient, WebSocketRefused, WebSocketTestSession

events: list = []


class Auth(AuthenticationHandler):
    def authenticate(self, request):
        if request.headers.get("authorization") == "Bearer s3cret":
            return Identity(claims={"user": "ann"})
        return None


def make_app() -> Robyn:
    app = Robyn(__file__)
    app.inject_global(GREETING="hello")
    app.configure_authentication(Auth(token_getter=BearerGetter()))

    @app.websocket("/echo")
    async def echo(ws):
        while True:
            message = await ws.receive()
            if message == "bye":
                await ws.close(4001, "asked to leave")
                return
            await ws.send(message)

    @echo.on_connect
    def welcome(ws):
        return "welcome"

    @echo.on_close
    def echo_closed(ws):
        events.append(("echo-close", ws.close_code, ws.close_reason, ws.closed_by))

    @app.websocket("/json")
    async def json_echo(ws):
        while True:
            data = await ws.receive_json()
            await ws.send_json({"got": data})

    @app.websocket("/record")
    async def record(ws):
        try:
            while True:
                events.append(("record", await ws.receive_text()))
        except WebSocketDisconnect as exc:
            events.append(("record-disconnect", exc.code, exc.reason))

    @app.websocket("/room/:name")
    async def room(ws, name: str, nick: str = "anon", global_dependencies=None):
        await ws.send_text(f"{global_dependencies['GREETING']} {nick} in {name}, token={ws.request.headers.get('x-token')}, "
                           f"subprotocol={ws.subprotocol}")
        while True:
            await ws.broadcast(f"{nick}: {await ws.receive_text()}")

    @app.websocket("/proto", subprotocols=["v2.chat", "v1.chat"])
    async def proto(ws):
        await ws.send_text(f"speaking {ws.subprotocol}")
        await ws.receive()

    @app.websocket("/refuse")
    async def refuse(ws):
        await ws.receive()

    @refuse.on_connect
    def refuse_connect(ws):
        if ws.query_params.get("who") == "teapot":
            raise HTTPException(418, "no coffee here")
        return Response(403, {"x-why": "closed"}, "go away")

    @app.websocket("/early-close")
    async def early_close(ws):
        await ws.receive()

    @early_close.on_connect
    def close_at_once(ws):
        ws.close(1008, "policy")

    @app.websocket("/needs")
    async def needs(ws, count: int):
        await ws.send_text(f"count={count}")

    @app.websocket("/private", auth_required=True)
    async def private(ws):
        await ws.send_text("user=" + ws.identity.claims["user"])
        await ws.receive()

    @app.websocket("/fail")
    async def fail(ws):
        await ws.receive()
        raise RuntimeError("boom")

    @app.websocket("/refuse-code")
    async def refuse_code(ws):
        await ws.receive()
        raise WebSocketException(4003, "forbidden message")

    @app.websocket("/done")
    async def done(ws):
        await ws.send_text("one and done")

    @app.websocket("/binary")
    async def binary(ws):
        await ws.send_bytes(b"\x00\x01")
        await ws.receive()

    @app.websocket("/ticker")
    async def ticker(ws):
        for i in range(3):
            await asyncio.sleep(0.05)
            await ws.send_text(f"tick {i}")
        await ws.receive()

    @app.websocket("/silent")
    async def silent(ws):
        await ws.receive()

    @app.websocket("/direct")
    async def direct(ws):
        while True:
            target, text = (await ws.receive_text()).split(" ", 1)
            await ws.send_to(target if target != "me" else ws.id, text)

    @direct.on_connect
    def tell_id(ws):
        return ws.id

    @app.websocket("/shutdown-watch")
    async def shutdown_watch(ws):
        await ws.receive()

    @shutdown_watch.on_close
    def watched_close(ws):
        events.append(("shutdown-watch-close", ws.close_code, ws.close_reason))

    old = WebSocket(app, "/old")

    @old.on("connect")
    def old_connect(ws):
        return "old hello"

    @old.on("message")
    def old_message(ws, msg):
        return "old " + msg

    @old.on("close")
    def old_close(ws):
        events.append(("old-close", ws.close_code))

    @app.get("/events")
    def get_events():
        return {"n": len(events)}

    @app.shutdown_handler
    def bye():
        events.append(("shutdown",))

    return app


@pytest.fixture
def client():
    events.clear()
    with TestClient(make_app()) as c:
        yield c


def test_the_connection_implements_the_servers_websocket_connection_contract():
    members = [name for name in dir(WebSocketConnection) if not name.startswith("_")]
    members += list(WebSocketConnection.__annotations__)
    for name in ("receive", "receive_nowait", "next_message", "send", "write_message", "send_nowait", "prepare",
                 "send_frame_nowait", "close", "close_nowait", "wait_closed", "drain", "closed", "close_code",
                 "close_reason", "closed_by", "frame_kind", "write_paused", "request"):
        assert name in members, name  # the list above is the interface's, nothing forgotten
    loop = asyncio.new_event_loop()
    try:
        conn = InProcessWebSocket(loop, None, 5.0)  # type: ignore[arg-type]
        for name in members:
            assert hasattr(conn, name), f"InProcessWebSocket lacks {name}"
    finally:
        loop.close()


def test_text_and_binary_round_trip_after_the_connect_message(client):
    with client.websocket_connect("/echo") as ws:
        assert isinstance(ws, WebSocketTestSession)
        assert ws.receive_text() == "welcome"
        ws.send_text("héllo")
        assert ws.receive_text() == "héllo"
        ws.send_bytes(b"\x00\xff")
        assert ws.receive_bytes() == b"\x00\xff"
        ws.send("plain")
        assert ws.receive() == "plain"
    assert ws.close_code == 1000 and ws.closed_by == "client"
    assert events == [("echo-close", 1000, "", "client")]


def test_json_both_ways_as_text_or_binary(client):
    with client.websocket_connect("/json") as ws:
        ws.send_json({"a": [1, 2]})
        assert ws.receive_json() == {"got": {"a": [1, 2]}}
        ws.send_json([True, None], mode="binary")
        assert ws.receive_json() == {"got": [True, None]}


def test_receive_of_the_wrong_kind_says_so(client):
    with client.websocket_connect("/binary") as ws:
        with pytest.raises(TypeError, match="expected a text message, got binary"):
            ws.receive_text()
    with client.websocket_connect("/echo") as ws:
        with pytest.raises(TypeError, match="expected a binary message, got text 'welcome'"):
            ws.receive_bytes()


def test_a_server_close_gives_its_code_and_reason_to_receive_send_and_the_session(client):
    with client.websocket_connect("/echo") as ws:
        ws.receive_text()
        ws.send_text("bye")
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()
        assert (exc.value.code, exc.value.reason) == (4001, "asked to leave")
        assert (ws.close_code, ws.close_reason, ws.closed_by) == (4001, "asked to leave", "server")
        assert ws.closed
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()  # again: still closed, at once
        assert exc.value.code == 4001
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.send_text("anyone?")
        assert exc.value.code == 4001
    assert events == [("echo-close", 4001, "asked to leave", "server")]


def test_a_client_close_reaches_the_app_after_the_messages_sent_before_it(client):
    ws = client.websocket_connect("/record")
    ws.send_text("one")
    ws.send_text("two")
    ws.close(4000, "test over")
    # close() returned only after the app's session ended
    assert events == [("record", "one"), ("record", "two"), ("record-disconnect", 4000, "test over")]
    assert (ws.close_code, ws.close_reason, ws.closed_by) == (4000, "test over", "client")
    ws.close(1000)  # a second close does nothing
    assert ws.close_code == 4000
    with pytest.raises(WebSocketDisconnect):
        ws.send_text("late")


def test_invalid_close_codes_and_reasons_are_refused_before_anything_happens(client):
    with client.websocket_connect("/silent") as ws:
        for code, reason in [(999, ""), (1005, ""), (1006, ""), (5000, ""), (1000, "x" * 124)]:
            with pytest.raises(ValueError):
                ws.close(code, reason)
        assert not ws.closed


def test_how_the_handler_ends_decides_the_close_code(client):
    with client.websocket_connect("/fail") as ws:
        ws.send_text("x")
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive()
        assert (exc.value.code, exc.value.reason) == (1011, "internal error")
    with client.websocket_connect("/refuse-code") as ws:
        ws.send_text("x")
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive()
        assert (exc.value.code, exc.value.reason) == (4003, "forbidden message")
    with client.websocket_connect("/done") as ws:
        assert ws.receive_text() == "one and done"
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive()
        assert exc.value.code == 1000


def test_a_refused_handshake_raises_with_status_headers_and_body(client):
    with pytest.raises(WebSocketRefused) as refused:
        client.websocket_connect("/refuse")
    assert refused.value.status_code == 403 and refused.value.text == "go away"
    assert refused.value.headers.get("x-why") == "closed"
    with pytest.raises(WebSocketRefused) as refused:
        client.websocket_connect("/refuse", query_params={"who": "teapot"})
    assert refused.value.status_code == 418 and "no coffee here" in refused.value.text
    with pytest.raises(WebSocketRefused) as refused:
        client.websocket_connect("/needs?count=many")
    assert refused.value.status_code == 400 and "count" in refused.value.text
    with pytest.raises(WebSocketRefused) as refused:
        client.websocket_connect("/private")
    assert refused.value.status_code == 401
    with pytest.raises(WebSocketRefused) as refused:
        client.websocket_connect("/nowhere")
    assert refused.value.status_code == 404
    assert "refused with 404" in str(refused.value)


def test_params_headers_auth_and_subprotocols_reach_the_handler(client):
    with client.websocket_connect("/needs?count=3") as ws:
        assert ws.receive_text() == "count=3"
    with client.websocket_connect("/private", headers={"Authorization": "Bearer s3cret"}) as ws:
        assert ws.receive_text() == "user=ann"
    with client.websocket_connect("/room/blue", query_params={"nick": "ann"}, headers={"x-token": "t1"}) as ws:
        assert ws.receive_text() == "hello ann in blue, token=t1, subprotocol=None"
    with client.websocket_connect("/proto", subprotocols=["v3.chat", "v1.chat"]) as ws:
        assert ws.accepted_subprotocol == "v1.chat"
        assert ws.headers.get("sec-websocket-protocol") == "v1.chat"
        assert ws.receive_text() == "speaking v1.chat"
    with client.websocket_connect("/proto", subprotocols=["v9"]) as ws:
        assert ws.accepted_subprotocol is None
        assert ws.receive_text() == "speaking None"


def test_a_connect_handler_can_accept_and_close_at_once(client):
    with client.websocket_connect("/early-close") as ws:
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()
        assert (exc.value.code, exc.value.reason) == (1008, "policy")


def test_the_callback_style_runs_too(client):
    with client.websocket_connect("/old") as ws:
        assert ws.receive_text() == "old hello"
        ws.send_text("ping")
        assert ws.receive_text() == "old ping"
    assert events == [("old-close", 1000)]


def test_broadcast_and_send_to_between_two_test_websockets(client):
    with client.websocket_connect("/room/x?nick=ann") as ann, client.websocket_connect("/room/x?nick=bo") as bo:
        ann.receive_text()
        bo.receive_text()
        ann.send_text("hi all")
        assert ann.receive_text() == "ann: hi all"
        assert bo.receive_text() == "ann: hi all"
        bo.send_text("hey")
        assert ann.receive_text() == "bo: hey" and bo.receive_text() == "bo: hey"
    with client.websocket_connect("/direct") as a, client.websocket_connect("/direct") as b:
        a_id, b_id = a.receive_text(), b.receive_text()
        a.send_text(f"{b_id} psst")
        assert b.receive_text() == "psst"
        b.send_text(f"{a_id} back")
        assert a.receive_text() == "back"


def test_a_receive_waits_for_the_app_and_never_hangs(client):
    with client.websocket_connect("/ticker") as ws:
        assert [ws.receive_text() for _ in range(3)] == ["tick 0", "tick 1", "tick 2"]
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no message from the app within 0.2 s"):
            ws.receive_text(timeout=0.2)
        assert time.monotonic() - started < 2
        ws.send_text("still usable")  # the timeout cancelled nothing on the app's side
    with client.websocket_connect("/silent", timeout=0.1) as ws:
        with pytest.raises(TimeoutError):
            ws.receive()


def test_http_requests_and_websockets_share_one_app(client):
    with client.websocket_connect("/record") as ws:
        ws.send_text("a")
        assert client.get("/events").json() == {"n": 1}  # the app has already handled the message
        ws.send_text("b")
    assert client.get("/events").json() == {"n": 3}


def test_closing_the_client_closes_open_websockets_with_1001_before_shutdown():
    events.clear()
    client = TestClient(make_app())
    client.__enter__()
    ws = client.websocket_connect("/shutdown-watch")
    client.__exit__(None, None, None)
    assert events == [("shutdown-watch-close", 1001, "server shutting down"), ("shutdown",)]
    with pytest.raises(WebSocketDisconnect) as exc:
        ws.receive()
    assert exc.value.code == 1001


def test_a_client_used_without_with_serves_websockets_too():
    events.clear()
    client = TestClient(make_app())
    with client.websocket_connect("/echo") as ws:
        assert ws.receive_text() == "welcome"
    client.close()
    assert events == [("echo-close", 1000, "", "client")]
