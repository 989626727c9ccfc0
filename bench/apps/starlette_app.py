"""The benchmark scenarios on Starlette, served by uvicorn (uvloop + httptools) or Granian (ASGI).

Same routes as http_app.py / ws_app.py, async endpoints only: Starlette runs a plain `def`
endpoint in a thread pool (anyio.to_thread), a different mechanism from the sync handlers
of stonechat, Robyn, socketify and Sanic, which run on the event loop; so this peer has one
form. Written as Starlette's docs show: `PlainTextResponse` / `JSONResponse` (the standard
library's json), `request.path_params`, `request.query_params`, `request.headers`,
`await request.body()`, and a WebSocket endpoint that loops on `receive_text()`.

The server is chosen by the command line (bench/run.py builds it):
    uvicorn starlette_app:app --loop uvloop --http httptools --ws websockets-sansio
    granian --interface asgi --loop uvloop starlette_app:app
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

HELLO = "Hello, world!"


async def index(request):
    return PlainTextResponse(HELLO)


async def json_hello(request):
    return JSONResponse({"message": HELLO})


async def user(request):
    return JSONResponse({"id": request.path_params["id"]})


async def query(request):
    return JSONResponse({"name": request.query_params.get("name", ""),
                         "token": request.headers.get("x-token")})


async def echo(request):
    return Response(await request.body(), media_type="text/plain")


async def ws_echo(websocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[
    Route("/", index),
    Route("/json", json_hello),
    Route("/user/{id}", user),
    Route("/q", query),
    Route("/echo", echo, methods=["POST"]),
    WebSocketRoute("/ws", ws_echo),
])
