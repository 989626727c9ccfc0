"""In-process cost of hosting an ASGI app: the Starlette bench app (apps/starlette_app.py) behind
stonechat's server (``app.mount("/", starlette_app)``, apps/mount_app.py) and behind uvicorn
(uvloop + httptools, its production protocol class), fed the same request bytes.

    .venv/bin/python bench/asgi_hotpath.py [--server stonechat|uvicorn] [--only SCENARIO] [--app raw] [--profile] [N]
    .venv/bin/python bench/asgi_hotpath.py --instructions [-n 3000]   # callgrind, both servers, per scenario

``--app raw`` serves a bare ASGI app instead (one constant answer): what remains is each
server's own cost per request.

How it is kept fair: both protocols get the bytes of one request at a time through
``data_received`` on a transport that only counts bytes; the harness waits until the whole
response (head + Content-Length body) was written, then yields once to the loop so that tasks
still open (uvicorn's request task, stonechat's finished app task) complete before the next
request. The loop, the app object, the request bytes and the waiting are the same for both;
uvicorn runs with its defaults for Date/Server headers (set as its ticker does) and without an
access log (as ``--no-access-log``). No sockets, so kernel time is out: this compares the
Python-level work per request (what decides server CPU per request on one core), not a
benchmark (bench/run.py is).

``--instructions`` runs each (server, scenario) under valgrind with N and 2N requests and
prints the difference / N: instructions per request, a figure that does not drift with load.
"""

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "apps"))

REQUESTS = {
    "text": b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "json": b"GET /json HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "param": b"GET /user/42 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n\r\n",
    "query": b"GET /q?name=abc HTTP/1.1\r\nHost: localhost:8080\r\nx-token: t\r\n\r\n",
    "echo": b"POST /echo HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024,
}


class CountingTransport:
    """Discards writes; ``done`` resolves once a complete response (by Content-Length) went out."""

    def __init__(self, loop):
        self.loop = loop
        self.buf = b""
        self.done = None
        self.responses = 0

    def arm(self):
        self.done = self.loop.create_future()
        return self.done

    def write(self, data):
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            at = head.find(b"content-length: ")
            length = int(head[at + 16:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            if len(buf) < end + 4 + length:
                break
            buf = buf[end + 4 + length:]
            self.responses += 1
            if self.done is not None and not self.done.done():
                self.done.set_result(None)
        self.buf = buf

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass

    def abort(self):
        pass


async def raw_app(scope, receive, send):
    """The least an ASGI app can do: what is left is the server's own cost per request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def asgi_app(which):
    if which == "raw":
        return raw_app
    from starlette_app import app
    return app


def stonechat_protocol(loop, which):
    from stonechat import Robyn
    from stonechat.server.http import HttpProtocol, ServerState
    from stonechat.server.settings import ServerSettings
    settings = ServerSettings(blocking_warn_ms=0)
    app = Robyn(__file__)
    app.mount("/", asgi_app(which))  # what apps/mount_app.py does
    served = app.served(settings)
    state = ServerState(served, settings, loop)
    state.tick()

    async def start():
        await served.startup()

    def make():
        return HttpProtocol(state)
    return start, make, state.stop_ticker


def uvicorn_protocol(loop, which):
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState
    config = Config(app=asgi_app(which), http="httptools", loop="uvloop", lifespan="off", access_log=False)
    config.load()
    server_state = ServerState()
    # What uvicorn's ticker sets once a second: Date, then Server.
    server_state.default_headers = [(b"date", formatdate(usegmt=True).encode())] + config.encoded_headers

    async def start():
        pass

    def make():
        return HttpToolsProtocol(config=config, server_state=server_state, app_state={}, _loop=loop)
    return start, make, lambda: None


async def run(server, n, profile, only, which):
    loop = asyncio.get_running_loop()
    start, make, stop = (stonechat_protocol if server == "stonechat" else uvicorn_protocol)(loop, which)
    await start()
    for name, raw in REQUESTS.items():
        if only and name != only:
            continue
        transport = CountingTransport(loop)
        proto = make()
        proto.connection_made(transport)

        async def requests(count):
            # Bytes arrive in a loop callback, outside any task, as from a socket.
            for _ in range(count):
                done = transport.arm()
                loop.call_soon(proto.data_received, raw)
                await done
                await asyncio.sleep(0)

        await requests(2000)
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        started = time.perf_counter()
        await requests(n)
        elapsed = time.perf_counter() - started
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        assert transport.responses == n + 2000, (transport.responses, n)
        print(f"{server:9s} {name:6s} {elapsed / n * 1e6:6.2f} us/request")
    stop()


def instructions(server, scenario, n, which):
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", sys.executable, __file__,
             "--server", server, "--only", scenario, "--app", which, str(n)],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : ([\d,]+)", proc.stderr)
    if proc.returncode != 0 or not found:
        sys.exit(f"valgrind run failed:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["stonechat", "uvicorn"], default=None)
    parser.add_argument("--only", choices=list(REQUESTS), default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--app", choices=["starlette", "raw"], default="starlette",
                        help="the Starlette bench app, or a bare ASGI app (the server's own cost)")
    parser.add_argument("-n", type=int, default=3000, help="requests in the shorter valgrind run")
    parser.add_argument("count", nargs="?", type=int, default=20000)
    args = parser.parse_args()
    if args.instructions:
        if shutil.which("valgrind") is None:
            sys.exit("valgrind is not installed (apt-get install valgrind)")
        print(f"{'scenario':8s} {'stonechat':>12s} {'uvicorn':>12s}  ratio   (instructions per request)")
        for scenario in (args.only,) if args.only else REQUESTS:
            per = {}
            for server in ("stonechat", "uvicorn"):
                one = instructions(server, scenario, args.n, args.app)
                two = instructions(server, scenario, 2 * args.n, args.app)
                per[server] = (two - one) / args.n
            print(f"{scenario:8s} {per['stonechat']:12,.0f} {per['uvicorn']:12,.0f}  "
                  f"{per['stonechat'] / per['uvicorn']:5.2f}")
        return
    import uvloop
    for server in (args.server,) if args.server else ("stonechat", "uvicorn"):
        uvloop.run(run(server, args.count, args.profile, args.only, args.app))


if __name__ == "__main__":
    main()
