"""WebSocket echo with a plain `def` message handler: the callback API of Robyn < 0.80.

stonechat keeps that API beside the receive loop of ws_app.py (docs/websockets.md, "Callback
style"); Robyn 0.88 removed it, so this file runs on stonechat only (the harness renames
`robyn` to `stonechat` as for the other app files) and Robyn's WebSocket echo has one form.
The handler's return value is the reply. Port from env BENCH_PORT (see http_app.py).
"""

import os

from robyn import Robyn, WebSocket

app = Robyn(__file__)
ws = WebSocket(app, "/sync/ws")


@ws.on("message")
def message(ws, msg):
    return msg


if __name__ == "__main__":
    app.start(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]))
