"""The app the room tests run (any engine: STONECHAT_BROKER picks it). Commands are text
messages; every answer to a command starts with ``= `` so tests can tell it from room traffic."""

import asyncio
import json
import os
import time

from stonechat import BrokerOverloaded, Robyn, WebSocket, WebSocketDisconnect

app = Robyn(__file__)


async def command(ws, text: str) -> None:
    cmd, _, arg = text.partition(" ")
    if cmd == "join":
        room, _, info = arg.partition(" ")
        result = await ws.join(room, info=json.loads(info) if info else None)
        await ws.send_text(f"= joined {room} {result}")
    elif cmd == "joina":  # with join/leave announcements
        room, _, info = arg.partition(" ")
        await ws.join(room, info=json.loads(info) if info else None, announce=True)
        await ws.send_text(f"= joined {room}")
    elif cmd == "joinmany":
        prefix, _, spec = arg.partition(" ")
        start, stop, step = (int(x) for x in spec.split(":"))
        for i in range(start, stop, step):
            ws.join(f"{prefix}{i}")  # not awaited: the sync form
        await asyncio.gather(*(ws.join(f"{prefix}{i}") for i in range(start, stop, step)))
        await ws.send_text(f"= joined {len(ws.rooms)}")
    elif cmd == "leave":
        await ws.send_text(f"= left {arg} {ws.leave(arg)}")
    elif cmd == "say":
        room, _, message = arg.partition(" ")
        await ws.broadcast(message, room=room)
    elif cmd == "burst":
        room, n, tag = arg.split(" ")
        rejected = 0
        for i in range(int(n)):
            try:
                await ws.broadcast(f"{tag}{i}", room=room)
            except BrokerOverloaded:
                rejected += 1
        await ws.send_text(f"= burst done {rejected}")
    elif cmd == "all":  # the endpoint, every process
        await ws.broadcast(arg)
    elif cmd == "id":
        await ws.send_text(f"= id {ws.id}")
    elif cmd == "pid":
        await ws.send_text(f"= pid {os.getpid()}")
    elif cmd == "to":
        target, _, message = arg.partition(" ")
        await ws.send_text(f"= sent {await ws.send_to(target, message)}")
    elif cmd == "rooms":
        await ws.send_text("= rooms " + json.dumps(sorted(ws.rooms)))
    elif cmd == "echo":
        await ws.send_text("= echo " + arg)
    elif cmd == "hold":  # block this process's loop until the test creates the file ``arg``
        deadline = time.monotonic() + 60
        while not os.path.exists(arg) and time.monotonic() < deadline:
            time.sleep(0.01)
        await ws.send_text("= released")
    elif cmd == "block":
        time.sleep(float(arg))
        await ws.send_text("= unblocked")
    elif cmd == "crash":
        raise RuntimeError("handler crash on purpose")
    elif cmd == "since":  # join with a position on a non-recovery endpoint: refused
        try:
            ws.join("x", since="e:1")
        except ValueError as exc:
            await ws.send_text(f"= error {exc}")


@app.websocket("/chat")
async def chat(ws):
    try:
        while True:
            await command(ws, await ws.receive_text())
    except WebSocketDisconnect:
        pass


@app.websocket("/rec", recovery=True)
async def rec(ws, room: str = "r", since: str = ""):
    try:
        await ws.join(room, since=since or None)
        while True:
            await command(ws, await ws.receive_text())
    except WebSocketDisconnect:
        pass


cb = WebSocket(app, "/cb")


@cb.on("connect")
def cb_connect(ws):
    room = ws.query_params.get("room", None)
    if room:
        ws.join(room, info={"style": "callbacks"})  # before the upgrade: joined right after it
    return None


@cb.on("message")
def cb_message(ws, msg):
    cmd, _, arg = msg.partition(" ")
    if cmd == "say":
        room, _, message = arg.partition(" ")
        ws.sync_broadcast(message, room=room)
    elif cmd == "to":
        target, _, message = arg.partition(" ")
        return f"= sent {ws.sync_send_to(target, message)}"
    elif cmd == "id":
        return f"= id {ws.id}"
    elif cmd == "rooms":
        return "= rooms " + json.dumps(sorted(ws.rooms))
    elif cmd == "leave":
        return f"= left {arg} {ws.sync_leave(arg)}"
    return None


@app.get("/members/:room")
async def members(request):
    room = app.room(request.path_params["room"])
    return {"members": await room.members(), "count": await room.count()}


@app.post("/send/:room")
async def send(request):
    position = await app.room(request.path_params["room"]).send(request.body)
    return {"position": str(position) if position else None}


@app.post("/threaded/:room", threaded=True)
def send_from_a_thread(request):
    position = app.room(request.path_params["room"]).send(request.body).result(10)
    return {"position": str(position) if position else None}


@app.get("/status")
def status():
    return app.broker_status().as_dict()


@app.get("/block")
def block(request):
    time.sleep(float(request.query_params.get("s", "1")))
    return "unblocked"


ticker_task = None


@app.startup_handler
async def start_ticker():
    if not os.environ.get("TICKER"):
        return

    async def tick():
        n = 0
        while True:
            await asyncio.sleep(0.05)
            n += 1
            app.room("ticks").send(f"tick {n}")  # from a task outside any handler, not awaited

    global ticker_task
    ticker_task = asyncio.ensure_future(tick())


@app.shutdown_handler
async def report():
    if ticker_task is not None:
        ticker_task.cancel()
    print(f"at shutdown: lobby count={await app.room('lobby').count()}", flush=True)


app.start()
