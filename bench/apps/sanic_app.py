"""The benchmark scenarios on Sanic.

Same routes as http_app.py / ws_app.py: async handlers at /, /json, /user/<id>, /q, /echo and
the WebSocket echo at /ws; plain `def` handlers at /sync/... (Sanic calls a handler and awaits
the result only if it is awaitable, so a `def` handler runs on the event loop, as in
stonechat and Robyn). WebSocket handlers are async only in Sanic. Written as Sanic's docs
show: `text()` / `json()` responses (Sanic's default JSON dumps), `request.args.get`,
`request.headers.get`, `request.body`, a WebSocket handler looping on `ws.recv()`.

Run in one process (`single_process=True`: no worker manager), no access log, no banner,
debug off. Port from env BENCH_PORT, host 127.0.0.1; run from bench/.venv-sanic.
"""

import os

from sanic import Sanic
from sanic.response import json, raw, text

HELLO = "Hello, world!"

app = Sanic("bench")


@app.get("/")
async def index(request):
    return text(HELLO)


@app.get("/json")
async def json_hello(request):
    return json({"message": HELLO})


@app.get("/user/<id>")
async def user(request, id):
    return json({"id": id})


@app.get("/q")
async def query(request):
    return json({"name": request.args.get("name", ""), "token": request.headers.get("x-token")})


@app.post("/echo")
async def echo(request):
    return raw(request.body, content_type="text/plain; charset=utf-8")


@app.get("/sync")
def sync_index(request):
    return text(HELLO)


@app.get("/sync/json")
def sync_json_hello(request):
    return json({"message": HELLO})


@app.get("/sync/user/<id>")
def sync_user(request, id):
    return json({"id": id})


@app.get("/sync/q")
def sync_query(request):
    return json({"name": request.args.get("name", ""), "token": request.headers.get("x-token")})


@app.post("/sync/echo")
def sync_echo(request):
    return raw(request.body, content_type="text/plain; charset=utf-8")


@app.websocket("/ws")
async def ws_echo(request, ws):
    async for msg in ws:
        await ws.send(msg)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), single_process=True,
            access_log=False, debug=False, motd=False)
