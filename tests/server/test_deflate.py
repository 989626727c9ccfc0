"""permessage-deflate (RFC 7692), on with ``ws_per_message_deflate``: negotiation, compressed
messages both ways (whole and fragmented), the limits measured on the inflated size, the
protocol errors, broadcast to compressed and plain clients together, and nothing of it when
the setting is off. Real server, the websockets client and raw sockets.
"""

from __future__ import annotations

import asyncio
import zlib

import pytest
import websockets

from wsraw import RawWS, frame

APP = """
from stonechat import Robyn, WebSocketDisconnect

app = Robyn(__file__)

@app.websocket("/echo")
async def echo(ws):
    try:
        while True:
            msg = await ws.receive()
            if msg == "shout":
                await ws.broadcast("all: " + "news " * 100)
            else:
                await ws.send(msg)
    except WebSocketDisconnect:
        pass

app.start()
"""

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")


def extensions(raw: RawWS) -> list[bytes]:
    return [line.split(b":", 1)[1].strip() for line in raw.head.lower().split(b"\r\n")
            if line.startswith(b"sec-websocket-extensions:")]


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP, env={"STONECHAT_WS_PER_MESSAGE_DEFLATE": "1",
                                  "STONECHAT_WS_MAX_MESSAGE_SIZE": "65536"})


@pytest.fixture(scope="module")
def plain_server(serve_module):
    return serve_module(APP, name="plain.py")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_negotiated_and_compressed_both_ways(server):
    raw = RawWS(server.port, "/echo", OFFER)
    try:
        assert raw.status == 101
        assert extensions(raw) == [b"permessage-deflate; server_no_context_takeover"]
        text = ("stonechat " * 200).encode()
        raw.send(frame(0x1, deflate(text), rsv=4))  # rsv=4: RSV1
        opcode, payload = raw.recv_frame()
        assert opcode == 0x1 and raw.last_rsv == 0x40  # our answer is compressed too
        assert len(payload) < len(text) // 10 and inflate(payload) == text
        raw.send(frame(0x1, b"short"))  # uncompressed messages stay legal both ways
        assert raw.recv_frame() == (0x1, b"short") and raw.last_rsv == 0
    finally:
        raw.abort()


def test_fragmented_compressed_message(server):
    raw = RawWS(server.port, "/echo", OFFER)
    try:
        data = bytes(range(256)) * 40
        body = deflate(data)
        third = len(body) // 3
        raw.send(frame(0x2, body[:third], fin=False, rsv=4)
                 + frame(0x9, b"ping between fragments")
                 + frame(0x0, body[third:2 * third], fin=False)
                 + frame(0x0, body[2 * third:]))
        assert raw.recv_frame() == (0xA, b"ping between fragments")
        opcode, payload = raw.recv_frame()
        assert opcode == 0x2 and raw.last_rsv == 0x40 and inflate(payload) == data
    finally:
        raw.abort()


@pytest.mark.parametrize("frames, code", [
    ([frame(0x1, deflate(b"a" * 100_000), rsv=4)], 1009),            # 100 KB from ~100 bytes
    ([frame(0x1, b"\xff\xfe not deflate", rsv=4)], 1007),
    ([frame(0x1, deflate(b"ok \xff\xfe"), rsv=4)], 1007),           # invalid UTF-8 inside
    ([frame(0x1, deflate(b"abc"), fin=False, rsv=4), frame(0x0, b"x", rsv=4)], 1002),
    ([frame(0x9, b"", rsv=4)], 1002),                                # RSV1 on a control frame
    ([frame(0x1, deflate(b"abc"), rsv=2)], 1002),                    # RSV2 means nothing here
], ids=["inflated-over-limit", "invalid-data", "invalid-utf8", "rsv1-on-continuation",
        "rsv1-on-ping", "rsv2"])
def test_protocol_errors(server, frames, code):
    raw = RawWS(server.port, "/echo", OFFER)
    try:
        raw.send(b"".join(frames))
        assert raw.recv_close()[0] == code
    finally:
        raw.abort()


def test_offers_we_decline_or_adjust(server):
    cases = [
        ("permessage-deflate; server_max_window_bits=10", b"permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
        ("permessage-deflate; client_no_context_takeover", b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        # 8 bits cannot be honoured, an unknown parameter declines that offer: the next one is taken
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate; foo=1, permessage-deflate", b"permessage-deflate; server_no_context_takeover"),
        ("x-webkit-deflate-frame", None),
        ("permessage-deflate; server_max_window_bits=8", None),
    ]
    for offer, expected in cases:
        raw = RawWS(server.port, "/echo", f"Sec-WebSocket-Extensions: {offer}\r\n")
        try:
            assert raw.status == 101
            assert extensions(raw) == ([expected] if expected else []), offer
            if expected is None:  # no extension: RSV1 is an error again
                raw.send(frame(0x1, deflate(b"x" * 200), rsv=4))
                assert raw.recv_close()[0] == 1002
        finally:
            raw.abort()


def test_websockets_client_and_broadcast_to_mixed_clients(server):
    async def go():
        async with websockets.connect(server.ws_url + "/echo") as z, \
                websockets.connect(server.ws_url + "/echo", compression=None) as p:
            assert z.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            assert "sec-websocket-extensions" not in p.response.headers
            big = "é" * 20_000
            await z.send(big)
            assert await z.recv() == big
            await z.send("shout")
            expected = "all: " + "news " * 100
            assert await z.recv() == expected
            assert await p.recv() == expected
    run(go())


def test_off_by_default(plain_server):
    raw = RawWS(plain_server.port, "/echo", OFFER)
    try:
        assert raw.status == 101 and extensions(raw) == []
        raw.send(frame(0x1, deflate(b"x" * 200), rsv=4))
        assert raw.recv_close()[0] == 1002
    finally:
        raw.abort()


def test_compressed_frame_arriving_in_pieces(server):
    import os
    import time
    raw = RawWS(server.port, "/echo", OFFER)
    try:
        data = os.urandom(30_000).hex()  # 60 KB of text that compresses to about half
        wire = frame(0x1, deflate(data.encode()), rsv=4)
        for i in range(0, len(wire), 7000):  # the server streams the frame as it trickles in
            raw.send(wire[i:i + 7000])
            time.sleep(0.01)
        opcode, payload = raw.recv_frame()
        assert opcode == 0x1 and raw.last_rsv == 0x40 and inflate(payload).decode() == data
    finally:
        raw.abort()
