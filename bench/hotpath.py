"""In-process hot-path profile: request bytes fed straight into ``HttpProtocol`` with a
transport that discards writes. No sockets and no load generator, so the figure is the
framework+protocol cost per request alone; use it to find hotspots, not to compare servers
(bench/run.py does that).

    .venv/bin/python bench/hotpath.py [--profile] [N]
"""

import asyncio
import cProfile
import pstats
import sys
import time

sys.path.insert(0, "examples")
from demo import app  # noqa: E402

from stonechat.server.http import HttpProtocol, ServerState  # noqa: E402
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

    def is_closing(self):
        return False


REQUESTS = {
    "plaintext (async)": b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "json (sync)": b"GET /json HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "path param": b"GET /user/42 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n\r\n",
    "query+header": b"GET /q?name=abc HTTP/1.1\r\nHost: localhost:8080\r\nx-token: t\r\n\r\n",
    "post echo 1KiB": b"POST /echo HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024,
}


async def run(n, profile):
    loop = asyncio.get_running_loop()
    served = app.served(ServerSettings())
    await served.startup()
    state = ServerState(served, ServerSettings(), loop)
    state.tick()
    for name, raw in REQUESTS.items():
        proto = HttpProtocol(state)
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
        elapsed = time.perf_counter() - started
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
        print(f"{name:20s} {elapsed / n * 1e6:6.2f} us/request")
    state.stop_ticker()


if __name__ == "__main__":
    import uvloop
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    uvloop.run(run(int(args[0]) if args else 50000, "--profile" in sys.argv))
