"""HTTP benchmark app, written against Robyn's public API.

The harness (bench/run.py) runs this file unchanged under Robyn and, for
stonechat, runs a copy with the module name rewritten (robyn -> stonechat).
Keep it to Robyn's documented API so the same code means the same thing in
both frameworks. The async routes are the headline set; /sync/... mirror them
with plain `def` handlers.

Port: env BENCH_PORT (the harness also sets ROBYN_PORT/STONECHAT_PORT to the
same value, because Robyn's start() lets ROBYN_PORT override the argument).
"""

import os

from robyn import Request, Robyn

app = Robyn(__file__)

HELLO = "Hello, world!"


# --- async handlers (headline set) -------------------------------------------
@app.get("/")
async def index(request: Request):
    return HELLO


@app.get("/json")
async def json_hello(request: Request):
    return {"message": HELLO}


@app.get("/user/:id")
async def user(request: Request):
    return {"id": request.path_params["id"]}


@app.get("/q")
async def query(request: Request):
    # Robyn: QueryParams.get(key, default) needs the default; Headers.get(key) takes none.
    return {
        "name": request.query_params.get("name", ""),
        "token": request.headers.get("x-token"),
    }


@app.post("/echo")
async def echo(request: Request):
    # Robyn hands over a str when the body is valid UTF-8 (bytes otherwise); return it as is.
    return request.body


# --- sync handlers (same work, plain def) ------------------------------------
@app.get("/sync")
def sync_index(request: Request):
    return HELLO


@app.get("/sync/json")
def sync_json_hello(request: Request):
    return {"message": HELLO}


@app.get("/sync/user/:id")
def sync_user(request: Request):
    return {"id": request.path_params["id"]}


@app.get("/sync/q")
def sync_query(request: Request):
    return {
        "name": request.query_params.get("name", ""),
        "token": request.headers.get("x-token"),
    }


@app.post("/sync/echo")
def sync_echo(request: Request):
    return request.body


# bench/run.py's "metrics" variant (stonechat only: Robyn has no metrics to turn on).
if os.environ.get("BENCH_METRICS"):
    app.enable_metrics()

if __name__ == "__main__":
    app.start(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]))
