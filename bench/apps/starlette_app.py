"""The bench scenarios as a plain Starlette app, for serving the same ASGI app three ways:

    uvicorn --loop uvloop --http httptools starlette_app:app      # (a) uvicorn
    granian --interface asgi starlette_app:app                    # (b) Granian
    python mount_app.py                                           # (c) stonechat's server, mount("/", app)

Same routes and answers as http_app.py / ws_app.py: GET / (text), /json, /user/{id}, /q?name=
(query + x-token header), POST /echo (body back), WebSocket /ws (echo).
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

HELLO = "Hello, world!"


async def index(request: Request) -> Response:
    return PlainTextResponse(HELLO)


async def json_hello(request: Request) -> Response:
    return JSONResponse({"message": HELLO})


async def user(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"]})


async def query(request: Request) -> Response:
    return JSONResponse({"name": request.query_params.get("name", ""), "token": request.headers.get("x-token")})


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="text/plain")


async def ws(websocket: WebSocket) -> None:
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
    WebSocketRoute("/ws", ws),
])
