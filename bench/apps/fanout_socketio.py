"""Fan-out benchmark app (python-socketio 5 + AsyncRedisManager, ASGI under uvicorn): every
client joins room "fan" on connect. Run from bench/.venv-socketio (bench/fanout.py makes it)."""

import os

import socketio

manager = socketio.AsyncRedisManager(os.environ["REDIS_URL"])
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins=[])
app = socketio.ASGIApp(sio)


@sio.event
async def connect(sid, environ, auth=None):
    await sio.enter_room(sid, "fan")
