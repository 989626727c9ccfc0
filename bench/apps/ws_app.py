"""WebSocket echo benchmark app, written against Robyn's current (>= 0.80) API.

Run unchanged under Robyn; the harness runs a robyn -> stonechat renamed copy
for stonechat. Port from env BENCH_PORT (see http_app.py).
"""

import os

from robyn import Robyn, WebSocketDisconnect

app = Robyn(__file__)


@app.websocket("/ws")
async def ws(websocket):
    try:
        while True:
            msg = await websocket.receive_text()
            await websocket.send_text(msg)
    except WebSocketDisconnect:
        pass


if __name__ == "__main__":
    app.start(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]))
