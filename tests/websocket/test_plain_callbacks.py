"""Plain-``def`` message handlers of the callback API, which the server calls from its
``data_received`` as each message arrives (websocket/session.py ``_PlainCalls``), not from a
task woken per message. What a task gave them must still hold: messages answered in order even
when one handler hands back an awaitable, contextvars kept per connection, a failing handler
not ending the session, and backpressure: a client that reads nothing stops being read.
Real server in a subprocess, raw-socket clients."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from wsraw import RawWS, frame

APP = r'''
import asyncio
import contextvars
from stonechat import Robyn, WebSocket, WebSocketException

app = Robyn(__file__)
seen = contextvars.ContextVar("seen", default=0)
calls = {"big": 0}

@app.get("/calls")
def get_calls():
    return calls

plain = WebSocket(app, "/plain")

@plain.on("message")
def plain_message(ws, msg):
    if msg == "later":
        return _later()  # an awaitable from a plain def: sent when it is done, still in order
    if msg == "count":
        seen.set(seen.get() + 1)  # one context per connection, kept from message to message
        return "count=%d" % seen.get()
    if msg == "boom":
        raise RuntimeError("a failing handler")  # logged; the session goes on
    if msg == "policy":
        raise WebSocketException(4008, "no more")
    if msg == "big":
        calls["big"] += 1
        return "B" * 65536
    return "echo " + msg

async def _later():
    await asyncio.sleep(0.05)
    return "later done"

app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP, name="plain_callbacks.py",
                        env={"STONECHAT_WS_WRITE_LIMIT": "65536", "STONECHAT_WS_SEND_TIMEOUT": "30"})


def texts(ws: RawWS, n: int) -> list[str]:
    out = []
    for _ in range(n):
        opcode, payload = ws.recv_frame()
        assert opcode == 0x1, (opcode, payload)
        out.append(payload.decode())
    return out


def test_messages_in_one_read_are_answered_in_order_around_an_awaitable(server):
    ws = RawWS(server.port, "/plain")
    assert ws.status == 101
    ws.send(b"".join(frame(0x1, m.encode()) for m in ("a", "later", "b", "c")))  # one TCP write
    assert texts(ws, 4) == ["echo a", "later done", "echo b", "echo c"]
    ws.close()


def test_contextvars_are_kept_per_connection(server):
    one, two = RawWS(server.port, "/plain"), RawWS(server.port, "/plain")
    for _ in range(3):
        one.send_text("count")
    assert texts(one, 3) == ["count=1", "count=2", "count=3"]
    two.send_text("count")
    assert texts(two, 1) == ["count=1"]  # another connection, another context
    one.send(frame(0x1, b"later") + frame(0x1, b"count"))  # after a hand-back to the task too
    assert texts(one, 2) == ["later done", "count=4"]
    one.close()
    two.close()


def test_a_failing_handler_is_logged_and_the_session_goes_on(server):
    ws = RawWS(server.port, "/plain")
    ws.send_text("boom")
    ws.send_text("after")
    assert texts(ws, 1) == ["echo after"]
    assert "a failing handler" in server.output()
    ws.send_text("policy")
    assert ws.recv_close() == (4008, "no more")
    ws.close()


def test_a_client_that_reads_nothing_is_not_read_either(server):
    """Each "big" answer is 64 KiB (the write limit): once the client's unread data is over it,
    the server stops calling the handler and, 64 messages later, stops reading, so the client's
    own send blocks instead of the server queueing without bound."""
    before = httpx.get(server.url + "/calls").json()["big"]
    ws = RawWS(server.port, "/plain", rcvbuf=4096, timeout=10)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ws.sock.settimeout(3)
    request = frame(0x1, b"big")
    sent = 0
    with pytest.raises(socket.timeout):  # blocked: the server no longer reads
        for _ in range(200_000):
            ws.sock.sendall(request)
            sent += 1
    time.sleep(0.3)
    called = httpx.get(server.url + "/calls").json()["big"] - before
    # Answered: what the server's kernel send buffer holds (64 KiB each) and one more, not what
    # was sent (every message answered would be thousands: the rest waits in socket buffers
    # and the server's bounded queue).
    wmem_max = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    assert sent > 1000, sent
    assert called <= wmem_max // 65536 + 8, (called, sent)
    ws.abort()
