"""The demo app `make run` starts: a tour of stonechat's API, and the app the conformance
checkers (shared/tools/httpcheck.py, wscheck.py) run against."""

import asyncio

from stonechat import Request, Response, Robyn, StreamingResponse

app = Robyn(__file__)


@app.get("/")
async def index():
    return "Hello, world!"


@app.get("/json")
def json_route():
    return {"message": "Hello, world!"}


@app.get("/user/:id")
def user(id: int):
    return {"id": id}


@app.get("/q")
def query(request: Request):
    return {"name": request.query_params.get("name", ""), "token": request.headers.get("x-token")}


@app.post("/echo")
def echo(request: Request):
    return Response(200, {"content-type": request.headers.get("content-type", "application/octet-stream")},
                    request.body)


@app.get("/slow")
async def slow():
    await asyncio.sleep(0.5)
    return "slow"


BIG = b"x" * (1024 * 1024)


@app.get("/big")
def big():
    return BIG


@app.get("/stream")
def stream():
    async def chunks():
        for i in range(10):
            yield f"chunk {i}\n"
    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/nocontent")
def nocontent():
    return Response(204, {}, b"")


@app.get("/notmodified")
def notmodified():
    return Response(304, {"etag": '"v1"'}, b"")


@app.get("/health", const=True)
def health():
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
