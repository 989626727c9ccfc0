"""Stopping under load loses no request: 64 keep-alive connections loop ``GET /`` with no pause
(one request at a time, then 8 pipelined in flight), SIGTERM after 1.5 s, and every request a
client wrote is answered — 200 while the drain lasts, else 503 — none is cut off or reset.

The client is ``bench/stop_under_load.py``'s (the bench runs the same one against uvicorn):
raw asyncio streams, so "sent" means exactly "written to a connection the server had not told
to close". The counts are in every assertion message.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time

import pytest

from conftest import ROOT, port_open

sys.path.insert(0, str(ROOT / "bench"))
from stop_under_load import load_and_stop  # noqa: E402

APP = """
import os
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/")
async def index():
    return "Hello, world!"

@app.get("/sync")
def sync_index():
    return "Hello, world!"

@app.shutdown_handler
async def bye():
    print("shutdown handler ran", flush=True)

app.start()
"""


@pytest.mark.parametrize("mode, window, args", [
    ("keep-alive", 1, []),
    ("pipelined", 8, []),
    ("keep-alive, --processes 2", 1, ["--processes", "2"]),
])
def test_sigterm_under_load_loses_no_request(serve, mode, window, args):
    server = serve(APP, args=args)
    if args:
        server.wait_for_output("serving http://127.0.0.1")  # every worker serves
    counts = asyncio.run(load_and_stop("127.0.0.1", server.port, server.pid, connections=64,
                                       window=window, before=1.5, give_up=30))
    code = server.wait(20)
    out = server.output()
    what = f"{mode}: {counts.summary()}"
    assert counts.sent > 1000, what  # it was under load when the signal came
    assert counts.lost == 0, what
    assert counts.other == 0, what
    assert counts.answered + counts.unavailable == counts.sent, what
    assert counts.refused == 64, what  # afterwards every new connection was refused
    assert code == 0, f"{what}\n{out}"
    assert out.count("shutdown handler ran") == (2 if args else 1), out
    assert "Traceback" not in out, out
    assert not port_open(server.port)


# -- the moments that lose requests, one at a time, on raw sockets ------------------------------

SLOW_APP = """
import asyncio
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/")
def index():
    return "ok"

@app.get("/slow/:secs")
async def slow(request):
    await asyncio.sleep(float(request.path_params["secs"]))
    return "slow done"

app.start()
"""

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def read_responses(sock: socket.socket, count: int, timeout: float = 10.0,
                   heads: tuple[int, ...] = ()) -> list[tuple[int, bytes, bytes]]:
    """``count`` responses (status, headers, body; the ones at ``heads`` answer HEAD: no body),
    then a clean end-of-file: ``ConnectionResetError`` here means one could have been cut off."""
    sock.settimeout(timeout)
    data = b""
    found = []
    while len(found) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"end-of-file after {len(found)} of {count} responses: {found}"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = 0 if len(found) in heads else int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        while len(data) < length:
            chunk = sock.recv(65536)
            assert chunk, f"cut off inside response {len(found) + 1}: {head!r}"
            data += chunk
        status = int(head.split(b" ", 2)[1])
        found.append((status, head.lower(), data[:length]))
        data = data[length:]
    assert data == b"", data
    assert sock.recv(65536) == b"", "more bytes than the responses owed"  # clean end-of-file
    return found


def test_keep_alive_request_sent_just_after_the_stop_is_answered(serve):
    # the race of the 64 lost requests: a client that just got an answer without "close" sends
    # its next request while the server decides to close idle connections
    server = serve(SLOW_APP)
    with socket.create_connection(("127.0.0.1", server.port)) as early, \
            socket.create_connection(("127.0.0.1", server.port)) as late:
        for sock in (early, late):
            sock.sendall(GET)
            status, head, _ = read_responses_keep(sock)
            assert status == 200 and b"connection: close" not in head
        server.signal(signal.SIGTERM)
        early.sendall(GET)  # at the very moment: in our receive buffer, or in flight
        time.sleep(0.3)     # within the second a busy connection gets to send its next request
        late.sendall(GET)
        # early may have been answered before the signal was handled (then without "close");
        # either way it is answered and the connection then ends cleanly, never by a reset
        [(status, head, body)] = read_responses(early, 1)
        assert (status, body) == (200, b"ok"), head
        [(status, head, body)] = read_responses(late, 1)
        assert (status, body) == (200, b"ok") and b"connection: close" in head, head
    assert server.wait(10) == 0


def read_responses_keep(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """One response on a connection that stays open."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), head.lower(), body


def test_pipelined_requests_already_received_are_all_answered(serve):
    server = serve(SLOW_APP)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /slow/0.6 HTTP/1.1\r\nHost: x\r\n\r\n" + GET * 3)
        time.sleep(0.3)  # all four are in; the first is in its handler
        server.signal(signal.SIGTERM)
        answers = read_responses(sock, 4)
    assert [(s, b) for s, _, b in answers] == [(200, b"slow done")] + [(200, b"ok")] * 3, answers
    assert all(b"connection: close" in head for _, head, _ in answers), answers
    assert server.wait(10) == 0


def test_after_the_drain_deadline_every_request_received_gets_503(serve):
    server = serve(SLOW_APP, env={"STONECHAT_DRAIN_TIMEOUT": "0.5"})
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /slow/30 HTTP/1.1\r\nHost: x\r\n\r\n" + GET + b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        server.signal(signal.SIGTERM)
        answers = read_responses(sock, 3, heads=(2,))
    assert [s for s, _, _ in answers] == [503, 503, 503], answers
    assert all(b"connection: close" in head for _, head, _ in answers), answers
    assert server.wait(10) == 0
    assert "drain deadline passed: cancelling 1 request(s)" in server.output()
