"""``app.asgi`` under Granian (``granian --interface asgi``) and Hypercorn: a smoke test each, real
processes — HTTP routes and bodies, a streamed response, a WebSocket with close code and reason
both ways, a refused handshake, and startup/shutdown handlers around it all.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgi_servers import read_lines, start, wait_until

APP = r'''
import asyncio
import os

from stonechat import Request, Response, Robyn, StreamingResponse, WebSocketDisconnect

EVENTS = os.environ["EVENTS_FILE"]


def note(what):
    with open(EVENTS, "a") as f:
        f.write(what + "\n")


app = Robyn(__file__)


@app.startup_handler
async def opened():
    note("startup")


@app.shutdown_handler
async def closed():
    note("shutdown")


@app.get("/user/:id")
def user(id: int):
    return {"id": id}


@app.post("/echo")
def echo(request: Request):
    return Response(200, {"content-type": "application/octet-stream"}, request.body)


@app.get("/stream")
async def stream():
    async def parts():
        for i in range(3):
            yield f"part {i}\n"
            await asyncio.sleep(0.01)
    return StreamingResponse(parts(), media_type="text/plain")


@app.websocket("/ws")
async def ws(socket):
    try:
        while True:
            message = await socket.receive_text()
            if message == "close please":
                await socket.close(4001, "asked to")
                return
            await socket.send_text("echo " + message)
    except WebSocketDisconnect as exc:
        note(f"ws disconnect {exc.code}")


@ws.on_connect
def ws_connect(socket):
    if socket.query_params.get("deny", "") == "1":
        return Response(403, {}, "go away")
    return None
'''


@pytest.mark.parametrize("which", ["granian", "hypercorn"])
def test_smoke(which, serve, tmp_path):
    events = tmp_path / "events.txt"
    proc = start(serve, which, APP, env={"EVENTS_FILE": str(events)})
    assert read_lines(events) == ["startup"]
    with httpx.Client(base_url=proc.url, timeout=10) as c:
        assert c.get("/user/3").json() == {"id": 3}
        body = bytes(range(256)) * 100
        assert c.post("/echo", content=body).content == body
        with c.stream("GET", "/stream") as r:
            assert r.status_code == 200 and "".join(r.iter_text()) == "part 0\npart 1\npart 2\n"

    async def talk():
        async with websockets.connect(proc.ws_url + "/ws") as socket:
            await socket.send("hi")
            assert await socket.recv() == "echo hi"
            await socket.send("close please")
            with pytest.raises(ConnectionClosed):
                await socket.recv()
            server_close = (socket.close_code, socket.close_reason)
        async with websockets.connect(proc.ws_url + "/ws") as socket:
            await socket.send("x")
            await socket.recv()
            await socket.close(4002, "client done")
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(proc.ws_url + "/ws?deny=1"):
                pass
        return server_close, refused.value.response.status_code

    server_close, refused_status = asyncio.run(talk())
    assert server_close == (4001, "asked to")
    assert refused_status == 403
    # The client's close code as the ASGI server reports it: Hypercorn 0.18 says 1006 whatever
    # the client sent (its own limit; its raw websocket.disconnect event carries 1006 too).
    code = 1006 if which == "hypercorn" else 4002
    wait_until(lambda: f"ws disconnect {code}" in read_lines(events), what="the client's close code in the app")
    proc.signal(signal.SIGTERM)
    proc.wait(20)
    assert read_lines(events)[-1] == "shutdown", proc.output()
