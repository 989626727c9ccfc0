"""WebSocket broadcast under ``--processes N``: clients accepted by different workers of one
server all get it (server/peers.py carries it between the workers), in order, bursts included;
other endpoints do not; the workers' private socket directory is gone after a clean stop.

The test puts clients on both workers deterministically: a client asks its worker to block its
event loop for a moment, so the connection opened meanwhile is accepted by the other one.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat

import pytest
import websockets

APP = """
import os
import time
from stonechat import Robyn, WebSocketDisconnect

app = Robyn(__file__)

@app.websocket("/chat")
async def chat(ws):
    try:
        while True:
            msg = await ws.receive()
            if msg == "pid":
                await ws.send_text(f"pid={os.getpid()}")
            elif msg == "block":
                time.sleep(1.0)  # this worker cannot accept: the next client goes to the other
                await ws.send_text("unblocked")
            elif msg == "stall":
                time.sleep(3.0)  # a worker whose loop is stuck: it reads nothing from its peers
                await ws.send_text("unstalled")
            elif msg == "big":
                for i in range(24):  # 24 MiB: more than a stuck peer may have queued (16 MiB)
                    await ws.broadcast(bytes([i]) * (1024 * 1024))
                await ws.send_text("big done")
            elif msg == "burst":
                for i in range(300):
                    await ws.broadcast(f"b{i}")
            elif isinstance(msg, bytes):
                await ws.broadcast(msg)
            else:
                await ws.send_text(f"local={await ws.broadcast(msg)}")
    except WebSocketDisconnect:
        pass

@app.websocket("/other")
async def other(ws):
    await ws.send_text(f"pid={os.getpid()}")
    try:
        while True:
            await ws.receive()
    except WebSocketDisconnect:
        pass

app.start()
"""


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def pid_of(client) -> int:
    await client.send("pid")
    answer = await client.recv()
    assert answer.startswith("pid="), answer
    return int(answer[4:])


async def on_other_worker(url: str, first, first_pid: int):
    """A client on the worker that ``first`` is not on."""
    for _ in range(5):
        await first.send("block")
        await asyncio.sleep(0.2)  # the block has begun
        client = await websockets.connect(url)
        assert await first.recv() == "unblocked"
        if await pid_of(client) != first_pid:
            return client
        await client.close()
    raise AssertionError("could not get a client onto the second worker")


async def recv_text(client, timeout=5.0):
    return await asyncio.wait_for(client.recv(), timeout)


async def say(client, text: str) -> None:
    """Broadcast ``text`` from ``client`` and take what comes back to it (its copy, the count)."""
    await client.send(text)
    assert await recv_text(client) == text
    assert (await recv_text(client)).startswith("local=")


def test_broadcast_reaches_clients_of_every_worker(serve, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    server = serve(APP, args=["--processes", "2"], env={"TMPDIR": str(tmpdir)})
    server.wait_for_output("serving http://127.0.0.1")
    [peer_dir] = list(tmpdir.glob("stonechat-peers-*"))
    assert stat.S_IMODE(os.stat(peer_dir).st_mode) == 0o700  # only this user reaches the sockets
    url = server.ws_url + "/chat"

    async def go():
        a = await websockets.connect(url)
        pid_a = await pid_of(a)
        b = await on_other_worker(url, a, pid_a)
        a2 = None
        for _ in range(10):  # a second client on a's worker, if the kernel puts one there
            c = await websockets.connect(url)
            if await pid_of(c) == pid_a:
                a2 = c
                break
            await c.close()
        o = await websockets.connect(server.ws_url + "/other")
        await o.recv()

        await a.send("hello from a")
        assert await recv_text(a) == "hello from a"
        local = await recv_text(a)
        assert local == ("local=2" if a2 else "local=1")  # broadcast() counts this process's clients
        assert await recv_text(b) == "hello from a"
        if a2:
            assert await recv_text(a2) == "hello from a"

        await b.send("hi from b")
        assert await recv_text(a) == "hi from b"
        assert await recv_text(b) == "hi from b"
        assert await recv_text(b) == "local=1"

        await a.send(b"\x00\xffbinary")
        assert await recv_text(a) == b"\x00\xffbinary"
        assert await recv_text(b) == b"\x00\xffbinary"

        # A burst: every message, in order, on the other worker too (no queue to overflow).
        await a.send("burst")
        expected = [f"b{i}" for i in range(300)]
        assert [await recv_text(b) for _ in range(300)] == expected
        assert [await recv_text(a) for _ in range(300)] == expected

        # The other endpoint heard none of it.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(o.recv(), 0.5)
        for client in (a, b, o) + ((a2,) if a2 else ()):
            await client.close()

    run(go())
    assert server.stop() == 0
    assert not peer_dir.exists()
    assert "missed" not in server.output()


def test_broadcast_after_a_worker_restarts(serve):
    server = serve(APP, args=["--processes", "2"])
    server.wait_for_output("serving http://127.0.0.1")
    url = server.ws_url + "/chat"

    async def go():
        a = await websockets.connect(url)
        pid_a = await pid_of(a)
        b = await on_other_worker(url, a, pid_a)
        await say(a, "before")
        assert await recv_text(b) == "before"
        pid_b = await pid_of(b)
        os.kill(pid_b, 9)  # the supervisor restarts it; a's worker must reach the new one
        for _ in range(50):
            if server.output().count("started (pid") >= 3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        c = await on_other_worker(url, a, pid_a)
        assert await pid_of(c) not in (pid_a, pid_b)
        # The first publish after the restart may find the old connection dead and reconnect;
        # repeat until the new worker's client hears one (bounded), then every one arrives.
        for i in range(20):
            await say(a, f"after {i}")
            try:
                got = await recv_text(c, 0.6)
            except asyncio.TimeoutError:
                continue
            assert got.startswith("after ")
            break
        else:
            raise AssertionError(f"no broadcast reached the restarted worker:\n{server.output()[-3000:]}")
        await say(a, "steady")
        while (got := await recv_text(c)) != "steady":
            assert got.startswith("after ")
        for client in (a, c):
            await client.close()

    run(go())
    assert server.stop() == 0


def test_a_stuck_worker_neither_stalls_broadcast_nor_grows_memory(serve):
    server = serve(APP, args=["--processes", "2"])
    server.wait_for_output("serving http://127.0.0.1")
    url = server.ws_url + "/chat"

    async def go():
        a = await websockets.connect(url, max_size=None)
        pid_a = await pid_of(a)
        b = await on_other_worker(url, a, pid_a)
        await b.send("stall")  # b's worker now sleeps 3 s without reading anything
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await a.send("big")
        got = [await recv_text(a) for _ in range(24)]
        assert [m[0] for m in got] == list(range(24)) and all(len(m) == 1024 * 1024 for m in got)
        assert await recv_text(a) == "big done"
        # All of it reached a's own clients while b's worker was still asleep.
        assert asyncio.get_running_loop().time() - started < 2.5
        assert await recv_text(b, 10) == "unstalled"
        # b's worker then gets what was queued for it, in order; what went over the bound is missed.
        firsts = []
        while True:
            try:
                firsts.append((await recv_text(b, 2))[0])
            except asyncio.TimeoutError:
                break
        assert firsts == sorted(firsts) and 0 < len(firsts) < 24, firsts
        await a.close()
        await b.close()

    run(go())
    server.wait_for_output("missed")
    assert re.search(r"worker \d missed \d+ message\(s\) from worker \d: (it is not reading|still connecting)",
                     server.output())
    assert server.stop() == 0


def test_peers_unavailable_is_a_warning_not_a_failure(serve, tmp_path):
    # A socket path longer than AF_UNIX allows (108 bytes): workers serve, broadcasts stay local.
    tmpdir = tmp_path / ("d" * 60) / ("e" * 60)
    tmpdir.mkdir(parents=True)
    server = serve(APP, args=["--processes", "2"], env={"TMPDIR": str(tmpdir)})
    server.wait_for_output("serving http://127.0.0.1")
    out = server.wait_for_output("no messages between worker processes", count=2)
    assert "reach this process's clients only" in out

    async def go():
        async with websockets.connect(server.ws_url + "/chat") as a:
            await a.send("hello")
            assert await recv_text(a) == "hello"
            assert await recv_text(a) == "local=1"
    run(go())
    assert server.stop() == 0
