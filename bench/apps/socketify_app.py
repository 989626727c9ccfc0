"""The benchmark scenarios on socketify (uWebSockets in C++ under a Python API, through CFFI).

Same routes as http_app.py / ws_app.py: async handlers at /, /json, /user/:id, /q, /echo and
the WebSocket echo at /ws; plain `def` handlers at /sync/... and /sync/ws. Written as
socketify's README shows: `res.send(...)` for text and JSON (socketify's default JSON
serializer, the standard library's json), `req.get_parameter` / `get_query` / `get_header`,
`await res.get_data()` for the async body and `res.on_data(...)` chunks for the sync one.
App() keeps its defaults (no request/response object pools).

Known failure, kept visible: socketify 0.0.31 aborts on the async body read under load
(`Fatal Python error: b_from_handle: ffi.from_handle() detected that the address passed points
to garbage`, from uws_generic_on_data_handler): the response object sits in a reference cycle
with its own CFFI handle, the cyclic GC frees it while the handler awaits `res.get_data()`,
and uWS then calls the body callback with the dead handle. With `gc.disable()` it survives
(at ~10k req/s: the awaited body goes through socketify's asyncio/libuv interleaving), and
socketify's request/response pool (`App(request_response_factory_max_items=N)`) avoids it on
the async route but then crashes the sync route's `res.on_data` the same way. So the async
POST /echo run fails and the harness flags it; nothing here works around it.

Run from bench/.venv-socketify; port from env BENCH_PORT, host 127.0.0.1.
"""

import os

from socketify import App, CompressOptions

HELLO = "Hello, world!"
TEXT = b"text/plain; charset=utf-8"

app = App()


# --- async handlers -------------------------------------------------------------------
async def index(res, req):
    res.send(HELLO, content_type=TEXT)


async def json_hello(res, req):
    res.send({"message": HELLO})


async def user(res, req):
    res.send({"id": req.get_parameter(0)})


async def query(res, req):
    # socketify's request object is only valid until the first await: read it before any.
    res.send({"name": req.get_query("name") or "", "token": req.get_header("x-token")})


async def echo(res, req):
    body = await res.get_data()
    res.send(body.getvalue(), content_type=TEXT)


async def ws_message(ws, message, opcode):
    ws.send(message, opcode)


# --- sync handlers --------------------------------------------------------------------
def sync_index(res, req):
    res.send(HELLO, content_type=TEXT)


def sync_json_hello(res, req):
    res.send({"message": HELLO})


def sync_user(res, req):
    res.send({"id": req.get_parameter(0)})


def sync_query(res, req):
    res.send({"name": req.get_query("name") or "", "token": req.get_header("x-token")})


def sync_echo(res, req):
    chunks = []

    def on_data(res, chunk, is_end):
        if chunk:
            chunks.append(chunk)
        if is_end:
            res.send(b"".join(chunks), content_type=TEXT)

    res.on_aborted(lambda res: None)
    res.on_data(on_data)


def sync_ws_message(ws, message, opcode):
    ws.send(message, opcode)


app.get("/", index)
app.get("/json", json_hello)
app.get("/user/:id", user)
app.get("/q", query)
app.post("/echo", echo)
app.get("/sync", sync_index)
app.get("/sync/json", sync_json_hello)
app.get("/sync/user/:id", sync_user)
app.get("/sync/q", sync_query)
app.post("/sync/echo", sync_echo)

WS_OPTIONS = {"compression": CompressOptions.DISABLED, "max_payload_length": 16 * 1024 * 1024,
              "idle_timeout": 120}
app.ws("/ws", dict(WS_OPTIONS, message=ws_message))
app.ws("/sync/ws", dict(WS_OPTIONS, message=sync_ws_message))
app.any("/*", lambda res, req: res.write_status(404).end("not found"))

if __name__ == "__main__":
    app.listen({"port": int(os.environ["BENCH_PORT"]), "host": "127.0.0.1"})
    app.run()
