"""Streamed request bodies (``stream_body=True``: ``request.stream()``, ``request.stream_form()``)
on the real server, with raw-socket clients that generate their bodies as they send them:
a 2 GiB multipart upload goes to disk while the server's memory stays flat, a slow handler
stops the client's sends (flow control) instead of the server buffering, ``max_body_size``
still answers 413, and routes without the option behave as before."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import httpx
import pytest

from conftest import rss_kib

APP = r'''
import asyncio, hashlib, os
from stonechat import FormField, Robyn, UploadFile

app = Robyn(__file__)
gate = asyncio.Event()
progress = {"read": 0}

@app.post("/count", stream_body=True)
async def count(request):
    n = chunks = 0
    async for chunk in request.stream():
        n += len(chunk)
        chunks += 1
    return {"bytes": n, "chunks": chunks}

@app.post("/form", stream_body=True)
async def form(request):
    parts = []
    async for part in request.stream_form(spool_max_size=int(request.query_params.get("spool", "1048576"))):
        if isinstance(part, UploadFile):
            data = await part.read()
            parts.append({"field": part.field, "filename": part.filename, "type": part.content_type,
                          "size": part.size, "in_memory": part.in_memory, "sha": hashlib.sha256(data).hexdigest()})
            await part.close()
        else:
            parts.append({"field": part.name, "value": part.value})
    return {"parts": parts}

@app.post("/big", stream_body=True)
async def big(request):
    found = []
    async for part in request.stream_form():
        if isinstance(part, UploadFile):
            found.append({"size": part.size, "in_memory": part.in_memory})
            await part.close()
    return {"files": found}

@app.post("/slow", stream_body=True)
async def slow(request):
    stream = request.stream()
    async for chunk in stream:
        progress["read"] += len(chunk)
        if not gate.is_set():
            await gate.wait()  # the handler is slower than the client, until /release
    return {"bytes": progress["read"]}

@app.get("/progress")
def get_progress():
    return progress

@app.get("/release")
def release():
    gate.set()
    return "released"

@app.post("/early", stream_body=True)
async def early(request):
    return "answered without reading"

@app.post("/buffered")
def buffered(request):
    return {"body": request.text()}

@app.post("/buffered-stream")
async def buffered_stream(request):
    chunks = [c async for c in request.stream()]
    return {"chunks": len(chunks), "body": b"".join(chunks).decode()}

app.start()
'''

MiB = 1024 * 1024
BOUNDARY = b"stonechat-test-boundary-7e3f"


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP, name="streamed.py", env={"STONECHAT_MAX_BODY_SIZE": str(3 * 1024 * MiB)})




def read_response(sock: socket.socket, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
    """Status, head and body of one response with Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(head.split()[1]), head, body


def multipart_head(length_of_file: int) -> tuple[bytes, bytes, int]:
    first = (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
             b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"blob\"; filename=\"big.bin\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n")
    last = b"\r\n--" + BOUNDARY + b"--\r\n"
    return first, last, len(first) + length_of_file + len(last)


def test_two_gib_upload_goes_to_disk_with_flat_memory(server):
    # warm up (imports, first allocations), then measure from there
    small = httpx.post(server.url + "/big", files={"blob": ("s.bin", b"x" * 1000)}, timeout=30)
    assert small.json() == {"files": [{"size": 1000, "in_memory": True}]}
    baseline = rss_kib(server.pid)
    peak = [baseline]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(server.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    size = 2 * 1024 * MiB
    first, last, length = multipart_head(size)
    block = os.urandom(MiB)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                         b"Content-Length: %d\r\n\r\n" % (BOUNDARY, length))
            sock.sendall(first)
            for _ in range(size // MiB):  # the body is made as it is sent: never 2 GiB at once
                sock.sendall(block)
            sock.sendall(last)
            status, _, body = read_response(sock, timeout=300)
    finally:
        stop.set()
        watcher.join()
    assert status == 200, body
    assert httpx.Response(200, content=body).json() == {"files": [{"size": size, "in_memory": False}]}
    growth_mib = (peak[0] - baseline) / 1024
    print(f"2 GiB upload: server RSS {baseline // 1024} MiB before, peak growth {growth_mib:.1f} MiB")
    assert growth_mib < 50, f"server RSS grew by {growth_mib:.1f} MiB during a 2 GiB upload"


def test_slow_handler_stops_the_client_instead_of_buffering(server):
    total = 40 * MiB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        sock.setblocking(False)
        block = b"z" * 65536
        sent = 0
        last_progress = time.monotonic()
        deadline = last_progress + 60
        while time.monotonic() - last_progress < 1.5:  # until no progress for 1.5 s
            assert time.monotonic() < deadline, f"sends never stopped ({sent} bytes sent)"
            try:
                n = sock.send(block[: min(len(block), total - sent)])
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent += n
            last_progress = time.monotonic()
            assert sent < total, "the whole body was accepted: the server buffered it"
        assert sent < 16 * MiB, f"{sent} bytes accepted before the client was stopped"
        print(f"sends stopped after {sent} bytes")
        read_so_far = httpx.get(server.url + "/progress", timeout=10).json()["read"]
        assert 0 < read_so_far <= 512 * 1024  # the handler took its first chunk(s), then waited
        # release the handler: everything flows, nothing was lost
        assert httpx.get(server.url + "/release", timeout=10).text == "released"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
        sock.setblocking(True)
        sock.settimeout(60)
        while sent < total:
            sent += sock.send(block[: min(len(block), total - sent)])
        status, _, body = read_response(sock)
    finally:
        sock.close()
    assert status == 200
    assert httpx.Response(200, content=body).json() == {"bytes": total}


def test_chunked_stream_and_the_form_parts(server):
    def gen():
        for i in range(50):
            yield bytes([65 + i % 26]) * 10000
    r = httpx.post(server.url + "/count", content=gen(), timeout=30)  # chunked: no Content-Length
    assert r.json()["bytes"] == 500000
    payload = os.urandom(3 * MiB)
    r = httpx.post(server.url + "/form?spool=1048576", data={"a": "1", "b": "zwei"},
                   files={"doc": ("d.bin", payload, "application/x-test"), "small": ("s.txt", b"tiny", "text/plain")},
                   timeout=30)
    parts = r.json()["parts"]
    assert {"field": "a", "value": "1"} in parts and {"field": "b", "value": "zwei"} in parts
    doc = next(p for p in parts if p.get("filename") == "d.bin")
    assert doc["size"] == len(payload) and doc["in_memory"] is False
    assert doc["sha"] == hashlib.sha256(payload).hexdigest() and doc["type"] == "application/x-test"
    small = next(p for p in parts if p.get("filename") == "s.txt")
    assert small["in_memory"] is True and small["sha"] == hashlib.sha256(b"tiny").hexdigest()


def test_an_answer_before_the_body_ends_closes_the_connection(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000)
        status, head, body = read_response(sock, timeout=20)
    assert status == 200 and body == b"answered without reading"
    assert b"connection: close" in head.lower()


def test_routes_without_stream_body_are_unchanged(server):
    assert httpx.post(server.url + "/buffered", content=b"plain body", timeout=10).json() == {"body": "plain body"}
    assert httpx.post(server.url + "/buffered-stream", content=b"whole", timeout=10).json() == {"chunks": 1, "body": "whole"}


def test_max_body_size_and_body_timeout_on_a_streamed_route(serve):
    proc = serve(APP, env={"STONECHAT_MAX_BODY_SIZE": str(MiB), "STONECHAT_BODY_TIMEOUT": "3"})
    # announced too large: refused before a byte of the body is read
    with socket.create_connection(("127.0.0.1", proc.port)) as sock:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (2 * MiB))
        status, _, body = read_response(sock, timeout=20)
    assert status == 413 and b"too large" in body
    # chunked: the stream raises past the limit; the handler's uncaught error answers 413
    with socket.create_connection(("127.0.0.1", proc.port)) as sock:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"y" * 65536
        sent = 0
        try:
            while sent < 2 * MiB:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close its side once it answered
        status, head, body = read_response(sock, timeout=20)
    assert status == 413 and b"Request body too large" in body
    assert b"connection: close" in head.lower()
    # the server is fine afterwards
    assert httpx.post(proc.url + "/count", content=b"ok", timeout=10).json() == {"bytes": 2, "chunks": 1}
    # a client that stops sending mid-body: the handler's stream raises, the answer is 408
    with socket.create_connection(("127.0.0.1", proc.port)) as sock:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        status, head, body = read_response(sock, timeout=20)
    assert status == 408 and b"Request body timeout" in body
    # Deadlines are checked on the server's once-a-second tick against a clock read at the
    # tick, so the answer may come up to a tick (more on a loaded machine) early or late.
    assert 1.5 < time.monotonic() - started < 12
