"""WebSocket protocol rules (RFC 6455) and limits, against a real server, with raw sockets
for the frames a polite client never sends: handshake validation, masking, reserved bits and
opcodes, fail-fast UTF-8, fragmentation with control frames in between, message size, keepalive,
idle timeout, per-IP limits, backpressure, slow clients in a broadcast, shutdown with 1001, and
memory over 6000 connect/close cycles.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import time

import httpx
import pytest
import websockets

from wsraw import RawWS, frame

APP = r'''
import asyncio, gc, os, sys
from stonechat import Robyn, WebSocketDisconnect

app = Robyn(__file__)
events = []

@app.get("/events")
def get_events():
    return {"events": events}

@app.get("/clients")
def clients():
    return {path: len(ep.clients) for path, ep in app.websocket_hub.endpoints.items()}

cyclic_garbage = [0]  # objects freed by the cycle collector, not by reference counting

def count_garbage(phase, info):
    if phase == "stop":
        cyclic_garbage[0] += info["collected"]

gc.callbacks.append(count_garbage)

@app.get("/memory")
def memory():
    gc.collect()  # count only what is alive
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return {"rss_kib": int(line.split()[1]), "blocks": sys.getallocatedblocks(),
                        "garbage": cyclic_garbage[0]}

@app.websocket("/ws")
async def echo(ws):
    try:
        while True:
            await ws.send(await ws.receive())
    except WebSocketDisconnect:
        pass

@echo.on_close
async def echo_closed(ws):
    await asyncio.sleep(0.05)
    print(f"close handler ran: {ws.close_code} {ws.close_reason}", flush=True)

@app.websocket("/push")
async def push(ws):
    chunk = "p" * 65536
    sent = 0
    try:
        while True:
            await ws.send_text(chunk)
            sent += 1
    except WebSocketDisconnect as exc:
        events.append(["push-stopped", exc.code, sent])

@app.websocket("/feed")
async def feed(ws):
    try:
        while True:
            msg = await ws.receive_text()
            if msg.startswith("flood:"):
                chunk = "f" * 65536
                for _ in range(int(msg[6:])):
                    await ws.broadcast(chunk)
                await ws.send_text("flood-done")
    except WebSocketDisconnect:
        pass

@app.shutdown_handler
def bye():
    print("shutdown handler ran", flush=True)

app.start()
'''


def start(serve, **settings):
    env = {f"STONECHAT_{k.upper()}": str(v) for k, v in settings.items()}
    return serve(APP, env=env)


@pytest.fixture(scope="module")
def _module_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("wsproto")


@pytest.fixture
def srv(serve):
    return start(serve, ws_max_message_size=100_000)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- handshake -------------------------------------------------------------------------------

def raw_handshake(port, lines):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def test_handshake_validation(srv):
    base = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{srv.port}", "Upgrade: websocket", "Connection: Upgrade"]
    key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
    ok = raw_handshake(srv.port, base + [key, "Sec-WebSocket-Version: 13"])
    assert ok.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in ok
    assert raw_handshake(srv.port, base + ["Sec-WebSocket-Version: 13"]).startswith(b"HTTP/1.1 400")
    short = raw_handshake(srv.port, base + ["Sec-WebSocket-Key: MTIzNDU2Nzg=", "Sec-WebSocket-Version: 13"])
    assert short.startswith(b"HTTP/1.1 400")
    v8 = raw_handshake(srv.port, base + [key, "Sec-WebSocket-Version: 8"])
    assert v8.startswith(b"HTTP/1.1 426") and b"sec-websocket-version: 13" in v8.lower()
    no_conn = raw_handshake(srv.port, [base[0], base[1], base[2], key, "Sec-WebSocket-Version: 13"])
    assert not no_conn.startswith(b"HTTP/1.1 101")
    post = raw_handshake(srv.port, ["POST /ws HTTP/1.1"] + base[1:] + [key, "Sec-WebSocket-Version: 13",
                                                                     "Content-Length: 0"])
    assert post.startswith(b"HTTP/1.1 400")


# -- framing rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, code", [
    (frame(0x1, b"hi", mask=False), 1002),               # unmasked client frame
    (frame(0x1, b"hi", rsv=4), 1002),                    # RSV1 without an extension
    (frame(0x3, b"hi"), 1002),                           # reserved data opcode
    (frame(0xB, b""), 1002),                             # reserved control opcode
    (frame(0x9, b"p", fin=False), 1002),                 # fragmented ping
    (frame(0x9, b"x" * 126), 1002),                      # control payload over 125
    (frame(0x0, b"cont"), 1002),                         # continuation without a message
    (frame(0x8, b"\x03"), 1002),                         # 1-byte close payload
    (frame(0x8, struct.pack("!H", 1005)), 1002),         # close code that must not be sent
    (frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),  # close reason not UTF-8
    (frame(0x1, b"ok \xed\xa0\x80"), 1007),              # UTF-16 surrogate in a text message
])
def test_protocol_errors_close_with_the_right_code(srv, bad, code):
    ws = RawWS(srv.port, "/ws")
    ws.send_text("before")
    assert ws.recv_frame() == (0x1, b"before")
    ws.send(bad)
    assert ws.recv_close()[0] == code
    ws.send(frame(0x8, struct.pack("!H", 1000)))
    assert ws.at_eof()  # the server closes TCP after the close handshake


def test_invalid_utf8_fails_fast_before_the_message_ends(srv):
    ws = RawWS(srv.port, "/ws")
    ws.send(frame(0x1, "κόσμε".encode(), fin=False))
    ws.send(frame(0x0, b"\xf4\x90", fin=False))  # can never become valid UTF-8
    assert ws.recv_close()[0] == 1007            # without the rest of the message
    # Within one frame too: a frame whose payload so far is invalid, the rest never sent.
    ws2 = RawWS(srv.port, "/ws")
    whole = frame(0x1, b"abc\xf4\x90\x80\x80" + b"d" * 1000)
    ws2.send(whole[:14])
    assert ws2.recv_close()[0] == 1007


def test_fragments_with_control_frames_between(srv):
    ws = RawWS(srv.port, "/ws")
    ws.send(frame(0x1, b"frag", fin=False) + frame(0x9, b"ping!") + frame(0x0, "ment€".encode(), fin=False))
    assert ws.recv_frame() == (0xA, b"ping!")
    ws.send(frame(0xA, b"unsolicited") + frame(0x0, b"ed"))
    assert ws.recv_frame() == (0x1, "fragment€ed".encode())
    # A close between two fragments is legal and answered normally.
    ws.send(frame(0x2, b"\x01", fin=False) + frame(0x8, struct.pack("!H", 1000) + b"done"))
    assert ws.recv_close() == (1000, "")
    assert ws.at_eof()


def test_message_size_limit_1009(srv):
    ws = RawWS(srv.port, "/ws")
    ws.send(frame(0x2, b"x" * 100_000))
    assert ws.recv_frame() == (0x2, b"x" * 100_000)
    # The header alone announces too much: refused before the payload is sent.
    ws.send(frame(0x2, b"", length=100_001)[:14])
    assert ws.recv_close()[0] == 1009
    # Over the limit across fragments.
    ws2 = RawWS(srv.port, "/ws")
    ws2.send(frame(0x1, b"a" * 60_000, fin=False) + frame(0x0, b"b" * 60_000))
    assert ws2.recv_close()[0] == 1009


# -- keepalive, idle, per-IP limit ---------------------------------------------------------------

def test_keepalive_ping_and_pong_timeout(serve):
    server = start(serve, ws_ping_interval=1, ws_ping_timeout=1)
    silent = RawWS(server.port, "/ws", timeout=8)
    started = time.monotonic()
    opcode, payload = silent.recv_frame()
    assert opcode == 0x9  # the server pings an idle client
    code, reason = silent.recv_close()  # and closes when no pong comes
    assert code == 1011 and "ping" in reason
    assert time.monotonic() - started < 6

    async def polite():  # the websockets client answers pings: it stays connected
        async with websockets.connect(server.ws_url + "/ws", ping_interval=None) as c:
            await asyncio.sleep(3.5)
            await c.send("still here")
            return await c.recv()
    assert run(polite()) == "still here"


def test_idle_timeout(serve):
    server = start(serve, ws_idle_timeout=3, ws_ping_interval=0)
    ws = RawWS(server.port, "/ws", timeout=12)
    started = time.monotonic()
    assert ws.recv_close() == (1001, "idle timeout")
    # checked on the server's once-a-second tick: up to a tick (more under load) either way
    assert 1.5 < time.monotonic() - started < 8


def test_connection_limit_per_ip_503(serve):
    server = start(serve, ws_max_connections_per_ip=3)
    held = [RawWS(server.port, "/ws") for _ in range(3)]
    assert all(w.status == 101 for w in held)
    refused = RawWS(server.port, "/ws")
    assert refused.status == 503
    held[0].send(frame(0x8, struct.pack("!H", 1000)))
    assert held[0].recv_close()[0] == 1000
    assert held[0].at_eof()
    held[0].close()  # the slot is free once TCP is closed (or after ws_close_timeout)
    time.sleep(0.2)
    again = RawWS(server.port, "/ws")
    assert again.status == 101


# -- backpressure --------------------------------------------------------------------------------

def test_send_waits_then_closes_a_stuck_client_1013(serve):
    server = start(serve, ws_write_limit=65536, ws_send_timeout=1, ws_max_write_buffer=1 << 20)
    stuck = RawWS(server.port, "/push", rcvbuf=4096)  # never reads
    deadline = time.monotonic() + 8
    found = None
    while time.monotonic() < deadline and not found:
        time.sleep(0.2)
        found = [e for e in httpx.get(server.url + "/events").json()["events"] if e[0] == "push-stopped"]
    assert found, server.output()[-2000:]
    _, code, sent = found[0]
    assert code == 1013
    assert sent < 200  # it waited instead of queueing without bound (200 x 64 KiB = 12.5 MiB)
    stuck.close()


def test_broadcast_is_not_stalled_by_a_slow_client(serve):
    server = start(serve, ws_write_limit=65536, ws_max_write_buffer=4 << 20)
    slow = RawWS(server.port, "/feed", rcvbuf=4096)  # never reads
    fast = RawWS(server.port, "/feed", timeout=10)   # reads as fast as it can
    time.sleep(0.1)
    assert httpx.get(server.url + "/clients").json()["/feed"] == 2
    started = time.monotonic()
    fast.send_text("flood:400")  # 400 x 64 KiB = 25 MiB to both clients
    count = 0
    while True:
        opcode, payload = fast.recv_frame()
        if payload == b"flood-done":
            break
        assert opcode == 0x1 and len(payload) == 65536
        count += 1
    assert count == 400 and time.monotonic() - started < 10
    time.sleep(0.2)
    assert httpx.get(server.url + "/clients").json()["/feed"] == 1  # the slow one was dropped
    assert "client not reading" in server.output()
    fast.send_text("still open")  # the fast one is still served
    slow.close()
    fast.close()


# -- shutdown ----------------------------------------------------------------------------------------

def test_shutdown_closes_1001_and_runs_close_handlers_first(serve):
    server = start(serve)
    clients = [RawWS(server.port, "/ws", timeout=10) for _ in range(3)]
    for c in clients:
        c.send_text("x")
        assert c.recv_frame() == (0x1, b"x")
    server.signal(signal.SIGTERM)
    for c in clients:
        assert c.recv_close() == (1001, "server shutting down")
        c.send(frame(0x8, struct.pack("!H", 1001)))
    assert server.wait(15) == 0
    out = server.output()
    assert out.count("close handler ran: 1001 server shutting down") == 3, out
    assert out.rindex("close handler ran") < out.index("shutdown handler ran"), out


# -- memory ----------------------------------------------------------------------------------------

def test_memory_flat_over_6000_connect_close_cycles(serve):
    """No memory grows per WebSocket connection, and a closed one is freed at once: 3000
    connect/echo/close cycles to warm up, then 8 rounds of 750 (half closed with a close
    frame, half aborted with an RST).

    What we found (issue 8): the old form of this test compared VmRSS at three points 3000
    cycles apart and once failed with 2084 KiB over its 2048 bound. There was no leak: over
    30,000 cycles VmRSS climbed in steps of 0.3-4.6 MiB for the first ~9,000 cycles and then
    stayed flat (42,952 KiB at 9,000 cycles, 42,960 KiB at 30,000), and the interpreter's live
    blocks stayed within a few dozen of their count after the first thousand. But every closed
    connection was garbage in a reference cycle, freed only when the cyclic collector got to
    it: WebSocketProtocol → WebSocketAccept → the session closure → the framework's adapter
    → WebSocketProtocol, and HttpProtocol ↔ the httptools parser holding its bound callbacks.
    Dead connections piled up between full collections; where a collection fell decided the
    steps, so two RSS points 3000 cycles apart measured chance. Both cycles are broken now
    (the protocol does not keep the accept; the HTTP protocol lets go of its parser when done)
    and VmRSS is flat from the first thousand cycles on: 31,560 KiB at 1,000, 31,640 KiB at
    30,000, with no collection forced.

    The test asks what a leak always does and noise never does, as medians over the 8 rounds
    (a leak grows every round; an allocator step moves one or two rounds of eight):
    * objects freed only by the cycle collector: under one per six connections (measured 0;
      with the first cycle back, 20,300 a round);
    * live Python blocks, counted after ``gc.collect()``: growth under one per six connections
      (125 a round; measured 0-5);
    * VmRSS: growth under 192 KiB a round, 256 bytes per connection (measured 0 KiB).
    Each sample waits until every session so far has run its close handler, so no connection
    is still being torn down when it is taken. Leaks injected into WebSocketProtocol.__init__
    fail it: ``bytes(1024)`` kept per connection (752 more blocks a round), an empty list per
    connection (751), 1 KiB ``malloc``-ed through ctypes and never freed (780 KiB a round), even
    256 bytes of it (230 KiB a round).
    """
    server = start(serve, ws_ping_interval=0)
    handshake = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    close = frame(0x8, struct.pack("!H", 1000))
    hello = frame(0x1, b"hello")

    def cycle(i):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(handshake + hello)
        data = b""
        while not data.endswith(b"hello"):
            chunk = s.recv(4096)
            assert chunk, "server closed early"
            data += chunk
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # abort: RST, no close frame
            return
        s.sendall(close)
        while s.recv(4096):
            pass
        s.close()

    def memory(connections):
        # Sample once every session is over: its close handler (which sleeps 50 ms) has run.
        server.wait_for_output("close handler ran", count=connections, timeout=30)
        return httpx.get(server.url + "/memory").json()

    rounds, per_round = 8, 750
    for i in range(3000):  # warm-up: allocator pools and caches fill
        cycle(i)
    samples = [memory(3000)]
    for n in range(rounds):
        for i in range(per_round):
            cycle(i)
        samples.append(memory(3000 + (n + 1) * per_round))
    assert httpx.get(server.url + "/clients").json()["/ws"] == 0

    def median_growth(key):
        growth = sorted(b[key] - a[key] for a, b in zip(samples, samples[1:]))
        return (growth[rounds // 2 - 1] + growth[rounds // 2]) / 2, growth

    garbage, deltas = median_growth("garbage")
    assert garbage < per_round / 6, f"{garbage} objects a round freed only by the cycle collector (median of {deltas})"
    blocks, deltas = median_growth("blocks")
    assert blocks < per_round / 6, f"{blocks} more live blocks per {per_round} connections (median of {deltas})"
    rss, deltas = median_growth("rss_kib")
    assert rss < 192, f"VmRSS grows {rss} KiB per {per_round} connections (median of {deltas})"
