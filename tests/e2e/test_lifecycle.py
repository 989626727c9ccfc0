"""Lifecycle of one server process, proven on real processes with real signals.

Covers issue #3 for a single process: the bug-report app on SIGINT and SIGTERM, handler order,
lifespans and app.state, drain of in-flight requests with refusal of new connections, the drain
deadline, failing and hanging shutdown handlers, the second signal, startup failure (exit 3),
a signal during startup, idle keep-alive connections, and binding again at once.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import httpx
import pytest

from conftest import port_open

BUG_REPORT_APP = """
from stonechat import Robyn

app = Robyn(__file__)

@app.startup_handler
async def startup_handler():
    print("Starting up...", flush=True)

@app.shutdown_handler
async def shutdown_handler():
    print("Shutting down...", flush=True)

@app.get("/")
async def index():
    return "hello"

app.start()
"""



def assert_phase_lines(out: str, signame: str, handler: str) -> None:
    assert f"stopping ({signame})" in out, out
    assert re.search(r"draining \d+ requests", out), out
    assert f"running shutdown handler {handler}" in out, out
    assert re.search(r"done in \d+ ms", out), out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_bug_report_app_runs_shutdown_handler_and_exits_0(serve, signum):
    server = serve(BUG_REPORT_APP)
    assert httpx.get(server.url + "/").text == "hello"
    server.signal(signum)
    assert server.wait(10) == 0
    out = server.output()
    assert out.count("Starting up...") == 1
    assert out.count("Shutting down...") == 1, out
    assert_phase_lines(out, signal.Signals(signum).name, "shutdown_handler")
    # the phases come in order
    positions = [out.index(s) for s in (f"stopping ({signal.Signals(signum).name})", "draining 0 requests",
                                        "running shutdown handler shutdown_handler", "Shutting down...", "done in")]
    assert positions == sorted(positions), out


def test_ctrl_c_to_process_group_single_process(serve):
    server = serve(BUG_REPORT_APP)
    server.signal_group(signal.SIGINT)
    assert server.wait(10) == 0
    assert server.output().count("Shutting down...") == 1


def test_handler_order_lifespan_and_state_alive_in_shutdown(serve):
    server = serve("""
        import asyncio
        from contextlib import asynccontextmanager
        from stonechat import Robyn

        app = Robyn(__file__)

        @app.startup_handler
        def first():
            print("startup first", flush=True)
            app.state.log = []

        @app.startup_handler
        async def second():
            await asyncio.sleep(0.01)
            print("startup second", flush=True)
            app.state.queue = asyncio.Queue()
            async def consumer():
                while True:
                    item = await app.state.queue.get()
                    app.state.log.append(item)
                    app.state.queue.task_done()
            app.state.consumer = asyncio.get_running_loop().create_task(consumer())

        @app.lifespan
        @asynccontextmanager
        async def resource(app):
            print("lifespan enter", flush=True)
            yield
            print("lifespan exit", flush=True)

        @app.get("/push/:item")
        async def push(request):
            await app.state.queue.put(request.path_params["item"])
            await app.state.queue.join()
            return {"log": app.state.log}

        @app.shutdown_handler
        async def shutdown_a():
            # registered first, so runs last; the loop and the background task still work
            await app.state.queue.put("from-shutdown")
            await asyncio.wait_for(app.state.queue.join(), 2)
            print("shutdown a sees", app.state.log, flush=True)

        @app.shutdown_handler
        def shutdown_b():
            print("shutdown b", flush=True)

        app.start(drain_timeout=1, shutdown_handler_timeout=3)
    """)
    assert httpx.get(server.url + "/push/x").json() == {"log": ["x"]}
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    out = server.output()
    order = ["startup first", "startup second", "lifespan enter", "lifespan exit", "shutdown b",
             "shutdown a sees ['x', 'from-shutdown']"]
    positions = [out.find(s) for s in order]
    assert -1 not in positions, out
    assert positions == sorted(positions), out


def _get_in_thread(url: str, results: dict, key: str, timeout: float = 20.0) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        try:
            r = httpx.get(url, timeout=timeout)
            results[key] = (r.status_code, r.text, time.monotonic() - started)
        except httpx.HTTPError as exc:
            results[key] = ("error", repr(exc), time.monotonic() - started)
    t = threading.Thread(target=run)
    t.start()
    return t


SLOW_APP = """
import asyncio, time
from stonechat import Robyn

app = Robyn(__file__)

@app.get("/slow/:secs")
async def slow(request):
    await asyncio.sleep(float(request.path_params["secs"]))
    return "finished"

@app.get("/blocking/:secs", threaded=True)
def blocking(request):
    time.sleep(float(request.path_params["secs"]))
    return "finished"

@app.get("/")
def index():
    return "ok"

@app.shutdown_handler
def bye():
    print("shutdown handler ran", flush=True)

app.start()
"""


def test_in_flight_request_completes_and_new_connections_are_refused(serve):
    server = serve(SLOW_APP, env={"STONECHAT_DRAIN_TIMEOUT": "5"})
    results: dict = {}
    t = _get_in_thread(server.url + "/slow/2", results, "slow")
    time.sleep(0.5)  # the request is in the handler now
    server.signal(signal.SIGTERM)
    out = server.wait_for_output("draining 1 requests")
    # the listening socket is closed: a new connection is refused while the old one drains
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
    assert server.proc.poll() is None, "exited before the in-flight request finished"
    t.join(10)
    status, body, elapsed = results["slow"]
    assert (status, body) == (200, "finished"), results
    assert server.wait(10) == 0
    out = server.output()
    assert "shutdown handler ran" in out
    assert out.index("draining 1 requests") < out.index("shutdown handler ran")


@pytest.mark.parametrize("path", ["/slow/30", "/blocking/30"])
def test_request_longer_than_drain_deadline_gets_503_not_a_hang(serve, path):
    server = serve(SLOW_APP, env={"STONECHAT_DRAIN_TIMEOUT": "1"})
    results: dict = {}
    t = _get_in_thread(server.url + path, results, "slow", timeout=15)
    time.sleep(0.4)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    t.join(10)
    assert not t.is_alive(), "client still waiting: the server hung"
    status, body, elapsed = results["slow"]
    assert status == 503 or status == "error", results
    assert server.wait(10) == 0
    assert time.monotonic() - started < 6.0
    out = server.output()
    assert "drain deadline passed: cancelling 1 request(s)" in out
    assert "shutdown handler ran" in out


def test_idle_keep_alive_connections_are_closed_at_once(serve):
    server = serve(SLOW_APP, env={"STONECHAT_KEEP_ALIVE_TIMEOUT": "60", "STONECHAT_DRAIN_TIMEOUT": "10"})
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert s.recv(4096) == b""  # the server closed the idle connection
        assert server.wait(5) == 0
        assert time.monotonic() - started < 2.0  # neither keep-alive (60 s) nor drain (10 s) waited


SHUTDOWN_TROUBLE_APP = """
import asyncio, time
from stonechat import Robyn

app = Robyn(__file__)

@app.shutdown_handler
async def last_one_still_runs():
    print("last handler ran", flush=True)

@app.shutdown_handler
async def raises():
    raise RuntimeError("boom in shutdown")

@app.shutdown_handler
async def hangs_async():
    await asyncio.sleep(60)

@app.shutdown_handler
async def swallows_cancel():
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass

@app.shutdown_handler
def hangs_sync():
    time.sleep(60)

@app.shutdown_handler
def first_one():
    print("first handler ran", flush=True)

app.start(shutdown_handler_timeout=0.5)
"""


def test_failing_and_hanging_shutdown_handlers_do_not_stop_the_others(serve):
    server = serve(SHUTDOWN_TROUBLE_APP)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert time.monotonic() - started < 5.0
    out = server.output()
    assert "first handler ran" in out and "last handler ran" in out, out
    assert out.index("first handler ran") < out.index("last handler ran")
    assert "shutdown handler raises failed" in out
    assert "RuntimeError: boom in shutdown" in out and "Traceback" in out
    for name in ("hangs_async", "swallows_cancel", "hangs_sync"):
        assert f"shutdown handler {name} did not finish within 0.5 s" in out, out
    assert "3 of 6" not in out and "4 of 6 shutdown step(s) failed" in out, out


def test_second_sigint_during_slow_shutdown_forces_exit(serve):
    server = serve("""
        import asyncio
        from stonechat import Robyn
        app = Robyn(__file__)

        @app.shutdown_handler
        async def never_reached():
            print("never reached ran", flush=True)

        @app.shutdown_handler
        async def slow_cleanup():
            print("slow cleanup started", flush=True)
            await asyncio.sleep(30)

        app.start(shutdown_handler_timeout=30)
    """)
    server.signal(signal.SIGINT)
    server.wait_for_output("slow cleanup started")
    started = time.monotonic()
    server.signal(signal.SIGINT)
    code = server.wait(5)
    assert code != 0
    assert time.monotonic() - started < 2.0
    out = server.output()
    assert "never reached ran" not in out
    assert "second stop request (SIGINT)" in out, out
    assert "skipped: never_reached" in out, out


def test_startup_failure_serves_nothing_exits_3_and_runs_shutdown(serve):
    server = serve("""
        import asyncio
        from contextlib import asynccontextmanager
        from stonechat import Robyn
        app = Robyn(__file__)

        @app.startup_handler
        async def opens_something():
            print("opened", flush=True)

        @app.startup_handler
        async def broken_startup():
            await asyncio.sleep(1.0)
            raise ValueError("database unreachable")

        @app.startup_handler
        def never_runs():
            print("never runs", flush=True)

        @app.shutdown_handler
        def cleanup():
            print("cleanup ran", flush=True)

        @app.get("/")
        def index():
            return "served"

        app.start()
    """, wait=False)
    # while startup runs the port may accept into the backlog, but nothing is answered
    answered = None
    deadline = time.monotonic() + 5
    while server.proc.poll() is None and time.monotonic() < deadline:
        try:
            answered = httpx.get(server.url + "/", timeout=3).text
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    assert answered is None, "a request was served although startup failed"
    assert server.wait(10) == 3
    out = server.output()
    assert "startup handler broken_startup failed" in out
    assert "ValueError: database unreachable" in out and "Traceback" in out
    assert "never runs" not in out
    assert "opened" in out and "cleanup ran" in out
    assert not port_open(server.port)


def test_failing_lifespan_exits_the_ones_already_entered(serve):
    server = serve("""
        from contextlib import asynccontextmanager
        from stonechat import Robyn
        app = Robyn(__file__)

        @app.lifespan
        @asynccontextmanager
        async def good():
            print("good entered", flush=True)
            yield
            print("good exited", flush=True)

        @app.lifespan
        @asynccontextmanager
        async def bad():
            raise OSError("no such service")
            yield

        app.start()
    """, wait=False)
    assert server.wait(10) == 3
    out = server.output()
    assert "lifespan bad failed to start" in out and "OSError: no such service" in out
    assert out.index("good entered") < out.index("good exited")


def test_signal_during_hung_startup_stops_promptly(serve):
    server = serve("""
        import asyncio
        from stonechat import Robyn
        app = Robyn(__file__)

        @app.startup_handler
        async def waits_forever():
            print("startup waiting", flush=True)
            await asyncio.sleep(3600)

        @app.shutdown_handler
        def cleanup():
            print("cleanup ran", flush=True)

        app.start()
    """, wait=False)
    server.wait_for_output("startup waiting")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(5) == 0
    assert time.monotonic() - started < 2.0
    out = server.output()
    assert "stopped during startup" in out and "cleanup ran" in out


def test_port_is_free_the_moment_the_process_exits(serve):
    server = serve(SLOW_APP)
    # leave connections behind in TIME_WAIT on the server side
    for _ in range(3):
        with httpx.Client() as client:
            assert client.get(server.url + "/").text == "ok"
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.recv(4096)
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 0
    again = serve(SLOW_APP, port=server.port)  # wait_ready raises if it could not bind
    assert httpx.get(again.url + "/").text == "ok"
    again.signal(signal.SIGTERM)
    assert again.wait(10) == 0


def test_taken_port_is_a_clear_error_not_a_prompt(serve):
    first = serve(SLOW_APP)
    second = serve(SLOW_APP, port=first.port, wait=False)
    assert second.wait(10) == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.output()
    assert httpx.get(first.url + "/").text == "ok"


@pytest.mark.parametrize("args", [[], ["--processes", "2"]])
def test_signal_as_soon_as_the_port_opens_is_a_clean_stop(serve, args):
    # the port is visible from bind() on; a Ctrl+C from then on must mean the stop sequence,
    # never a KeyboardInterrupt traceback (regression: the loop's handlers came later)
    for _ in range(3):
        server = serve(BUG_REPORT_APP, args=args)  # returns the moment the port accepts
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0, server.output()
        out = server.output()
        assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
