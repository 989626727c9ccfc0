"""``--processes N``: the supervisor, proven on real forked workers and real signals.

SIGTERM to the supervisor and SIGINT to the whole process group (a terminal's Ctrl+C) both
run every worker's shutdown handler exactly once and exit 0; a worker that dies is restarted;
a worker whose startup fails stops everything with exit 3 (no restart loop); a killed
supervisor does not leave serving orphans; the port binds again at once; ``--workers``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import port_open

BUG_REPORT_APP = """
import os
from stonechat import Robyn

app = Robyn(__file__)

@app.startup_handler
async def startup_handler():
    print(f"Starting up... {os.getpid()}", flush=True)

@app.shutdown_handler
async def shutdown_handler():
    print(f"Shutting down... {os.getpid()}", flush=True)

@app.get("/pid")
def pid():
    return str(os.getpid())

app.start()
"""



def worker_pids(server) -> set[int]:
    return {int(p) for p in re.findall(r"worker \d started \(pid (\d+)\)", server.output())}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def start_two(serve, app: str = BUG_REPORT_APP, **kwargs):
    server = serve(app, args=["--processes", "2"], **kwargs)
    server.wait_for_output("serving http://127.0.0.1")  # the banner: both workers are ready
    return server


@pytest.mark.parametrize("how", ["SIGTERM to supervisor", "SIGINT to process group"])
def test_bug_report_app_with_two_processes(serve, how):
    server = start_two(serve)
    pids = worker_pids(server)
    assert len(pids) == 2 and server.pid not in pids
    for _ in range(10):
        assert int(httpx.get(server.url + "/pid").text) in pids
    if how == "SIGTERM to supervisor":
        server.signal(signal.SIGTERM)
    else:
        server.signal_group(signal.SIGINT)
    assert server.wait(15) == 0
    out = server.output()
    for pid in pids:  # each worker started once and ran its shutdown handler exactly once
        assert out.count(f"Starting up... {pid}") == 1, out
        assert out.count(f"Shutting down... {pid}") == 1, out
    assert out.count("Shutting down...") == 2
    assert "died unexpectedly" not in out and "restarting" not in out, out
    assert "second stop request" not in out, out  # Ctrl+C is one stop, not two
    assert "all workers stopped" in out
    assert not any(alive(p) for p in pids)
    assert not port_open(server.port)


def test_in_flight_request_drains_across_workers(serve):
    server = start_two(serve, """
        import asyncio
        from stonechat import Robyn
        app = Robyn(__file__)

        @app.get("/slow")
        async def slow():
            await asyncio.sleep(1.5)
            return "finished"

        app.start(drain_timeout=5)
    """)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(httpx.get, server.url + "/slow", timeout=10) for _ in range(2)]
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        server.wait_for_output("draining", count=2)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", server.port)) != 0  # every copy of the socket closed
        assert [f.result().text for f in futures] == ["finished", "finished"]
    assert server.wait(10) == 0


def test_worker_that_dies_is_logged_and_restarted(serve):
    server = start_two(serve)
    victim = sorted(worker_pids(server))[0]
    slot = re.search(rf"worker (\d) started \(pid {victim}\)", server.output()).group(1)
    os.kill(victim, signal.SIGKILL)
    out = server.wait_for_output(f"worker {slot} started", count=2)
    assert f"(pid {victim}) died unexpectedly (killed by SIGKILL)" in out, out
    new_pids = worker_pids(server) - {victim}
    assert len(new_pids) == 2
    server.wait_for_output("Starting up...", count=3)
    seen = {int(httpx.get(server.url + "/pid").text) for _ in range(20)}
    assert victim not in seen and seen <= new_pids
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    out = server.output()
    for pid in new_pids:
        assert out.count(f"Shutting down... {pid}") == 1, out


def test_worker_stopped_alone_is_restarted(serve):
    server = start_two(serve)
    victim = sorted(worker_pids(server))[0]
    os.kill(victim, signal.SIGTERM)  # an operator stopping one worker: it shuts down cleanly
    server.wait_for_output(f"Shutting down... {victim}")
    out = server.wait_for_output("Starting up...", count=3)
    assert f"(pid {victim}) stopped on its own" in out, out
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0


def test_startup_failure_stops_everything_with_exit_3(serve):
    server = serve("""
        import os
        from stonechat import Robyn
        app = Robyn(__file__)

        @app.startup_handler
        def broken():
            print(f"startup attempt {os.getpid()}", flush=True)
            raise RuntimeError("config missing")

        app.start()
    """, args=["--processes", "2"], wait=False)
    assert server.wait(10) == 3
    out = server.output()
    assert "failed to start (exit code 3); stopping all workers" in out
    assert "RuntimeError: config missing" in out
    assert out.count("startup attempt") <= 2, "the supervisor restart-looped"
    assert "restarting in" not in out and "died unexpectedly" not in out
    assert not port_open(server.port)


def test_killed_supervisor_leaves_no_serving_orphans(serve):
    server = start_two(serve)
    pids = worker_pids(server)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(5)
    # the workers see their control channel close and stop gracefully on their own
    out = server.wait_for_output("Shutting down...", count=2, while_alive=False)
    assert out.count("stopping (parent process gone)") == 2
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    assert not port_open(server.port)


def test_restart_on_the_same_port_at_once(serve):
    server = start_two(serve)
    assert httpx.get(server.url + "/pid").status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    again = serve(BUG_REPORT_APP, args=["--processes", "2"], port=server.port)
    again.wait_for_output("serving http://127.0.0.1")
    assert httpx.get(again.url + "/pid").status_code == 200
    again.signal(signal.SIGTERM)
    assert again.wait(15) == 0


WORKERS_APP = """
import threading, time
from stonechat import Robyn
app = Robyn(__file__)
lock = threading.Lock()
running = {"now": 0, "max": 0}

@app.get("/work", threaded=True)
def work():
    with lock:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
    time.sleep(0.3)
    with lock:
        running["now"] -= 1
    return str(running["max"])

app.start()
"""


@pytest.mark.parametrize("args, expected_max", [(["--workers", "2"], 2), ([], 6)])
def test_workers_flag_sizes_the_thread_pool_for_threaded_handlers(serve, args, expected_max):
    server = serve(WORKERS_APP, args=args)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: int(httpx.get(server.url + "/work", timeout=10).text), range(6)))
    assert max(results) == expected_max, results
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0


WEDGED_APP = """
import time
from stonechat import Robyn
app = Robyn(__file__)

@app.startup_handler
def wedged():
    print("wedged", flush=True)
    time.sleep(3600)  # a sync handler that blocks the worker's loop: no signal can be handled

app.start(drain_timeout=0.5, ws_close_timeout=0.5, shutdown_handler_timeout=0.5)
"""


def test_second_signal_kills_wedged_workers(serve):
    server = serve(WEDGED_APP, args=["--processes", "2"])
    server.wait_for_output("wedged", count=2)
    pids = worker_pids(server)
    # the second Ctrl+C forces (a second SIGTERM would not: tests/e2e/test_signals.py)
    server.signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait(10) == 1
    assert time.monotonic() - started < 6.0
    out = server.output()
    assert out.count("did not stop within its deadline") == 2, out
    assert not any(alive(p) for p in pids)


def test_wedged_workers_are_killed_after_the_stop_deadline(serve):
    server = serve(WEDGED_APP, args=["--processes", "2"])
    server.wait_for_output("wedged", count=2)
    pids = worker_pids(server)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    # deadline = drain 0.5 + 1 + ws_close 0.5 + 1 + 0 shutdown steps + 5 = 8 s
    assert server.wait(20) == 1
    assert 7.5 < time.monotonic() - started < 12.0
    assert "did not stop within its deadline" in server.output()
    assert not any(alive(p) for p in pids)
