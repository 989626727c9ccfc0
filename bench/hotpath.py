"""In-process hot-path profile: request bytes fed straight into ``HttpProtocol`` with a
transport that discards writes, then 64-byte WebSocket messages into the demo's ``/ws`` echo
after a real upgrade. No sockets and no load generator, so the figure is the framework+protocol
cost per request (per message) alone; use it to find hotspots, not to compare servers
(bench/run.py does that).

    .venv/bin/python bench/hotpath.py [--profile] [--only http|ws] [N]

Wall time on a shared VM drifts by 10-20 %. For a change worth a few percent, count
instructions instead (deterministic; see bench/README.md, "Judging a hot-path change"):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/hotpath.py --only ws 20000
"""

import asyncio
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, "examples")
from demo import app  # noqa: E402

from stonechat.server.observed import protocol_for  # noqa: E402
from stonechat.server.state import ServerState  # noqa: E402
from stonechat.server.settings import ServerSettings  # noqa: E402


class NullTransport:
    def __init__(self):
        self.written = 0

    def write(self, data):
        self.written += len(data)

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass

    def write_eof(self):
        pass

    def is_closing(self):
        return False


class EchoTransport(NullTransport):
    """After the upgrade: hands each frame the server writes to whoever waits for it."""

    def __init__(self):
        super().__init__()
        self.protocol = None
        self.waiter = None

    def write(self, data):
        self.written += len(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_write_buffer_size(self):
        return 0

    def abort(self):
        pass


REQUESTS = {
    "plaintext (async)": b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "json (sync)": b"GET /json HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "path param": b"GET /user/42 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n\r\n",
    "query+header": b"GET /q?name=abc HTTP/1.1\r\nHost: localhost:8080\r\nx-token: t\r\n\r\n",
    "post echo 1KiB": b"POST /echo HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024,
}


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
_MASK = b"\x01\x02\x03\x04"
TEXT_FRAME = bytes((0x81, 0x80 | 64)) + _MASK + bytes(b ^ _MASK[i & 3] for i, b in enumerate(b"m" * 64))


def report(name, n, elapsed, prof, unit):
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    print(f"{name:20s} {elapsed / n * 1e6:6.2f} us/{unit}")


# What it costs to observe: STONECHAT_BENCH_OBSERVE=access-log,metrics,request-id (any; the log
# goes to /dev/null, through the writer thread, flushed at the end so every line is formatted).
OBSERVE = set(filter(None, os.environ.get("STONECHAT_BENCH_OBSERVE", "").split(",")))


async def run_http(state, n, profile):
    protocol = protocol_for(state.app)
    for name, raw in REQUESTS.items():
        proto = protocol(state)
        proto.connection_made(NullTransport())
        for _ in range(2000):
            proto.data_received(raw)
            await asyncio.sleep(0)
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        started = time.perf_counter()
        for _ in range(n):
            proto.data_received(raw)
            if proto.task is not None:
                await proto.task
        report(name, n, time.perf_counter() - started, prof, "request")


async def run_ws(state, n, profile):
    """One echo per loop turn, as with a single client: the frame in, the session task wakes,
    the handler sends, the frame out."""
    loop = state.loop
    transport = EchoTransport()
    http = protocol_for(state.app)(state)
    http.connection_made(transport)
    transport.waiter = loop.create_future()
    http.data_received(UPGRADE)
    await transport.waiter  # the 101
    ws = transport.protocol

    async def echo(count):
        for _ in range(count):
            waiter = transport.waiter = loop.create_future()
            ws.data_received(TEXT_FRAME)
            await waiter

    await echo(2000)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    started = time.perf_counter()
    await echo(n)
    report("ws echo 64 B", n, time.perf_counter() - started, prof, "message")


async def run(n, profile, only):
    loop = asyncio.get_running_loop()
    # No blocking watchdog: its thread wakes by wall time, so under valgrind on a busy machine
    # it would add a load-dependent number of instructions to every count.
    if "metrics" in OBSERVE:
        app.enable_metrics()
    served = app.served(ServerSettings(blocking_warn_ms=0, access_log="/dev/null" if "access-log" in OBSERVE else "",
                                       request_id="request-id" in OBSERVE))
    await served.startup()
    # No connection may time out mid-run: under valgrind a run lasts long enough for the
    # header and keep-alive timeouts, and a closed connection answers nothing (cheaply).
    state = ServerState(served, ServerSettings(header_timeout=1e9, keep_alive_timeout=1e9), loop)
    state.tick()
    if only in (None, "http"):
        await run_http(state, n, profile)
    if only in (None, "ws"):
        await run_ws(state, n, profile)
    state.stop_ticker()
    if served.access_log is not None:
        served.access_log.stop()


if __name__ == "__main__":
    import uvloop
    argv = sys.argv[1:]
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    args = [a for a in argv if not a.startswith("--") and a != only]
    uvloop.run(run(int(args[0]) if args else 50000, "--profile" in argv, only))
