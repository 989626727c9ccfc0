"""A receive-loop handler busy elsewhere (not in ``receive()``) when its client goes: the
client leaves the endpoint's registry at once, the handler gets ``ws_close_timeout`` and is
then cancelled with a warning (websocket/session.py, ``_AfterClose``: a close callback, not a
task per connection). A real server in a subprocess, a real client.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import websockets

APP = r'''
import asyncio
from stonechat import Robyn

app = Robyn(__file__)
events = []

@app.get("/events")
def get_events():
    return {"events": events,
            "clients": {path: len(ep.clients) for path, ep in app.websocket_hub.endpoints.items()}}

@app.websocket("/busy")
async def busy(ws):
    await ws.send_text("hello " + await ws.receive_text())
    events.append("busy sleeping")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        events.append("busy cancelled")
        raise

app.start(ws_close_timeout=0.5)
'''


def state(server) -> dict:
    return httpx.get(server.url + "/events", timeout=10).json()


def wait_for(server, predicate, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = state(server)
        if predicate(seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not reached: {state(server)}\n{server.output()[-3000:]}")


def test_a_busy_handler_is_cancelled_after_the_close_timeout(serve):
    server = serve(APP)

    async def go():
        async with websockets.connect(server.ws_url + "/busy") as c:
            await c.send("you")
            assert await c.recv() == "hello you"
            wait_for(server, lambda s: "busy sleeping" in s["events"] and s["clients"]["/busy"] == 1)
    asyncio.run(asyncio.wait_for(go(), 30))
    closed_at = time.monotonic()
    # gone from the registry once closed, while the handler still sleeps
    wait_for(server, lambda s: s["clients"]["/busy"] == 0)
    seen = wait_for(server, lambda s: "busy cancelled" in s["events"])
    assert time.monotonic() - closed_at >= 0.4  # not before its ws_close_timeout
    assert seen["events"].count("busy cancelled") == 1
    server.wait_for_output("still running 0.5 s after the close; cancelling it")
