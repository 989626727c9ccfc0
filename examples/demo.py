"""The demo app `make run` starts: a tour of stonechat's API, and the app the conformance
checkers (shared/tools/httpcheck.py, wscheck.py) run against. Its API is documented at
http://127.0.0.1:8080/docs (the spec: /openapi.json), from the annotations below."""

import asyncio
from typing import TypedDict

from stonechat import JsonBody, Request, Response, Robyn, StreamingResponse

app = Robyn(__file__)


class Message(TypedDict):
    message: str


@app.get("/")
async def index() -> str:
    """Plain text."""
    return "Hello, world!"


@app.get("/json", openapi_name="Hello as JSON")
def json_route() -> Message:
    """A JSON object."""
    return {"message": "Hello, world!"}


class UserOut(TypedDict):
    id: int


@app.get("/user/:id")
def user(id: int) -> UserOut:
    """A path parameter, converted to int (400 if it is not one)."""
    return {"id": id}


class Greeting(JsonBody):
    name: str


@app.post("/greet", responses={200: {"description": "A greeting", "model": Message}, 422: "name is not a string"})
def greet(data: Greeting):
    """A JSON body (400 if it is not JSON); the handler checks it."""
    name = data.get("name", "world") if isinstance(data, dict) else None
    if not isinstance(name, str):
        return Response(422, {"content-type": "text/plain; charset=utf-8"}, "name is not a string\n")
    return Message(message=f"Hello, {name}!")


@app.get("/q")
def query(request: Request):
    return {"name": request.query_params.get("name", ""), "token": request.headers.get("x-token")}


@app.post("/echo")
def echo(request: Request):
    return Response(200, {"content-type": request.headers.get("content-type", "application/octet-stream")},
                    request.body)


@app.get("/slow")
async def slow() -> str:
    await asyncio.sleep(0.5)
    return "slow"


BIG = b"x" * (1024 * 1024)


@app.get("/big")
def big() -> bytes:
    return BIG


@app.get("/stream")
def stream():
    async def chunks():
        for i in range(10):
            yield f"chunk {i}\n"
    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/nocontent", status_code=204)
def nocontent():
    return Response(204, {}, b"")


@app.get("/notmodified", status_code=304)
def notmodified():
    return Response(304, {"etag": '"v1"'}, b"")


class Health(TypedDict):
    status: str


@app.get("/health", const=True)
def health() -> Health:
    return {"status": "ok"}


# WebSocket echo (text -> text, binary -> binary): `python3 ../shared/tools/wscheck.py ws://127.0.0.1:8080/ws`
from stonechat import WebSocketDisconnect  # noqa: E402


@app.websocket("/ws")
async def ws_echo(websocket):
    try:
        while True:
            await websocket.send(await websocket.receive())
    except WebSocketDisconnect:
        pass


if __name__ == "__main__":
    app.start(host="127.0.0.1", port=8080)
