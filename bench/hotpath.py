"""In-process hot-path profile: request bytes fed straight into ``HttpProtocol`` with a
transport that discards writes, then 64-byte WebSocket messages into the demo's ``/ws`` echo
after a real upgrade. No sockets and no load generator, so the figure is the framework+protocol
cost per request (per message) alone; use it to find hotspots, not to compare servers
(bench/run.py does that).

    .venv/bin/python bench/hotpath.py [--profile] [--only http|ws|forms|stages] [N]

``--only forms`` runs bench/apps/http_app.py (the app bench/run.py measures; ``robyn`` renamed
to ``stonechat``) instead: GET /, /json, /user/:id, /q + header and POST /echo, each with its
``async def`` handler and with its ``def`` twin under /sync, every scenario on its own event
loop in its own thread, so that ``valgrind --separate-threads=yes`` counts each apart
(bench/instructions.py forms). ``--only stages`` counts the stages of GET / and GET /json
apart (parse, dispatch, write; see STAGES). ``--only observe --variant V --job J`` runs one of
GET / and GET /json with an observer on (access log, metrics...; see OBSERVE_VARIANTS) or off
(bench/instructions.py observe).

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
from pathlib import Path

sys.path.insert(0, "examples")
from demo import app  # noqa: E402

from stonechat.server.http import HttpProtocol  # noqa: E402
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


class RecordingTransport(NullTransport):
    """Keeps the first response (to check the scenario answers 200), then discards."""

    first = b""

    def write(self, data):
        self.first = self.first or data

    def discard(self, data):
        self.written += len(data)


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


def feed(proto, raw, n):
    """A future done once ``raw`` has been answered ``n`` times, one request after the other,
    fed from loop callbacks as the loop feeds a real connection (outside any task): a request
    that suspends holds the next one back until the connection's task has answered it."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def step(remaining):
        while proto.task is None:
            if not remaining:
                done.set_result(None)
                return
            proto.data_received(raw)
            remaining -= 1
        loop.call_soon(step, remaining)

    loop.call_soon(step, n)
    return done


async def run_http(state, n, profile):
    protocol = protocol_for(state.app)
    for name, raw in REQUESTS.items():
        proto = protocol(state)
        proto.connection_made(NullTransport())
        await feed(proto, raw, 2000)
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        started = time.perf_counter()
        await feed(proto, raw, n)
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


FORMS = {
    "GET /": (b"/", b"User-Agent: wrk\r\nAccept: */*\r\n", b"GET", b""),
    "GET /json": (b"/json", b"User-Agent: wrk\r\nAccept: */*\r\n", b"GET", b""),
    "GET /user/:id": (b"/user/42", b"User-Agent: wrk\r\n", b"GET", b""),
    "GET /q + header": (b"/q?name=abc", b"x-token: t\r\n", b"GET", b""),
    "POST /echo 1KiB": (b"/echo", b"Content-Type: text/plain\r\nContent-Length: 1024\r\n", b"POST", b"a" * 1024),
}


def form_requests():
    """(name, form, raw request) for every scenario, async then sync, in a fixed order."""
    out = []
    for form, prefix in (("async", b""), ("sync", b"/sync")):
        for name, (path, headers, method, body) in FORMS.items():
            target = prefix + path if path != b"/" or not prefix else prefix
            raw = b"%s %s HTTP/1.1\r\nHost: localhost:8080\r\n%s\r\n%s" % (method, target, headers, body)
            out.append((name, form, raw))
    return out


def load_bench_app():
    """bench/apps/http_app.py with ``robyn`` renamed to ``stonechat``, as run.py serves it."""
    import re
    import types
    from pathlib import Path
    path = Path(__file__).resolve().parent / "apps" / "http_app.py"
    module = types.ModuleType("http_app")
    module.__file__ = str(path)
    exec(compile(re.sub(r"\brobyn\b", "stonechat", path.read_text()), str(path), "exec"), module.__dict__)
    return module.app


async def run_form(bench_app, name, form, raw, n, profile):
    loop = asyncio.get_running_loop()
    served = bench_app.served(ServerSettings(blocking_warn_ms=0))
    await served.startup()
    state = ServerState(served, ServerSettings(header_timeout=1e9, keep_alive_timeout=1e9), loop)
    state.tick()
    proto = HttpProtocol(state)
    transport = RecordingTransport()
    proto.connection_made(transport)
    await feed(proto, raw, 1)
    assert transport.first.startswith(b"HTTP/1.1 200 OK"), (name, form, transport.first)
    transport.write = transport.discard
    await feed(proto, raw, 2000)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    started = time.perf_counter()
    await feed(proto, raw, n)
    report(f"{name} ({form})", n, time.perf_counter() - started, prof, "request")
    state.stop_ticker()


def run_threads(jobs):
    """Run each ``job()`` (a coroutine) on its own event loop in its own thread, one after the
    other. Each thread stays alive (idle) until the end: valgrind reuses a finished thread's
    number, and each job must keep its own (``--separate-threads=yes`` counts each apart)."""
    import threading
    import uvloop
    finish = threading.Event()
    threads = []

    def body(job, done):
        uvloop.run(job())
        done.set()
        finish.wait()

    for job in jobs:
        done = threading.Event()
        thread = threading.Thread(target=body, args=(job, done))
        thread.start()
        done.wait()
        threads.append(thread)
    finish.set()
    for thread in threads:
        thread.join()


def run_forms(n, profile):
    bench_app = load_bench_app()
    run_threads([lambda name=name, form=form, raw=raw: run_form(bench_app, name, form, raw, n, profile)
                 for name, form, raw in form_requests()])


# --only stages: where one request's instructions go, for GET / and GET /json (sync handlers;
# the async form's extra is its full count minus the sync one). Each stage alone, in a loop:
#   parse    httptools and the protocol's parser callbacks, up to the queued HTTPRequest
#   dispatch app.handle(request): route match, Request, the handler, the response bytes
#   write    the response head + body formatted and handed to the transport
#   full     data_received from a loop callback, everything (as in --only forms)
STAGES = ("parse", "dispatch", "write", "full")


def stage_jobs():
    """(name, form, stage) in a fixed order (bench/instructions.py reads it with --list-stages)."""
    out = [(name, "sync", stage) for name in ("GET /", "GET /json") for stage in STAGES]
    out += [(name, "async", "full") for name in ("GET /", "GET /json")]
    # bench/apps/raw_server.py (the ceiling bench/run.py measures), the same bytes fed the same way
    return out + [(name, "ceiling", "full") for name in ("GET /", "GET /json")]


async def run_ceiling(name, n):
    sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))
    import raw_server
    raw_server.refresh_date(asyncio.get_running_loop())
    raw = next(r for nm, fm, r in form_requests() if nm == name and fm == "async")  # / and /json
    proto = raw_server.HttpProtocol()
    transport = RecordingTransport()
    proto.connection_made(transport)
    proto.data_received(raw)
    assert transport.first.startswith(b"HTTP/1.1 200 OK"), transport.first
    transport.write = transport.discard
    for count in (2000, n):
        started = time.perf_counter()
        for _ in range(count):
            proto.data_received(raw)
    report(f"{name} (ceiling) full", n, time.perf_counter() - started, None, "request")


class _ParseOnly(HttpProtocol):
    __slots__ = ()

    def _process(self, in_runner=False):
        self.pending.clear()


class _Capture(HttpProtocol):
    __slots__ = ()
    captured = []

    def _process(self, in_runner=False):
        _Capture.captured.append(self.pending.popleft())


async def run_stage(bench_app, name, form, stage, n):
    if form == "ceiling":
        await run_ceiling(name, n)
        return
    if name == "GET / browser":
        raw = b"GET %s HTTP/1.1\r\nHost: localhost:8080\r\n%s\r\n" % (b"/sync" if form == "sync" else b"/",
                                                                      BROWSER_HEADERS)
    else:
        raw = next(r for nm, fm, r in form_requests() if nm == name and fm == form)
    loop = asyncio.get_running_loop()
    served = bench_app.served(ServerSettings(blocking_warn_ms=0))
    await served.startup()
    state = ServerState(served, ServerSettings(header_timeout=1e9, keep_alive_timeout=1e9), loop)
    state.tick()
    cls = {"parse": _ParseOnly, "full": HttpProtocol}.get(stage, _Capture)
    proto = cls(state)
    transport = RecordingTransport()
    transport.write = transport.discard
    proto.connection_made(transport)
    if stage == "full":
        step = None
    elif stage == "parse":
        def step():
            proto.data_received(raw)
    else:
        proto.data_received(raw)
        request = _Capture.captured.pop()
        handle = served.handle
        if stage == "dispatch":
            def step():
                handle(request)
        else:
            response = handle(request)
            write = proto._write_response

            def step():
                write(request, response, True)
    for count in (2000, n):
        started = time.perf_counter()
        if step is None:
            await feed(proto, raw, count)
        else:
            for _ in range(count):
                step()
    report(f"{name} ({form}) {stage}", n, time.perf_counter() - started, None, "request")
    state.stop_ticker()


def run_stages(n):
    bench_app = load_bench_app()
    run_threads([lambda job=job: run_stage(bench_app, *job, n) for job in stage_jobs()])


# --only observe: what an observer costs on bench/run.py's text and json scenarios (GET / and
# GET /json of bench/apps/http_app.py, async or sync form), one variant per process. Every
# thread counts (bench/instructions.py observe sums them): the access log's writer thread is
# server CPU too. The log goes to /dev/null; what is left is written (and the metrics folded)
# before the end, so every request's work is in the count.
OBSERVE_VARIANTS = {
    "off": {},
    "null-sink": {},  # the observing protocols with a sink that does nothing: their own cost
    "access-log": {"access_log": "/dev/null"},
    "access-log-json": {"access_log": "/dev/null", "access_log_format": "json"},
    "metrics": {},
    "request-id": {"request_id": True},
    "access-log+metrics": {"access_log": "/dev/null"},
}
OBSERVE_JOBS = [(name, form) for form in ("async", "sync") for name in ("GET /", "GET /json")]
# GET / as a browser asks for it: 13 header fields (bench/run.py's wrk sends one, Host), for
# what observing costs where the per-request work grows with the headers.
OBSERVE_JOBS += [("GET / browser", "async"), ("GET / browser", "sync")]
BROWSER_HEADERS = (
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    b"Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
    b"Referer: http://localhost:8080/start\r\nCookie: session=abcdef0123456789abcdef0123456789; theme=dark\r\n"
    b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: same-origin\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n")


class _NullSink:
    def answered(self, request, status, sent, seconds):
        pass


async def run_observed(variant, name, form, n):
    bench_app = load_bench_app()
    if "metrics" in variant:
        bench_app.enable_metrics()
    if name == "GET / browser":
        raw = b"GET %s HTTP/1.1\r\nHost: localhost:8080\r\n%s\r\n" % (b"/sync" if form == "sync" else b"/",
                                                                      BROWSER_HEADERS)
    else:
        raw = next(r for nm, fm, r in form_requests() if nm == name and fm == form)
    loop = asyncio.get_running_loop()
    served = bench_app.served(ServerSettings(blocking_warn_ms=0, **OBSERVE_VARIANTS[variant]))
    if variant == "null-sink":
        from stonechat.core.observation import Observation
        served.observer = Observation([_NullSink()], False)
    await served.startup()
    state = ServerState(served, ServerSettings(header_timeout=1e9, keep_alive_timeout=1e9), loop)
    state.tick()
    proto = protocol_for(served)(state)
    transport = RecordingTransport()
    proto.connection_made(transport)
    await feed(proto, raw, 1)
    assert transport.first.startswith(b"HTTP/1.1 200 OK"), (variant, name, form, transport.first)
    transport.write = transport.discard
    await feed(proto, raw, 500)
    started = time.perf_counter()
    await feed(proto, raw, n)
    elapsed = time.perf_counter() - started
    state.stop_ticker()
    if served.metrics is not None:
        served.metrics.stop()
    if served.access_log is not None:
        served.access_log.stop()
    report(f"{name} ({form}) {variant}", n, elapsed, None, "request")


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
    valued = {i + 1 for i, a in enumerate(argv) if a in ("--only", "--variant", "--job")}
    args = [a for i, a in enumerate(argv) if not a.startswith("--") and i not in valued]
    n = int(args[0]) if args else 50000
    if "--list-forms" in argv:
        print("\n".join(f"{name}\t{form}" for name, form, _ in form_requests()))
    elif "--list-stages" in argv:
        print("\n".join("\t".join(job) for job in stage_jobs()))
    elif "--list-observed" in argv:
        print("\n".join(f"{name}\t{form}" for name, form in OBSERVE_JOBS))
    elif only == "observe":
        variant = argv[argv.index("--variant") + 1]
        job = OBSERVE_JOBS[int(argv[argv.index("--job") + 1])]
        uvloop.run(run_observed(variant, *job, n))
    elif only == "stages":
        run_stages(n)
    elif only == "forms":
        run_forms(n, "--profile" in argv)
    else:
        uvloop.run(run(n, "--profile" in argv, only))
