"""Fan-out benchmark app (stonechat): every client of /sub joins room "fan" (plain messages);
/subrec is the same with recovery=True (envelopes with positions, history read on join)."""

import os

from stonechat import Robyn, WebSocketDisconnect

app = Robyn(__file__)


@app.websocket("/sub")
async def sub(ws):
    await ws.join("fan")
    try:
        while True:
            await ws.receive()
    except WebSocketDisconnect:
        pass


@app.websocket("/subrec", recovery=True)
async def subrec(ws):
    await ws.join("fan")
    try:
        while True:
            await ws.receive()
    except WebSocketDisconnect:
        pass


@app.get("/ready")
def ready():
    return "ok"


app.start(host="127.0.0.1", port=int(os.environ["PORT"]))
