"""A real FastAPI app mounted at ``/api`` beside stonechat routes (issue #10, part 2 proof):
pydantic models (validation errors are FastAPI's 422), its own ``/docs`` and OpenAPI document
under the mount's ``root_path``, a WebSocket route, and a lifespan that opens an asyncpg pool on
the local PostgreSQL at stonechat's startup and closes it at shutdown (the pool's connections are
found in ``pg_stat_activity`` by a unique ``application_name``, then seen gone).

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database ``test``); fails loudly without it.
"""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import httpx
import pytest
import websockets

from asgi_servers import read_lines, start, wait_until

DSN = "postgresql://postgres@127.0.0.1:5432/test"

APP = r'''
import os
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from stonechat import Robyn

EVENTS = os.environ["EVENTS_FILE"]
DSN = os.environ["PG_DSN"]
NAME = os.environ["PG_APP_NAME"]


def note(what):
    with open(EVENTS, "a") as f:
        f.write(what + "\n")


@asynccontextmanager
async def lifespan(api):
    pool = await asyncpg.create_pool(DSN, min_size=2, max_size=2, server_settings={"application_name": NAME})
    api.state.pool = pool
    note("pool opened")
    yield
    await pool.close()
    note("pool closed")


api = FastAPI(title="Inventory", lifespan=lifespan)


class Item(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(ge=0)


class Stored(Item):
    total: int


@api.post("/items", response_model=Stored)
async def create_item(item: Item, request: Request):
    async with request.app.state.pool.acquire() as conn:
        total = await conn.fetchval("SELECT $1::int * 2", item.quantity)
    return Stored(name=item.name, quantity=item.quantity, total=total)


@api.get("/items/{item_id}")
async def read_item(item_id: int, q: str = ""):
    return {"item_id": item_id, "q": q}


@api.get("/db")
async def db(request: Request):
    async with request.app.state.pool.acquire() as conn:
        name = await conn.fetchval("SELECT current_setting('application_name')")
    return {"application_name": name}


@api.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"echo": data, "via": "fastapi"})
    except WebSocketDisconnect as exc:
        note(f"fastapi ws closed {exc.code}")


app = Robyn(__file__)


@app.get("/native")
def native():
    return {"served_by": "stonechat"}


app.mount("/api", api)

if __name__ == "__main__":
    app.start()
'''


async def pool_connections(name: str) -> int:
    conn = await asyncpg.connect(DSN)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name)
    finally:
        await conn.close()


@pytest.fixture
def fastapi_server(serve, tmp_path):
    asyncio.run(pool_connections("probe"))  # fails loudly when PostgreSQL is not there
    name = f"stonechat-asgi-{uuid.uuid4().hex[:8]}"
    events = tmp_path / "events.txt"
    proc = start(serve, "stonechat", APP,
                 env={"EVENTS_FILE": str(events), "PG_DSN": DSN, "PG_APP_NAME": name})
    proc.events = events
    proc.pg_name = name
    return proc


def test_fastapi_mounted_beside_stonechat_routes(fastapi_server):
    server = fastapi_server
    assert read_lines(server.events) == ["pool opened"]  # the lifespan ran before serving
    assert asyncio.run(pool_connections(server.pg_name)) == 2
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/native").json() == {"served_by": "stonechat"}
        r = c.post("/api/items", json={"name": "bolt", "quantity": 21})
        assert r.status_code == 200 and r.json() == {"name": "bolt", "quantity": 21, "total": 42}
        r = c.post("/api/items", json={"name": "", "quantity": -1})
        assert r.status_code == 422 and {e["loc"][-1] for e in r.json()["detail"]} == {"name", "quantity"}
        assert c.get("/api/items/5", params={"q": "x"}).json() == {"item_id": 5, "q": "x"}
        assert c.get("/api/items/five").status_code == 422
        assert c.get("/api/db").json() == {"application_name": server.pg_name}
        docs = c.get("/api/docs")
        assert docs.status_code == 200 and "/api/openapi.json" in docs.text  # root_path at work
        spec = c.get("/api/openapi.json").json()
        assert spec["info"]["title"] == "Inventory" and "/items" in spec["paths"]

    async def talk():
        async with websockets.connect(server.ws_url + "/api/ws") as ws:
            await ws.send('{"n": 1}')
            assert await ws.recv() == '{"echo":{"n":1},"via":"fastapi"}'
            await ws.close(1000)
    asyncio.run(talk())
    wait_until(lambda: "fastapi ws closed 1000" in read_lines(server.events), what="FastAPI's disconnect")

    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0, server.output()
    assert read_lines(server.events)[-1] == "pool closed"  # the lifespan's exit ran at shutdown
    assert asyncio.run(pool_connections(server.pg_name)) == 0
    assert "running lifespan mounted app FastAPI at /api" in server.output()
